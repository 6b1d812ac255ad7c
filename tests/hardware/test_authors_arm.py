"""The authors' arm PCM model (pcmeta.hardware.authors_arm): statistics, substrate behaviour, training-time form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcmeta.hardware import (AuthorsArmDevice, AuthorsArmSubstrate, PCMConfig, PCMLikeDevice, PCMSubstrate,
                             Substrate, SynapticArray)
from pcmeta.hardware import authors_arm as A
from pcmeta.hardware.devices import ratio_drift_factor, ratio_read_noise_time_factor, read_noise_time_factor

DEV, PCM = AuthorsArmDevice(), PCMLikeDevice()
W_ABS = torch.tensor([0.0, 1e-9, 1e-7, 1e-3, 0.02, 0.1, 0.25, 0.5, 0.77, 1.0, 1.5, 2.0], dtype=torch.float64)


# ----------------------------------------------------------------------------------------- statistics
def test_drift_and_programming_statistics_are_the_pcmlike_formulas():
    """mu, sigma and sigma_p are PCMLikeDevice's on |w|, bit for bit, and equal the authors' own expressions
    (log of |w| without a floor: at w = 0 mu and sigma sit at their upper clip bounds)."""
    for dtype in (torch.float64, torch.float32):
        w = W_ABS.to(dtype)
        assert torch.equal(DEV.drift_mu(w), PCM.drift_mu(w))
        assert torch.equal(DEV.drift_sigma(w), PCM.drift_sigma(w))
        assert torch.equal(DEV.prog_noise_std_uS(w), PCM.prog_noise_std_uS(w))
        lg = torch.log(w)
        assert torch.equal(DEV.drift_mu(w), torch.clamp(-0.0155 * lg + 0.0244, 0.049, 0.1))
        assert torch.equal(DEV.drift_sigma(w), torch.clamp(-0.0125 * lg - 0.0059, 0.008, 0.045))
        sp = torch.clamp(-1.1731 * w**2 + 1.9650 * w + 0.2635, min=0.0)
        assert torch.allclose(DEV.prog_noise_std_uS(w), sp, rtol=1e-6, atol=0)
    z = torch.zeros(1, dtype=torch.float64)
    assert float(DEV.drift_mu(z)) == 0.1 and float(DEV.drift_sigma(z)) == 0.045


def test_read_noise_uses_q_s_in_uS_and_its_own_time_factor():
    g_uS = W_ABS.clamp(max=1.0) * 25.0
    q_ref = torch.clamp(0.0088 / g_uS**0.65, max=0.2)  # g = 0: inf -> 0.2
    assert torch.equal(DEV.read_q_s(g_uS), q_ref)
    f = math.sqrt(math.log((32.0 + 250e-9) / 250e-9)) * math.sqrt(0.5)
    assert ratio_read_noise_time_factor(32.0, 250e-9) == pytest.approx(f, rel=1e-15)
    assert torch.allclose(DEV.read_noise_std_uS(g_uS, 32.0), g_uS * q_ref * f, rtol=1e-14, atol=0)
    # pcmeta's form differs: absolute time + t0 over 2 t_read, no 1/sqrt(2)
    assert read_noise_time_factor(0.0, 20.0, 250e-9) == pytest.approx(
        math.sqrt(math.log((20.0 + 250e-9) / (2 * 250e-9))))
    # the training-time variance is the substrate's std, squared, in weight units
    w = torch.linspace(-1.2, 1.2, 49, dtype=torch.float64)
    sig = DEV.read_noise_std_uS(w.clamp(-1, 1).abs() * 25.0, 8.0) / 25.0
    assert torch.equal(A.read_var(w, 8.0), sig * sig)
    assert float(A.read_var(torch.zeros(1))) == 0.0


def test_ratio_drift_factor():
    nu = torch.tensor([0.0, 0.05, 0.1], dtype=torch.float64)
    assert torch.equal(ratio_drift_factor(32.0, nu), 32.0 ** (-nu))


def test_read_var_matches_the_substrate_reads():
    """The variance used in training equals the empirical variance of the substrate's reads (weights whose
    noisy reads stay positive)."""
    sub = AuthorsArmSubstrate(seed=0)
    for w0 in (0.05, 0.3, 0.9):
        w = torch.full((100_000,), w0, dtype=torch.float64)
        reads = sub.noisy_read(w)
        assert float(reads.var()) == pytest.approx(float(A.read_var(w)[0]), rel=0.03), w0


# ------------------------------------------------------------------------------------------ substrate
def _placed(seed=0, W=None):
    sub = AuthorsArmSubstrate(seed=seed)
    W = np.array([[0.5, -0.3, 0.0], [2.0, -1.5, 0.02]]) if W is None else W
    return sub, sub.place("w", W)


def test_is_a_substrate_and_places_as_the_authors():
    sub, arr = _placed()
    assert isinstance(sub, Substrate) and isinstance(arr, SynapticArray) and sub.kind == "authors-arm"
    w0 = arr.read()
    assert isinstance(w0, np.ndarray) and w0.shape == (2, 3) and np.all(np.abs(w0) <= 1.0)
    W = np.array([[0.5, -0.3, 0.0], [2.0, -1.5, 0.02]])
    # drift shrinks |w| (plus at most 0.01 of uniform noise); no programming noise at placement
    assert np.all(w0[0, :2] * W[0, :2] > 0) and np.all(np.abs(w0[0, :2]) < np.abs(W[0, :2]) + 0.011)
    assert abs(w0[0, 2]) <= 0.01
    tw = AuthorsArmSubstrate(seed=0).place("w", torch.from_numpy(W))
    assert isinstance(tw.read(), torch.Tensor) and np.array_equal(tw.read().numpy(), w0)
    sub.elapse(3600.0)  # one fixed time point: elapse changes nothing
    assert np.array_equal(arr.read(), w0)


def test_same_seed_same_result():
    rng = np.random.default_rng(0)
    W, x, dW = rng.normal(size=(20, 7)), rng.normal(size=(4, 20)), rng.normal(size=(20, 7)) * 0.1
    outs = []
    for seed in (3, 3, 4):
        sub, arr = _placed(seed, W)
        y = arr.matmul(x)
        arr.update(dW)
        outs.append((arr.read(), y, arr.matmul(x)))
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not np.array_equal(outs[0][0], outs[2][0])


def test_matmul_reads_fresh_noise_and_only_rows_with_input():
    sub, arr = _placed()
    x = np.array([[1.0, 0.0]])
    assert not np.allclose(arr.matmul(x), arr.matmul(x))  # fresh read noise per MVM
    np.testing.assert_array_equal(arr.matmul(np.zeros((3, 2))), np.zeros((3, 3)))
    # rows with a zero input (in every sample) are not read: the draws cover the active rows only
    xs = np.array([[0.0, 0.7], [0.0, -0.2]])
    state = sub.generator.get_state()
    y = arr.matmul(xs)
    sub.generator.set_state(state)
    expected = torch.from_numpy(xs[:, 1:]) @ sub.noisy_read(torch.from_numpy(arr.read()[1:]))
    np.testing.assert_array_equal(y, expected.numpy())
    # batch shape and kinds: (..., in) -> (..., out); torch in, torch out in x's dtype
    assert arr.matmul(np.ones((2, 5, 2))).shape == (2, 5, 3)
    yt = arr.matmul(torch.ones(4, 2, dtype=torch.float32))
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    # the read noise is small against the weights
    big = np.ones((2000, 2))
    assert np.allclose(arr.matmul(big).mean(0), arr.read().sum(0), atol=0.01)


def test_update_rounds_to_nearest_sixteenth_and_reprograms_changed_weights_only():
    rng = np.random.default_rng(1)
    sub, arr = _placed(W=rng.uniform(-0.6, 0.6, size=(40, 30)))
    w0 = arr.read()
    dW = np.zeros((40, 30))
    dW[0] = 0.49 / 16   # under half a step: 0
    dW[1] = 1 / 32      # exactly half: half to even -> 0
    dW[2] = 3 / 32      # 1.5 steps: half to even -> 2/16
    dW[3] = -0.07       # -> -1/16
    dW[4] = 5.0         # far beyond 1: the authors' drift of the UNCLIPPED target lands it at -1
    ev = arr.programming_events
    arr.update(dW)
    w1 = arr.read()
    # unchanged weights stay (up to the float round trip w -> g_max w -> w of the authors' formula: <= 1 ulp)
    kept = np.r_[0:2, 5:40]
    assert np.allclose(w1[kept], w0[kept], rtol=0, atol=2e-16)
    assert not np.any(np.abs(w1[2:5] - w0[2:5]) < 1e-9)
    assert np.all(np.abs(w1) <= 1.0)
    # re-programmed to w + dW_q, then programming noise (~0.01-0.08 in weight units) and drift (shrinks)
    assert abs(np.mean(w1[2] - w0[2]) - 2 / 16) < 0.03
    assert abs(np.mean(w1[3] - w0[3]) + 1 / 16) < 0.03
    assert np.all(w1[4] == -1.0)  # clip(clip(w1) + noise + clip(w1 f) - w1) with w1 > 4: 1 + 1 - w1 < -1
    # programmed devices: each changed weight's device, plus the old device of a weight that changed sign
    targets = np.clip(w0[2:5] + np.array([2 / 16, -1 / 16, 5.0])[:, None], -1, 1)
    flips = int(np.sum(w0[2:5] * targets < 0))
    assert flips > 0
    assert arr.programming_events - ev == 3 * 30 + flips
    assert arr.updates == 1


def test_report_has_the_cost_keys_of_the_pcm_substrate():
    sub, arr = _placed()
    arr.matmul(np.ones((7, 2)))
    rep = sub.report()
    pcm = PCMSubstrate(PCMConfig(seed=0))
    pcm.place("w", np.ones((2, 3)))
    ref = pcm.report()
    assert set(rep) == set(ref)
    assert set(rep["arrays"]["w"]) == set(ref["arrays"]["w"])
    assert rep["substrate"] == "authors-arm" and rep["config"]["t_ratio"] == 32.0
    assert rep["tiles"] == 1 and rep["mvms"] == 7 and rep["macs"] == 7 * 2 * 3
    assert rep["tile_mvms"] == 7 and rep["column_conversions"] == 7 * 3
    assert rep["programming_events"] == 6  # every weight programmed (the zero one gets the uniform noise)
    for k in ("energy_J", "latency_s"):
        assert set(rep[k]) == {"mvm", "programming", "total"} and rep[k]["total"] > 0


def test_bad_input_raises_and_changes_nothing():
    sub, arr = _placed()
    w0 = arr.read()
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        arr.matmul(np.ones((1, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.matmul(np.array([[np.nan, 1.0]]))
    assert arr.mvms == 0
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        arr.update(np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.update(np.full((2, 3), np.inf))
    assert np.array_equal(arr.read(), w0) and arr.updates == 0
    with pytest.raises(ValueError, match="already placed"):
        sub.place("w", np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        sub.place("v", np.ones(3))
    with pytest.raises(ValueError, match="t_ratio"):
        AuthorsArmSubstrate(t_ratio=0.0)
    sub.remove("w")
    assert "w" not in sub


# -------------------------------------------------------------------------------------- training-time
def test_training_functions_are_the_substrate_model_with_straight_through_clips():
    """Same draws, same numbers as the substrate's formulas (for weights within [-2, 2] the straight-through
    clip's forward value is the clip), gradient 32^-nu through the drift."""
    W = torch.linspace(-1.5, 1.5, 60, dtype=torch.float64).reshape(6, 10).requires_grad_(True)
    torch.manual_seed(5)
    w = A.training_weights(W, 3)
    torch.manual_seed(5)
    Wb = W.detach().expand(3, 6, 10)
    u = torch.rand_like(Wb)
    ref = A.programmed(Wb, u, torch.randn_like(Wb), 32.0)
    assert w.shape == (3, 6, 10) and torch.equal(w.detach(), ref)
    w.sum().backward()
    assert float(W.grad.min()) > 0 and float(W.grad.max()) <= 3.0
    # re-programming: rounded to 1/16 (half to even), only changed weights move, straight-through in dW
    dW = torch.zeros(3, 6, 10, dtype=torch.float64)
    dW[:, 0] = 1 / 32
    dW[:, 1] = 0.1
    dW.requires_grad_(True)
    w2 = A.training_reprogram(w.detach(), dW)
    kept = torch.cat([w2[:, :1], w2[:, 2:]], 1).detach() - torch.cat([w[:, :1], w[:, 2:]], 1).detach()
    assert float(kept.abs().max()) <= 2e-16  # unchanged (up to the 1-ulp round trip through g_max)
    assert not torch.equal(w2[:, 1].detach(), w.detach()[:, 1])
    assert float(w2.detach().abs().max()) <= 1.0
    w2.sum().backward()
    assert torch.equal(dW.grad[:, 0], torch.ones_like(dW.grad[:, 0]))
