"""pcmeta's simulated PCM chip beside IBM aihwkit 1.1.0: per-layer MVM fidelity and layer speed (issue #18).

Two tables, printed (markdown) and, with ``--out DIR``, written to ``DIR/fidelity.csv``, ``DIR/speed.csv`` and
``DIR/aihwkit_compare.md``:

1. Fidelity. A 784-256-128-10 MLP and a LeNet-like CNN with fixed seeded weights (N(0, 1/fan_in), biases
   N(0, 0.05)) are converted by both simulators: ``hw.convert(net, PCM, seed=s)`` and aihwkit's
   ``convert_to_analog(net, rpu_config)`` + ``program_analog_weights()``. Each layer gets the same inputs (those it
   sees in the float model on a fixed random batch) and its relative MVM error ``||y - y_ideal|| / ||y_ideal||``
   (digital bias taken out of both) is read 1 s, 1 day and 1 year after programming (``hw.elapse`` /
   ``drift_analog_weights``), averaged over ``--seeds`` programmings. Columns: pcmeta, aihwkit, their ratio,
   and aihwkit with its literal default mapping (``weight_scaling_omega=0``, see below) for information.
2. Speed, one thread, in one run: forward (``torch.no_grad``) of a square layer of width 256/1024/4096 at batch
   1/64/1024 as a bare ``nn.Linear``, as pcmeta's ``hw.PCMLinear`` (``hw.convert(nn.Sequential(nn.Linear(w, w)),
   cfg)``) with ``read_noise="per_time"`` (aihwkit's convention) and ``"per_mvm"`` (pcmeta's default), and as
   aihwkit's torch-tile ``AnalogLinear`` (weights drawn as in 1., inputs uniform in [-1, 1]); each one day after
   programming. The four are timed in turn in each repeat (``time.perf_counter``, warm-up first, median of
   ``--reps``); the table gives ``t_float / t_layer`` (1.0 = as fast as float) and pcmeta's speed relative to
   aihwkit (``t_aihwkit / t_pcmeta``, > 1 = pcmeta faster). ``aihwkit_passes`` = analog passes per tile in one
   forward (> 1: its iterative bound management re-ran the whole batch with halved inputs because some output
   clipped at the ADC bound).

Settings. aihwkit: ``TorchInferenceRPUConfig()`` (its defaults: ``forward.inp_res`` 1/126 on [-1, 1] = 63
levels per sign, ``out_res`` 1/510 over +-12 (``out_bound``), ``out_noise`` 0.06, abs-max noise management per
input vector and tile, iterative bound management, no weight noise; tiles of at most 512 x 512) with
``noise_model=PCMLikeNoiseModel(g_max=25)`` (max|W| of each tile -> 25 uS, per-time-point read noise) and
``GlobalDriftCompensation()``, plus ``mapping.weight_scaling_omega=1.0`` (as aihwkit's own inference presets):
each tile's weights are scaled to max|W| = 1 with a digital output scale, so ``out_noise`` and ``out_bound`` are
in units of full-scale input x max|W|. pcmeta (whose output noise and ADC range are in exactly those units):
``PCMConfig(**AIHWKIT_LIKE, dac_bits=7, tile_rows=512, tile_cols=512, drift_compensation="global")``, i.e.
PCM-like devices, g_max 25 uS, w_max = max|W| per layer, read noise per time point, 7-bit DAC (63 levels per
sign, = aihwkit's inp_res; hardware/bench.py's AIHWKIT_LIKE says 8), 9-bit ADC over +-12, output noise 0.06.
Remaining differences: aihwkit scales inputs and weights per 512-row tile, pcmeta per layer; aihwkit's bound
management re-runs a clipping batch with halved inputs, pcmeta clips (counted as ADC saturations); aihwkit
calibrates drift compensation with one-hot inputs (in x out readings), pcmeta with 16 random +-1 vectors (16 x out
readings: a noisier scale on narrow layers, e.g. ~10 % more error at 1 d for a 16-channel conv; n_calibration=256
brings it to ~5 %); aihwkit also programs the idle device of each pair (target 0) with programming noise.
With aihwkit's literal default ``weight_scaling_omega=0`` the weights are not rescaled, so out_noise 0.06 and
the ADC step 24/510 are in raw weight units: for layers with max|W| ~ 0.2 that is ~5x more output noise and
ADC quantization relative to the signal than above (the last fidelity column).

Setup (aihwkit is not a dependency of pcmeta; a separate venv outside the repository)::

    python3 -m venv /work/aihwkit_venv
    /work/aihwkit_venv/bin/pip install torch==2.13.0
    /work/aihwkit_venv/bin/pip install aihwkit==1.1.0 torch==2.13.0 torchvision==0.28.0 "numpy<2.4"
    /work/aihwkit_venv/bin/pip install -e /work/main --no-deps

(torch and torchvision pinned together: otherwise pip takes torchvision 0.29 and with it torch 2.14 and the
CUDA wheels.) Only aihwkit's pure-torch tile is used. Run from the repository root::

    /work/aihwkit_venv/bin/python examples/aihwkit_compare.py --out runs/aihwkit      # ~5 min
    /work/aihwkit_venv/bin/python examples/aihwkit_compare.py --quick                 # ~30 s
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import pcmeta.hardware as hw  # noqa: E402
from pcmeta.hardware.bench import AIHWKIT_LIKE  # noqa: E402
from pcmeta.hardware.times import TIMES as NAMED_TIMES  # noqa: E402

try:
    import aihwkit
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
except ImportError:
    sys.exit("aihwkit is not installed in this interpreter; see the setup in this script's docstring")

TIMES = {k: NAMED_TIMES[k] for k in ("1s", "1d", "1y")}
PCM = hw.PCMConfig(**{**AIHWKIT_LIKE, "dac_bits": 7}, tile_rows=512, tile_cols=512, drift_compensation="global")


def aihwkit_config(omega: float = 1.0) -> TorchInferenceRPUConfig:
    rc = TorchInferenceRPUConfig()
    rc.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rc.drift_compensation = GlobalDriftCompensation()
    rc.mapping.weight_scaling_omega = omega
    return rc


# --------------------------------------------------------------------------------------------- fidelity
def seeded(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
                m.bias.normal_(0.0, 0.05)
    return net.eval()


def models(quick: bool) -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = seeded(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)))
    out = [("mlp", mlp, torch.rand(256, 784))]
    if not quick:
        lenet = seeded(nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                                     nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 10)))
        out.append(("lenet", lenet, torch.rand(64, 1, 28, 28)))
    return out


def layer_inputs(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Linear/Conv2d layer sees in the float model."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, i[0].detach()))
             for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def layer_errors(sim: nn.Module, net: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative MVM error per layer: the simulated layer vs the float layer, both without their (digital) bias."""
    sims, floats = dict(sim.named_modules()), dict(net.named_modules())
    errs = {}
    with torch.no_grad():
        for name, x in inputs.items():
            f = floats[name]
            y_ideal = f(x)
            bias = f.bias.reshape(-1, *([1] * (y_ideal.ndim - 2)))
            y_ideal, y = y_ideal - bias, sims[name](x) - bias
            errs[name] = float((y - y_ideal).norm() / y_ideal.norm())
    return errs


