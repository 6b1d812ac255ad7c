"""The measurements of ``pcmeta bench pcm`` (printed by :mod:`pcmeta.demos.cli_hardware`): MVM error of a PCM
crossbar over time, and matmul throughput.

(a) Relative MVM error ``||y - y_ideal|| / ||y_ideal||`` of a 256 x 256 layer with Gaussian weights clipped
at 2.5 sigma and inputs uniform in [-1, 1], at 1 s, 1 h, 1 day, 1 month and 1 year after programming, with
and without global drift compensation. Settings matched to IBM aihwkit's torch inference tile
(``InferenceRPUConfig`` defaults with ``PCMLikeNoiseModel`` and ``GlobalDriftCompensation``): weights mapped
with max|W| -> g_max = 25 uS, read noise drawn once per time point (``read_noise="per_time"``), 7-bit DAC
(aihwkit inp_res 1/126 on [-1, 1]: 63 levels per sign), 9-bit ADC over +-12 (out_res 1/510, out_bound 12), output noise 0.06.
Averaged over independent programmings (seeds).

(b) Throughput of ``PCMSubstrate`` matmul (batch 1024, 256 x 256, every effect on, per-MVM read noise,
global drift compensation, one day after programming) against a bare ``torch`` matmul of the same shape,
timed in turn in the same run, one thread each: the default eager pipeline and ``PCMConfig(compile=True)``
(one fused ``torch.compile`` graph with counter-based noise; same physics, same statistics).

(c) Layer speed (:func:`layer_speed_table`): ``PCMArray.matmul`` of a (batch x width) input on a width x width
layer against a bare ``nn.Linear`` of the same shape, one thread, default periphery with global drift
compensation one day after programming, read noise per time point and per MVM, eager (the default) and compiled.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .pcm import PCMConfig, PCMSubstrate
from .times import TIMES as NAMED_TIMES

TIMES = {k: NAMED_TIMES[k] for k in ("1s", "1h", "1d", "1mo", "1y")}

AIHWKIT_LIKE = dict(read_noise="per_time", dac_bits=7, adc_bits=9, adc_bound=12.0, out_noise=0.06)


def mvm_error_vs_time(n_seeds: int = 5, batch: int = 256, size: int = 256, seed: int = 0) -> dict:
    """Mean relative MVM error per time point, for compensation "global" and "none"."""
    out: dict = {"gdc": {}, "none": {}}
    for comp, key in (("global", "gdc"), ("none", "none")):
        errs = {k: [] for k in TIMES}
        for s in range(n_seeds):
            rng = np.random.default_rng(seed * 1000 + s)
            W = np.clip(rng.normal(size=(size, size)), -2.5, 2.5)
            x = rng.uniform(-1.0, 1.0, size=(batch, size))
            y_ideal = x @ W
            sub = PCMSubstrate(PCMConfig(drift_compensation=comp, seed=seed * 1000 + s, **AIHWKIT_LIKE))
            arr = sub.place("layer", W)
            t_prev = 0.0
            for k, t in TIMES.items():
                sub.elapse(t - t_prev)
                t_prev = t
                y = arr.matmul(x)
                errs[k].append(np.linalg.norm(y - y_ideal) / np.linalg.norm(y_ideal))
        out[key] = {k: float(np.mean(v)) for k, v in errs.items()}
    return out


def throughput_ratio(batch: int = 1024, size: int = 256, reps: int = 100, seed: int = 0) -> dict:
    """Median time of a PCM matmul, eager (the default ``PCMConfig``) and compiled (``compile=True``), and of
    a bare torch matmul, the three timed in turn in the same loop; ratios = bare / pcm.

    Returns {"eager_s", "compiled_s", "bare_s", "ratio_eager", "ratio_compiled", "reps", "compile_s" (the
    first compiled call, compilation included), "compile_fallback" (True if torch.compile failed and the
    compiled figure is the eager counter-noise pipeline)}.
    """
    from .periphery import _COMPILED

    g = torch.Generator().manual_seed(seed)
    W = torch.randn(size, size, generator=g).clamp(-2.5, 2.5)
    x = torch.rand(batch, size, generator=g) * 2 - 1
    arrays = {}
    compile_s, fallback = 0.0, False
    for mode in ("eager", "compiled"):
        sub = PCMSubstrate(PCMConfig(weight_bits=4, drift_compensation="global", seed=seed,
                                     compile=mode == "compiled"))
        arr = arrays[mode] = sub.place("layer", W)
        sub.elapse(86400.0)
        t0 = time.perf_counter()
        arr.matmul(x)  # warm-up: the per-time conductance cache (and the compilation)
        if mode == "compiled":
            compile_s = time.perf_counter() - t0
            fallback = bool(_COMPILED.get("broken"))  # compilation failed (warned): the eager pipeline ran
    torch.matmul(x, W)
    times = {"eager": [], "compiled": [], "bare": []}
    for _ in range(reps):
        for mode, fn in (("eager", lambda: arrays["eager"].matmul(x)),
                         ("compiled", lambda: arrays["compiled"].matmul(x)), ("bare", lambda: torch.matmul(x, W))):
            t0 = time.perf_counter()
            fn()
            times[mode].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"eager_s": med["eager"], "compiled_s": med["compiled"], "bare_s": med["bare"],
            "ratio_eager": med["bare"] / med["eager"], "ratio_compiled": med["bare"] / med["compiled"],
            "reps": reps, "compile_s": compile_s, "compile_fallback": fallback}


LAYER_WIDTHS = (256, 1024, 4096)
LAYER_BATCHES = (1, 64, 1024)
QUICK_WIDTHS, QUICK_BATCHES = (256, 1024), (1, 64)
READ_NOISE = ("per_time", "per_mvm")


def _median_times(fns: dict, reps: int) -> dict:
    """Median wall time (s) of each callable, called in turn ``reps`` times (interleaved: drifts of the
    machine's speed hit every contender alike)."""
    times: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _layer_group(W: torch.Tensor, batches, reps: int | None, compiled: bool, seed: int, time_s: float) -> dict:
    """{batch: {"bare": s, "per_time": s, "per_mvm": s}} for one width, eager or compiled contenders."""
    linear = torch.nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        linear.weight.copy_(W.T)
    arrays, workspace = {}, None
    for rn in READ_NOISE:
        sub = PCMSubstrate(PCMConfig(drift_compensation="global", read_noise=rn, compile=compiled, seed=seed))
        sub.workspace = workspace = workspace or sub.workspace  # one set of scratch tensors (memory)
        arrays[rn] = sub.place("layer", W)
        sub.elapse(time_s)
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    with torch.no_grad():
        for batch in batches:
            x = torch.rand(batch, W.shape[0], generator=g) * 2 - 1
            fns = {"bare": lambda: linear(x), **{rn: (lambda a=a: a.matmul(x)) for rn, a in arrays.items()}}
            for fn in fns.values():  # warm-up: the time point's state (and compilation)
                fn()
            out[batch] = _median_times(fns, _reps(W.shape[0], batch, reps))
    return out


def _reps(width: int, batch: int, reps: int | None) -> int:
    """``reps``, or 5 to 200 repetitions: about 4e9 multiply-accumulates of the bare layer."""
    return reps or int(np.clip(4e9 / (width * width * batch), 5, 200))


def layer_speed_table(widths=LAYER_WIDTHS, batches=LAYER_BATCHES, reps: int | None = None, compiled: bool = True,
                      seed: int = 0, time_s: float = 86400.0) -> list[dict]:
    """Speed of a simulated PCM layer against a bare ``nn.Linear`` of the same shape, one thread.

    For each width (a width x width layer, N(0, 1/width) weights) and batch: the median time of
    ``PCMArray.matmul`` (default periphery, ``drift_compensation="global"``, ``time_s`` after programming) with
    ``read_noise="per_time"`` and ``"per_mvm"``, eager (the default) and, with ``compiled``, with
    ``PCMConfig(compile=True)``, and of the bare layer. The contenders of one group (eager or compiled) and the
    bare layer are timed in turn in the same loop, ``reps`` times (default: 5 to 200, fewer for larger layers);
    ratio = bare time / simulated time. Returns one dict per (width, batch): {"width", "batch", "reps", "bare_s",
    "per_time": {"s", "ratio"}, "per_mvm": {...}, and with ``compiled`` "per_time_compiled",
    "per_mvm_compiled"}.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for width in widths:
            W = torch.randn(width, width, generator=torch.Generator().manual_seed(seed)) / np.sqrt(width)
            groups = {"": _layer_group(W, batches, reps, False, seed, time_s)}
            if compiled:
                groups["_compiled"] = _layer_group(W, batches, reps, True, seed, time_s)
            for batch in batches:
                eager = groups[""][batch]
                row = {"width": width, "batch": batch, "bare_s": eager["bare"], "reps": _reps(width, batch, reps)}
                for suffix, group in groups.items():
                    for rn in READ_NOISE:
                        t = group[batch]
                        row[rn + suffix] = {"s": t[rn], "ratio": t["bare"] / t[rn]}
                rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return rows


def device_statistics(n_rows: int = 400, n_cols: int = 256, seed: int = 0) -> dict:
    """Measured / model ratios of the device statistics over n_rows * n_cols devices per figure.

    Programming-noise std at g = 0.1, 0.5, 1.0; drift-exponent mean and std at the same g; mean
    G(1 day)/G_prog against E[((t + t0)/t0)^-nu] = exp(-mu L + (sigma L)^2 / 2) with L = ln((t + t0)/t0);
    read-noise std (per time point, no drift or programming noise) at g = 0.5, 1 day after programming.
    """
    from .devices import PCMLikeDevice, read_noise_time_factor

    dev = PCMLikeDevice()
    out: dict = {"devices_per_figure": n_rows * n_cols}
    for i, g in enumerate((0.1, 0.5, 1.0)):
        gt = torch.tensor([g], dtype=torch.float64)
        sub = PCMSubstrate(PCMConfig(w_max=1.0, read_noise_scale=0.0, seed=seed + i))
        d = sub.place("w", np.full((n_rows, n_cols), g)).devices()["plus"]
        err = d["g_prog_uS"] - d["g_target_uS"]
        out[f"prog_noise_std_ratio_g{g}"] = float(err.std() / dev.prog_noise_std_uS(gt)[0])
        out[f"drift_mu_ratio_g{g}"] = float(d["nu"].mean() / dev.drift_mu(gt)[0])
        out[f"drift_sigma_ratio_g{g}"] = float(d["nu"].std() / dev.drift_sigma(gt)[0])
    g, t = 0.8, 86400.0
    gt = torch.tensor([g], dtype=torch.float64)
    sub = PCMSubstrate(PCMConfig(w_max=1.0, prog_noise_scale=0.0, read_noise_scale=0.0, seed=seed))
    arr = sub.place("w", np.full((n_rows, n_cols), g))
    sub.elapse(t)
    d = arr.devices()["plus"]
    L = np.log((t + 20.0) / 20.0)
    mu, sd = float(dev.drift_mu(gt)[0]), float(dev.drift_sigma(gt)[0])
    out["drift_1d_mean_ratio_g0.8"] = float((d["g_now_uS"] / d["g_prog_uS"]).mean() / np.exp(-mu * L + 0.5 * (sd * L) ** 2))
    g = 0.5
    sub = PCMSubstrate(PCMConfig(w_max=1.0, prog_noise_scale=0.0, drift_scale=0.0, read_noise="per_time", seed=seed))
    arr = sub.place("w", np.full((n_rows, n_cols), g))
    sub.elapse(t)
    expected = g * float(dev.read_q_s(torch.tensor([g]))[0]) * read_noise_time_factor(t, 20.0, 250e-9)
    out["read_noise_std_ratio_g0.5_1d"] = float((arr.read() - g).std() / expected)
    return out
