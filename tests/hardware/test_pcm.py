"""The substrates of pcmeta.hardware: device statistics, ideal equality, tiles, updates, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pcmeta.hardware import PCMConfig, PCMSubstrate, SoftwareSubstrate, stochastic_quantize
from pcmeta.hardware.devices import PCMLikeDevice

DEV = PCMLikeDevice()
N = 400 * 256  # >= 1e5 devices per statistic


def uniform_array(g: float, cfg: PCMConfig, shape=(400, 256), name="w"):
    """An array whose weights all map to normalised conductance g (fixed w_max = 1)."""
    sub = PCMSubstrate(cfg.replace(w_max=1.0))
    arr = sub.place(name, np.full(shape, g))
    return sub, arr


# ------------------------------------------------------------------------------ 2. device statistics
@pytest.mark.parametrize("g", [0.1, 0.5, 1.0])
def test_programming_noise_std_matches_polynomial(g):
    cfg = PCMConfig(drift_scale=0, read_noise_scale=0, seed=1)
    _, arr = uniform_array(g, cfg)
    d = arr.devices()["plus"]
    err = d["g_prog_uS"] - d["g_target_uS"]
    expected = max(-1.1731 * g**2 + 1.9650 * g + 0.2635, 0.0)
    assert d["g_prog_uS"].size >= 1e5
    assert abs(err.std() / expected - 1) < 0.03
    assert abs(err.mean()) < 3 * expected / math.sqrt(err.size)  # unbiased (no clipping at these g)


@pytest.mark.parametrize("g", [0.1, 0.5, 1.0])
def test_drift_exponent_statistics(g):
    _, arr = uniform_array(g, PCMConfig(seed=2))
    nu = arr.devices()["plus"]["nu"].ravel()
    mu = float(np.clip(-0.0155 * math.log(g) + 0.0244, 0.049, 0.1))
    sd = float(np.clip(-0.0125 * math.log(g) - 0.0059, 0.008, 0.045))
    assert abs(nu.mean() / mu - 1) < 0.03
    assert abs(nu.std() / sd - 1) < 0.03


def test_mean_drift_after_one_day_matches_expectation():
    g = 0.8
    sub, arr = uniform_array(g, PCMConfig(prog_noise_scale=0, read_noise_scale=0, seed=3))
    sub.elapse(86400.0)
    d = arr.devices()["plus"]
    ratio = (d["g_now_uS"] / d["g_prog_uS"]).mean()
    mu = float(np.clip(-0.0155 * math.log(g) + 0.0244, 0.049, 0.1))
    sd = float(np.clip(-0.0125 * math.log(g) - 0.0059, 0.008, 0.045))
    L = math.log((86400.0 + 20.0) / 20.0)
    expected = math.exp(-mu * L + 0.5 * (sd * L) ** 2)  # E[exp(-nu L)], nu ~ N(mu, sd)
    assert abs(ratio / expected - 1) < 0.02
    # and the substrate's matmul sees the same drift (no compensation)
    y = arr.matmul(np.eye(400)[:4]).mean() / (g * 1.0)
    assert abs(y / ratio - 1) < 0.02


@pytest.mark.parametrize("t", [1.0, 86400.0])
def test_read_noise_std_per_time(t):
    g = 0.5
    cfg = PCMConfig(prog_noise_scale=0, drift_scale=0, read_noise="per_time", seed=4)
    sub, arr = uniform_array(g, cfg)
    sub.elapse(t)
    w = arr.read()  # G+ - G-, G- = 0 exactly here (target 0, no programming noise)
    expected = g * min(0.0088 / g**0.65, 0.2) * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    assert abs((w - g).std() / expected - 1) < 0.05


def test_read_noise_std_per_mvm():
    """Per-MVM read noise: a one-hot input reads one device per column, fresh on every MVM."""
    g = 0.5
    cfg = PCMConfig.ideal(read_noise_scale=1.0, seed=5, w_max=1.0)
    sub = PCMSubstrate(cfg)
    arr = sub.place("w", np.full((8, 256), g))
    x = np.zeros((400, 8))
    x[:, 3] = 1.0
    y = arr.matmul(x)
    expected = g * min(0.0088 / g**0.65, 0.2) * math.sqrt(math.log((20.0 + 250e-9) / (2 * 250e-9)))
    assert y.size >= 1e5
    assert abs((y - g).std() / expected - 1) < 0.05
    # fresh draws: two MVMs of the same input differ
    assert not np.allclose(arr.matmul(x[:1]), arr.matmul(x[:1]))


def test_hermes_device_model_runs_and_differs():
    sub = PCMSubstrate(PCMConfig.hermes(seed=0))
    assert sub.config.g_max_uS == 20.7 and sub.config.t0_s == 300.0
    W = np.random.default_rng(0).normal(size=(64, 32))
    arr = sub.place("w", W)
    x = np.random.default_rng(1).uniform(-1, 1, size=(16, 64))
    err = np.linalg.norm(arr.matmul(x) - x @ W) / np.linalg.norm(x @ W)
    assert 0.001 < err < 0.5


# ----------------------------------------------------------------------------------- 3. ideal limits
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(9, 56), (504, 56), (300, 700)])
def test_ideal_pcm_equals_matmul(shape, dtype):
    rng = np.random.default_rng(0)
    W = rng.normal(size=shape)
    x = rng.uniform(-2, 2, size=(3, 5, shape[0])).astype(dtype)
    sub = PCMSubstrate(PCMConfig.ideal())
    arr = sub.place("w", W)
    sub.elapse(3.0e7)  # drift off: time changes nothing
    y = arr.matmul(x)
    assert y.shape == (3, 5, shape[1]) and y.dtype == dtype
    ref = x.astype(np.float64) @ W
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5
    yt = arr.matmul(torch.from_numpy(x))
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.from_numpy(x).dtype
    assert np.linalg.norm(yt.numpy() - ref) / np.linalg.norm(ref) < 1e-5
    assert np.allclose(arr.read(), W)


def test_software_4bit_levels_and_unbiased():
    sub = SoftwareSubstrate(bits=4, seed=0)
    w = np.linspace(-1.2, 1.2, 4001).reshape(1, -1)
    q = sub.place("q", w).read()
    levels = np.unique(q)
    assert np.allclose(levels, np.arange(-8, 8) / 8.0)
    assert len(levels) == 16
    # unbiased inside the range: mean of many stochastic roundings equals the value
    vals = torch.tensor([-0.93, -0.3, 0.0, 0.06, 0.41, 0.8])
    reps = vals.repeat(50000, 1)
    qs = stochastic_quantize(reps, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(qs.mean(0), vals, atol=4 * 0.0625 / math.sqrt(50000) + 1e-6)
    # outside the range it saturates at -1 and 0.875
    assert float(stochastic_quantize(torch.tensor([5.0]), 4)) == 0.875
    assert float(stochastic_quantize(torch.tensor([-5.0]), 4)) == -1.0


def test_software_substrate_is_differentiable_and_updates_keep_graph():
    W = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 6, dtype=torch.float64)
    sub = SoftwareSubstrate()
    arr = sub.place("w", W)
    arr.update(-0.1 * W)  # an inner-loop style step, differentiable
    loss = arr.matmul(x).sum()
    loss.backward()
    assert torch.allclose(W.grad, 0.9 * x.sum(0)[:, None].expand(6, 3))
    # 4-bit: straight-through gradient
    W2 = torch.randn(6, 3, requires_grad=True)
    q = SoftwareSubstrate(bits=4).transform(W2)
    q.sum().backward()
    assert torch.equal(W2.grad, torch.ones_like(W2))


def test_pcm_straight_through_gradient():
    W = torch.randn(20, 4)
    x = torch.randn(5, 20, requires_grad=True)
    arr = PCMSubstrate(PCMConfig(weight_bits=4, seed=0)).place("w", W)
    y = arr.matmul(x)
    y.sum().backward()
    assert torch.allclose(x.grad, W.sum(1).expand(5, 20).to(x.grad.dtype), atol=1e-6)
    # the forward pass is the noisy chip, not the ideal product
    assert not torch.allclose(y.detach(), x.detach() @ W, atol=1e-3)


# ---------------------------------------------------------------------------------------- 4. tiles
def test_tiles_and_report():
    sub = PCMSubstrate(PCMConfig(seed=0))
    a = sub.place("conv2", np.random.default_rng(0).normal(size=(504, 56)))
    b = sub.place("big", np.random.default_rng(1).normal(size=(1000, 1000)))
    assert a.tile_grid == (2, 1)
    assert b.tile_grid == (4, 4)
    a.matmul(np.ones((7, 504)))
    rep = sub.report()
    assert rep["arrays"]["conv2"]["tiles"] == 2
    assert rep["arrays"]["big"]["tiles"] == 16
    assert rep["tiles"] == 18
    assert rep["arrays"]["conv2"]["mvms"] == 7 and rep["macs"] == 7 * 504 * 56
    assert rep["arrays"]["conv2"]["tile_mvms"] == 14
    assert rep["programming_events"] > 0
    assert rep["energy_J"]["total"] > 0 and rep["latency_s"]["total"] > 0
    json.dumps(rep)  # serialisable


def test_partial_sums_of_row_tiles_are_added_digitally():
    """With ADC per tile, a 2-tile layer saturates per tile, not on the full sum."""
    W = np.ones((512, 1)) * 0.5
    x = np.ones((1, 512))
    cfg = PCMConfig.ideal(adc_bits=8, adc_bound=200.0, w_max=1.0)
    y = PCMSubstrate(cfg).place("w", W).matmul(x)
    # each 256-row tile gives 128 < 200; the digital sum 256 exceeds the per-tile range but is exact
    assert abs(float(y[0, 0]) - 256.0) < 2.0


@pytest.mark.parametrize("dac_bits", [None, 8])
def test_adc_clips_to_its_range_and_counts_saturations(dac_bits):
    """An output beyond the ADC's range reads as the range's bound, adc_bound * w_max * max|x| (full-scale input
    times g_max in weight units), and is counted in adc_saturations; outputs inside it are converted, not clipped."""
    W = np.zeros((8, 3))
    W[:, 0], W[:, 1], W[:, 2] = 1.0, 0.1, -1.0     # column sums 8, 0.8, -8 for all-ones input
    cfg = PCMConfig.ideal(adc_bits=8, adc_bound=2.0, dac_bits=dac_bits, w_max=1.0)
    arr = PCMSubstrate(cfg).place("w", W)
    x = np.array([[1.0] * 8, [-0.5] * 8])
    y = arr.matmul(x)
    bound = 2.0 * 1.0 * np.abs(x).max(axis=1)  # adc_bound * w_max * max|x| per sample
    assert y[:, 0] == pytest.approx(bound * [1, -1], rel=1e-12)
    assert y[:, 2] == pytest.approx(bound * [-1, 1], rel=1e-12)
    assert y[:, 1] == pytest.approx(x.sum(1) * 0.1, abs=bound.max() / 127)  # in range: one ADC step at most
    assert arr.adc_saturations == 4 and arr.substrate.report()["adc_saturations"] == 4


# ------------------------------------------------------------------------------------- 6. update()
def test_update_under_half_step_changes_nothing():
    sub = PCMSubstrate(PCMConfig(update_rounding="nearest", w_max=1.0, seed=0))
    arr = sub.place("w", np.random.default_rng(0).uniform(-0.9, 0.9, size=(300, 40)))
    before = arr.devices()
    ev = arr.programming_events
    arr.update(np.full((300, 40), 0.49 / 16))
    assert arr.programming_events == ev
    after = arr.devices()
    for side in ("plus", "minus"):
        assert np.array_equal(before[side]["g_prog_uS"], after[side]["g_prog_uS"])


def test_update_reprograms_only_changed_devices_and_keeps_drift_clocks():
    sub = PCMSubstrate(PCMConfig(w_max=1.0, seed=0))
    W = np.random.default_rng(0).uniform(0.1, 0.9, size=(200, 50))  # all on G+
    arr = sub.place("w", W)
    sub.elapse(3600.0)
    before = arr.devices()["plus"]
    dW = np.zeros_like(W)
    idx = (np.arange(0, 200, 7), np.arange(0, 200, 7) % 50)
    dW[idx] = 2.0 / 16  # two grid steps: changed for sure
    ev = arr.programming_events
    arr.update(dW)
    after = arr.devices()["plus"]
    changed = after["g_prog_uS"] != before["g_prog_uS"]
    assert changed.sum() == len(idx[0]) == arr.programming_events - ev
    assert np.all(changed[idx])
    assert np.all(after["t_prog_s"][idx] == 3600.0)
    untouched = ~changed
    assert np.all(after["t_prog_s"][untouched] == 0.0)
    assert np.array_equal(after["nu"][untouched], before["nu"][untouched])
    # re-programmed from the drifted value: new target = G(1 h)/g_max + 2/16
    assert np.allclose(after["g_target_uS"][idx], np.minimum(before["g_now_uS"][idx] + 25.0 * 2 / 16, 25.0))
    # untouched devices keep drifting from t = 0; the changed ones restart at 1 h
    sub.elapse(86400.0)
    later = arr.devices()["plus"]
    t_un = 86400.0 + 3600.0
    assert np.allclose(later["g_now_uS"][untouched],
                       after["g_prog_uS"][untouched] * ((t_un + 20) / 20) ** (-after["nu"][untouched]))
    assert np.allclose(later["g_now_uS"][idx], after["g_prog_uS"][idx] * ((86400.0 + 20) / 20) ** (-after["nu"][idx]))


def test_stochastic_update_rounding_is_unbiased():
    sub = PCMSubstrate(PCMConfig.ideal(w_max=1.0, update_grid=1 / 16, seed=0))
    arr = sub.place("w", np.zeros((400, 250)))
    arr.update(np.full((400, 250), 0.3 / 16))
    w = arr.read()
    assert set(np.unique(np.round(w * 16, 9))) <= {0.0, 1.0}
    assert abs(w.mean() - 0.3 / 16) < 4 * (1 / 16) * math.sqrt(0.21 / w.size)


def test_update_with_global_compensation_keeps_scale():
    """After an on-chip update the compensation reference moves with the written dW."""
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.8, 0.8, size=(128, 16))
    sub = PCMSubstrate(PCMConfig(w_max=1.0, drift_compensation="global", seed=0))
    arr = sub.place("w", W)
    sub.elapse(86400.0)
    dW = np.zeros_like(W)
    dW[:, 0] = 0.25
    arr.update(dW)
    sub.elapse(60.0)
    x = rng.uniform(-1, 1, size=(256, 128))
    y = arr.matmul(x)
    ref = x @ (W + dW)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.25
    assert abs(np.sum(np.abs(y)) / np.sum(np.abs(ref)) - 1) < 0.05


# ---------------------------------------------------------------------------------- 7. bad input
def test_bad_input_raises_clear_errors():
    sub = PCMSubstrate(PCMConfig(seed=0))
    arr = sub.place("w", np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        arr.matmul(np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.matmul(np.array([[1.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.matmul(torch.tensor([[1.0, float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.matmul(torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, float("-inf"), 0.0, 0.0]]))
    assert arr.mvms == 0  # rejected inputs are not counted
    with pytest.raises(ValueError, match="NaN or inf"):
        sub.place("bad", np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        sub.place("bad", np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        arr.update(np.ones((3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        sub.elapse(-1.0)
    with pytest.raises(ValueError, match="already placed"):
        sub.place("w", np.ones((2, 2)))
    for bits in (0, 17, 2.5):
        with pytest.raises(ValueError, match="1..16"):
            PCMConfig(weight_bits=bits)
        with pytest.raises(ValueError, match="1..16"):
            SoftwareSubstrate(bits=bits)
    with pytest.raises(ValueError, match="drift_compensation"):
        PCMConfig(drift_compensation="sometimes")
    with pytest.raises(ValueError, match="prog_noise_scale"):
        PCMConfig(prog_noise_scale=-1)


def test_failed_place_and_update_leave_state_unchanged():
    sub = PCMSubstrate(PCMConfig(w_max=1.0, seed=0))
    arr = sub.place("w", np.full((4, 3), 0.5))
    state = sub.generator.get_state()
    with pytest.raises(ValueError, match="exceed the fixed w_max"):
        sub.place("too_big", np.full((2, 2), 3.0))
    assert "too_big" not in sub and torch.equal(sub.generator.get_state(), state)
    before = arr.devices()
    ev = arr.programming_events
    with pytest.raises(ValueError):
        arr.update(np.array([[np.nan, 0, 0]] * 4))
    assert arr.programming_events == ev
    after = arr.devices()
    assert all(np.array_equal(before[s][k], after[s][k]) for s in before for k in before[s])
    sw = SoftwareSubstrate()
    a = sw.place("w", np.ones((2, 2)))
    with pytest.raises(ValueError):
        a.update(np.ones((2, 3)))
    assert np.array_equal(a.read(), np.ones((2, 2)))


def test_same_seed_same_chip():
    W = np.random.default_rng(0).normal(size=(30, 10))
    x = np.random.default_rng(1).normal(size=(5, 30))
    ys = []
    for _ in range(2):
        sub = PCMSubstrate(PCMConfig(weight_bits=4, seed=7))
        arr = sub.place("w", W)
        sub.elapse(100.0)
        ys.append(arr.matmul(x))
    assert np.array_equal(ys[0], ys[1])


# ---------------------------------------------------------------------------------------- 5. bench
def test_bench_pcm_error_grows_with_time_without_compensation():
    from pcmeta.hardware.bench import mvm_error_vs_time

    err = mvm_error_vs_time(n_seeds=1, batch=32)
    none, gdc = err["none"], err["gdc"]
    assert set(none) == {"1s", "1h", "1d", "1mo", "1y"}
    assert none["1s"] < none["1d"] < none["1y"]
    assert gdc["1y"] < none["1y"]
    assert 0.05 < gdc["1s"] < 0.2


def test_brian2_imports_with_the_pinned_numpy():
    """brian2 < 2.10 calls ndarray.ptp (removed in numpy 2.4): the numpy pin keeps it working."""
    import brian2

    brian2.prefs.codegen.target = "numpy"
    G = brian2.NeuronGroup(3, "dv/dt = -v / (10*ms) : 1", method="exact")
    G.v = [1.0, 0.5, 0.25]
    net = brian2.Network(G)
    net.run(1 * brian2.ms)
    assert np.allclose(np.asarray(G.v), np.array([1.0, 0.5, 0.25]) * math.exp(-0.1), rtol=1e-6)


def test_software_bits_keep_full_precision_updates():
    """The 4-bit software model accumulates small updates in full precision and computes with their
    quantization (small steps are not lost to rounding, unlike PCM's programmed devices)."""
    sub = SoftwareSubstrate(bits=4, seed=0)
    arr = sub.place("w", np.zeros((200, 100)))
    for _ in range(10):
        arr.update(np.full((200, 100), 0.01))
    w = arr.read()
    assert set(np.unique(w)) <= {0.0, 0.125}
    assert abs(w.mean() - 0.1) < 0.005  # stochastic rounding of the accumulated 0.1


def test_ideal_config_programs_updates_exactly():
    sub = PCMSubstrate(PCMConfig.ideal(w_max=1.0))
    arr = sub.place("w", np.zeros((3, 2)))
    dW = np.array([[0.001, -0.2], [0.0, 0.3], [1e-6, 0.0]])
    arr.update(dW)
    assert np.allclose(arr.read(), dW)
    assert arr.programming_events == 4


@pytest.mark.parametrize("frame", ["device", "compensated"])
def test_compensation_scale_and_compensated_frame_update(frame):
    """With global compensation the effective weights move by scale * (device change): in the device frame
    writing dW / scale moves them by dW; in the compensated frame (the default) writing dW does."""
    rng = np.random.default_rng(1)
    W = rng.uniform(-0.8, 0.8, size=(256, 32))
    sub = PCMSubstrate(PCMConfig.ideal(w_max=1.0, drift_scale=1.0, drift_compensation="global",
                                       update_frame=frame, seed=0))
    arr = sub.place("w", W)
    assert PCMSubstrate(PCMConfig()).place("x", W).compensation_scale() is None
    sub.elapse(86400.0)
    a = float(arr.compensation_scale()[0])
    assert a > 1.2  # one day of drift, compensated
    before = arr.read()
    dW = np.zeros_like(W)
    dW[:, 3] = 0.1
    arr.update(dW / a if frame == "device" else dW)
    moved = arr.read() - before
    assert np.allclose(moved[:, 3], 0.1, rtol=0.05)
    # the global scale is re-measured after the write (fresh devices do not drift yet): others move slightly
    assert np.abs(np.delete(moved, 3, axis=1)).max() < 1e-3


def test_public_names_import_from_their_homes():
    from pcmeta.hardware import PCMArray as A1, PCMConfig as C1, PCMSubstrate as S1
    from pcmeta.hardware.config import PCMConfig as C2
    from pcmeta.hardware.pcm import PCMArray as A2, PCMConfig as C3, PCMSubstrate as S2

    assert A1 is A2 and C1 is C2 is C3 and S1 is S2


@pytest.mark.parametrize("comp", ["global", "per_column"])
def test_transform_compensates_drift_like_the_array(comp):
    """transform() restores the programmed absolute sum (per array or per column), as the chip's
    compensation does with its calibration MVMs."""
    W = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, size=(200, 20)))
    sub = PCMSubstrate(PCMConfig(w_max=1.0, read_noise_scale=0.0, prog_noise_scale=0.0, drift_compensation=comp,
                                 seed=0))
    sub.elapse(86400.0)
    Wq = sub.transform(W)
    none = PCMSubstrate(PCMConfig(w_max=1.0, read_noise_scale=0.0, prog_noise_scale=0.0, seed=0))
    none.elapse(86400.0)
    Wn = none.transform(W)
    assert float(Wn.abs().sum()) < 0.8 * float(W.abs().sum())  # a day of drift without compensation
    dims = None if comp == "global" else 0
    ref = W.abs().sum() if dims is None else W.abs().sum(0)
    got = Wq.abs().sum() if dims is None else Wq.abs().sum(0)
    assert torch.allclose(got, ref, rtol=1e-9)