def fidelity(n_seeds: int, quick: bool) -> list[dict]:
    rows = []
    for model, net, x in models(quick):
        inputs = layer_inputs(net, x)
        errs: dict = {}  # (simulator, time, layer) -> [errors over seeds]
        sat = 0
        for seed in range(n_seeds):
            chip, t_prev = hw.convert(net, PCM, seed=seed), 0.0
            for tn, t in TIMES.items():
                hw.elapse(chip, t - t_prev)
                t_prev = t
                for n, e in layer_errors(chip, net, inputs).items():
                    errs.setdefault(("pcmeta", tn, n), []).append(e)
            sat += sum(r["adc_saturations"] for r in hw.report(chip)["layers"])
            for omega in (1.0, 0.0):
                torch.manual_seed(seed)
                analog = convert_to_analog(net, aihwkit_config(omega)).eval()
                analog.program_analog_weights()
                for tn, t in TIMES.items():
                    analog.drift_analog_weights(t)
                    for n, e in layer_errors(analog, net, inputs).items():
                        errs.setdefault((f"aihwkit_w{omega:g}", tn, n), []).append(e)
        shapes = {n: tuple(m.weight.shape) for n, m in net.named_modules() if n in inputs}
        for tn in TIMES:
            for n in inputs:
                p, a, a0 = (float(np.mean(errs[(s, tn, n)])) for s in ("pcmeta", "aihwkit_w1", "aihwkit_w0"))
                rows.append({"model": model, "layer": n, "weight_shape": "x".join(map(str, shapes[n])), "time": tn,
                             "pcmeta": p, "aihwkit": a, "ratio": p / a, "aihwkit_omega0": a0, "seeds": n_seeds,
                             "pcmeta_adc_saturations": sat})
    return rows


