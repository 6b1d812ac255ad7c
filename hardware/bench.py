"""The measurements of ``pcmeta bench pcm`` (printed by :mod:`pcmeta.demos.cli_hardware`): MVM error of a PCM
crossbar over time, and matmul throughput.

(a) Relative MVM error ``||y - y_ideal|| / ||y_ideal||`` of a 256 x 256 layer with Gaussian weights clipped
at 2.5 sigma and inputs uniform in [-1, 1], at 1 s, 1 h, 1 day, 1 month and 1 year after programming, with
and without global drift compensation. Settings matched to IBM aihwkit's torch inference tile
(``InferenceRPUConfig`` defaults with ``PCMLikeNoiseModel`` and ``GlobalDriftCompensation``): weights mapped
with max|W| -> g_max = 25 uS, read noise drawn once per time point (``read_noise="per_time"``), 8-bit DAC
(aihwkit inp_res 1/126), 9-bit ADC over +-12 (out_res 1/510, out_bound 12), output noise 0.06.
Averaged over independent programmings (seeds).

(b) Throughput of ``PCMSubstrate`` matmul (batch 1024, 256 x 256, every effect on, per-MVM read noise,
global drift compensation, one day after programming) against a bare ``torch`` matmul of the same shape,
timed in turn in the same run, one thread each: the default eager pipeline and ``PCMConfig(compile=True)``
(one fused ``torch.compile`` graph with counter-based noise; same physics, same statistics).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .pcm import PCMConfig, PCMSubstrate
from .times import TIMES as NAMED_TIMES

TIMES = {k: NAMED_TIMES[k] for k in ("1s", "1h", "1d", "1mo", "1y")}

AIHWKIT_LIKE = dict(read_noise="per_time", dac_bits=8, adc_bits=9, adc_bound=12.0, out_noise=0.06)


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
