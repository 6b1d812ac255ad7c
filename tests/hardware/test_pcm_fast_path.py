"""The eager MVM fast path of PCMArray (issue #18): the numbers of the reference pipeline
``periphery.analog_core``, bit for bit, and the substrate contract kept by its caches, scratch tensors and the
skipped checks (a refused input leaves the generator and the array as they were, also at a new time point)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.hardware import PCMConfig, PCMSubstrate
from pcmeta.hardware.bench import layer_speed_table
from pcmeta.hardware.periphery import analog_core

CONFIGS = {
    "default": dict(),
    "global": dict(drift_compensation="global"),
    "per-column-per-time": dict(drift_compensation="per_column", read_noise="per_time"),
    "4bit-ideal-adc": dict(weight_bits=4, adc_bits=None, drift_compensation="global"),
    "no-dac": dict(dac_bits=None, read_noise="per_time"),
    "counter": dict(noise_rng="counter", drift_compensation="global"),
}


def _reference(arr, sub, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """analog_core on the array's conductances with the noise the generator drew from ``state``."""
    plan, alpha, _ = arr._prepare(x.dtype, x.device, True)
    g = torch.Generator()
    g.set_state(state)
    key = noise = None
    if sub.config.noise_source == "counter":
        key = torch.empty((), dtype=torch.int64).random_(generator=g)
    else:
        noise = torch.empty((x.shape[0], plan.n_rt, plan.out_features), dtype=x.dtype).normal_(generator=g)
    y, _, finite = analog_core(x, plan.G, plan.var, noise, key, plan.lv, plan.dac, plan.on2, plan.adc_max,
                               plan.out_unit, alpha)
    assert bool(finite)
    return y


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_path_gives_the_numbers_of_analog_core(name):
    rng = np.random.default_rng(0)
    sub = PCMSubstrate(PCMConfig(seed=3, **CONFIGS[name]))
    arrays = {shape: sub.place(f"w{shape}", np.clip(rng.normal(size=shape), -2.5, 2.5))
              for shape in ((300, 600), (256, 40), (40, 7))}  # row tiles: 2 (padded), 1, 1 (padded)
    sub.elapse(86400.0)
    for (n_in, _), arr in arrays.items():  # interleaved: the arrays share the substrate's scratch tensors
        for batch in (1, 64, 3):
            for dtype in (torch.float32, torch.float64):
                x = torch.from_numpy(rng.uniform(-1, 1, size=(batch, n_in))).to(dtype)
                if batch == 3:
                    x[1] = 0.0  # an all-zero sample (scale 1)
                arr.matmul(x)  # the time point's state is drawn once; then compare one MVM
                state = sub.generator.get_state()
                y = arr.matmul(x)
                assert torch.equal(y, _reference(arr, sub, x, state)), (n_in, batch, dtype)


@pytest.mark.parametrize("cfg", [dict(drift_compensation="global", read_noise="per_time"),
                                 dict(drift_compensation="per_column"), dict()])
def test_refused_input_at_a_new_time_point_leaves_generator_and_cache_unchanged(cfg):
    """NaN and overflow refused at the first MVM after elapse (where the per-time read noise and the
    compensation's calibration MVMs are drawn): the next MVMs are those of a twin that never saw them."""
    W = np.random.default_rng(0).uniform(-1, 1, (20, 6))
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 20))).float()
    twin, sub = PCMSubstrate(PCMConfig(seed=5, **cfg)), PCMSubstrate(PCMConfig(seed=5, **cfg))
    a, b = twin.place("w", W), sub.place("w", W)
    for sub_ in (twin, sub):
        sub_.elapse(3600.0)
    state, cal = sub.generator.get_state(), b.calibration_mvms
    with pytest.raises(ValueError, match="NaN or inf"):
        b.matmul(torch.full((2, 20), float("nan")))
    with pytest.raises(ValueError, match="overflows float32"):
        b.matmul(torch.full((1, 20), 3e38))
    assert torch.equal(sub.generator.get_state(), state) and b.calibration_mvms == cal and b.mvms == 0
    for _ in range(2):
        assert torch.equal(a.matmul(x), b.matmul(x))
    assert torch.equal(twin.generator.get_state(), sub.generator.get_state())


def test_scratch_tensors_work_in_and_out_of_inference_mode():
    """Scratch tensors created in inference mode are written outside it, and the other way round; the mode
    does not change the numbers."""
    W = np.random.default_rng(0).uniform(-1, 1, (300, 20))
    x = torch.rand(5, 300)
    runs = []
    for modes in ((True, False, True), (False, True, False)):
        arr = PCMSubstrate(PCMConfig(seed=1, drift_compensation="global")).place("w", W)
        ys = []
        for inference in modes:
            with torch.inference_mode(inference):
                ys.append(arr.matmul(x).clone())
        runs.append(ys)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_results_do_not_alias_the_scratch_tensors():
    sub = PCMSubstrate(PCMConfig(seed=0))
    arr = sub.place("w", np.random.default_rng(0).uniform(-1, 1, (256, 8)))  # one row tile
    x = torch.rand(1, 256)
    y1 = arr.matmul(x)
    keep = y1.clone()
    arr.matmul(torch.rand(1, 256))
    assert torch.equal(y1, keep)


def test_layer_speed_table_quick_runs_and_reports_ratios():
    rows = layer_speed_table(widths=(64,), batches=(1, 4), reps=3, compiled=False)
    assert {(r["width"], r["batch"]) for r in rows} == {(64, 1), (64, 4)}
    for r in rows:
        assert r["bare_s"] > 0 and r["per_time"]["ratio"] > 0 and r["per_mvm"]["ratio"] > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_counter_noise_in_16_bit_dtypes_is_finite_and_standard_normal(dtype):
    """The counter stream's 24-bit uniforms underflowed in float16 (log(0): every float16 MVM with
    noise_rng="counter" was refused as an overflow); they are computed in float32 now."""
    from pcmeta.hardware.rng import counter_normals

    z = counter_normals(torch.tensor(7), (1 << 18,), dtype)
    assert z.dtype == dtype and bool(torch.isfinite(z).all())
    assert abs(float(z.float().mean())) < 0.01 and abs(float(z.float().std()) - 1) < 0.01
    assert torch.equal(z, counter_normals(torch.tensor(7), (1 << 18,), torch.float32).to(dtype))
    arr = PCMSubstrate(PCMConfig(noise_rng="counter", seed=0)).place("w", np.full((8, 7), 0.5))
    y = arr.matmul(torch.full((4, 8), 0.5, dtype=dtype))  # x @ W = 2 (within the ADC's range)
    assert y.dtype == dtype and bool(torch.isfinite(y).all()) and torch.allclose(y.float(), torch.tensor(2.0), rtol=0.1)