# ------------------------------------------------------------------------------------------------ speed
def count_passes(layer: nn.Module, x: torch.Tensor) -> int:
    """Analog passes (``AnalogMVM._compute_analog_mv`` calls) of one aihwkit forward, all tiles together."""
    orig, calls = AnalogMVM.__dict__["_compute_analog_mv"], [0]

    def counting(cls, *a, **k):
        calls[0] += 1
        return orig.__func__(cls, *a, **k)

    AnalogMVM._compute_analog_mv = classmethod(counting)
    try:
        with torch.no_grad():
            layer(x)
    finally:
        AnalogMVM._compute_analog_mv = orig
    return calls[0]


def speed(widths, batches, reps: int) -> list[dict]:
    rows = []
    for w in widths:
        torch.manual_seed(0)
        lin = seeded(nn.Sequential(nn.Linear(w, w)))
        layers = {"float": lin}
        for mode in ("per_time", "per_mvm"):
            layers[mode] = hw.convert(lin, PCM.replace(read_noise=mode), seed=0)
            hw.elapse(layers[mode], NAMED_TIMES["1d"])
        torch.manual_seed(0)
        layers["aihwkit"] = convert_to_analog(lin, aihwkit_config()).eval()
        layers["aihwkit"].program_analog_weights()
        layers["aihwkit"].drift_analog_weights(NAMED_TIMES["1d"])
        n_tiles = sum(1 for _ in layers["aihwkit"].analog_tiles())
        for b in batches:
            x = torch.rand(b, w, generator=torch.Generator().manual_seed(b)) * 2 - 1
            with torch.no_grad():
                for f in layers.values():  # warm-up (per-time conductance caches, noise buffers)
                    f(x)
                t0 = time.perf_counter()
                lin(x)
                inner = int(np.clip(0.01 / max(time.perf_counter() - t0, 1e-7), 1, 200))  # >= ~10 ms of float
                times: dict = {k: [] for k in layers}
                for _ in range(reps):
                    for k, f in layers.items():  # interleaved: the machine's noise hits all alike
                        t0 = time.perf_counter()
                        for _ in range(inner):
                            f(x)
                        times[k].append((time.perf_counter() - t0) / inner)
            med = {k: float(np.median(v)) for k, v in times.items()}
            rows.append({"width": w, "batch": b, "float_ms": med["float"] * 1e3,
                         "pcmeta_per_time": med["float"] / med["per_time"],
                         "pcmeta_per_mvm": med["float"] / med["per_mvm"],
                         "aihwkit": med["float"] / med["aihwkit"],
                         "pcmeta_per_time_vs_aihwkit": med["aihwkit"] / med["per_time"],
                         "pcmeta_per_mvm_vs_aihwkit": med["aihwkit"] / med["per_mvm"],
                         "aihwkit_passes": count_passes(layers["aihwkit"], x) / n_tiles,
                         "reps": reps, "inner": inner})
        del layers
    return rows


# ----------------------------------------------------------------------------------------------- output
def markdown(rows: list[dict], cols: list[str], fmt: dict) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="directory for fidelity.csv, speed.csv and aihwkit_compare.md")
    ap.add_argument("--quick", action="store_true", help="MLP only, 3 seeds; widths 256/1024, batches 1/64, 3 reps")
    ap.add_argument("--seeds", type=int, help="programmings per fidelity figure (default 10; --quick 3)")
    ap.add_argument("--reps", type=int, help="timing repeats, median taken (default 7; --quick 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (3 if args.quick else 10)
    reps = args.reps or (3 if args.quick else 7)
    widths, batches = ((256, 1024), (1, 64)) if args.quick else ((256, 1024, 4096), (1, 64, 1024))

    head = (f"pcmeta vs aihwkit {aihwkit.__version__} (torch {torch.__version__}, one thread)\n"
            f"pcmeta: {PCM}\naihwkit: TorchInferenceRPUConfig() + PCMLikeNoiseModel(g_max=25) + "
            "GlobalDriftCompensation() + mapping.weight_scaling_omega=1.0")
    print(head, flush=True)
    t0 = time.perf_counter()
    fid = fidelity(seeds, args.quick)
    fid_md = markdown(fid, ["model", "layer", "weight_shape", "time", "pcmeta", "aihwkit", "ratio", "aihwkit_omega0"],
                      {c: "{:.4f}" for c in ("pcmeta", "aihwkit", "aihwkit_omega0")} | {"ratio": "{:.2f}"})
    sats = ", ".join(f"{m} {n}" for m, n in {r["model"]: r["pcmeta_adc_saturations"] for r in fid}.items())
    worst = max(fid, key=lambda r: max(r["ratio"], 1 / r["ratio"]))
    fid_txt = (f"\n## Fidelity: relative MVM error per layer, mean of {seeds} programmings "
               f"({time.perf_counter() - t0:.0f} s)\n\n{fid_md}\n\nratio = pcmeta / aihwkit (target within 1.3x); "
               f"furthest from 1: {worst['model']} layer {worst['layer']} at {worst['time']}: {worst['ratio']:.2f}. "
               "aihwkit_omega0 = aihwkit with its literal default weight_scaling_omega=0. pcmeta ADC saturations "
               f"(all layers, seeds, times): {sats}.")
    print(fid_txt, flush=True)
    t0 = time.perf_counter()
    spd = speed(widths, batches, reps)
    spd_md = markdown(spd, ["width", "batch", "float_ms", "pcmeta_per_time", "pcmeta_per_mvm", "aihwkit",
                            "pcmeta_per_time_vs_aihwkit", "pcmeta_per_mvm_vs_aihwkit", "aihwkit_passes"],
                      {"float_ms": "{:.3f}", "aihwkit_passes": "{:.2f}"}
                      | {c: "{:.3f}" for c in ("pcmeta_per_time", "pcmeta_per_mvm", "aihwkit")}
                      | {c: "{:.2f}" for c in ("pcmeta_per_time_vs_aihwkit", "pcmeta_per_mvm_vs_aihwkit")})
    spd_txt = (f"\n## Speed: t(nn.Linear) / t(layer), one thread, median of {reps} interleaved repeats "
               f"({time.perf_counter() - t0:.0f} s)\n\n{spd_md}\n\n*_vs_aihwkit = t(aihwkit) / t(pcmeta) "
               "(> 1: pcmeta faster); aihwkit_passes = analog passes per tile per forward (bound management).")
    print(spd_txt, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, rows in (("fidelity.csv", fid), ("speed.csv", spd)):
            with open(os.path.join(args.out, name), "w", newline="") as fh:
                wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
                wr.writeheader()
                wr.writerows(rows)
        with open(os.path.join(args.out, "aihwkit_compare.md"), "w") as fh:
            fh.write(f"# pcmeta vs aihwkit\n\n```\n{head}\n```\n{fid_txt}\n{spd_txt}\n")
        print(f"\nwrote {args.out}/fidelity.csv, speed.csv, aihwkit_compare.md")


if __name__ == "__main__":
    main()
