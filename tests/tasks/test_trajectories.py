"""Tests of pcmeta.tasks.trajectories: the target family, kinematics, clock and coordinate codes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.tasks import trajectories as tr


def test_shapes_and_determinism():
    a = tr.sample_targets(7, "scorbot", rng=3)
    b = tr.sample_targets(7, "scorbot", rng=np.random.default_rng(3))
    assert a.omega.shape == (7, 249, 2) and a.q.shape == (7, 249, 2) and a.xyz.shape == (7, 249, 3)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    c = tr.sample_targets(7, "scorbot", rng=4)
    assert not np.allclose(a.xyz, c.xyz)


def test_torch_backend_matches_numpy():
    a = tr.sample_targets(5, "scorbot", rng=11)
    t = tr.sample_targets(5, "scorbot", rng=11, backend="torch", dtype=torch.float64)
    assert isinstance(t.xyz, torch.Tensor) and t.xyz.dtype == torch.float64
    np.testing.assert_allclose(t.xyz.numpy(), a.xyz, atol=1e-12)
    t32 = tr.sample_targets(5, "scorbot", rng=11, backend="torch")
    assert t32.omega.dtype == torch.float32


def _smooth_reference(raw_1d: np.ndarray, L: int = 120) -> np.ndarray:
    # Independent formulation: np.convolve with the flipped window = cross-correlation.
    n = np.arange(L)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / L)
    w /= w.sum()
    T = len(raw_1d)
    pad = np.concatenate([np.zeros(L - 1), raw_1d, raw_1d[::-1][: L - 1]])
    out = np.convolve(pad, w[::-1], mode="valid")
    return out[L // 2: L // 2 + T]


def test_smoothing_matches_explicit_convolution():
    rng = np.random.default_rng(0)
    raw = np.cumsum(rng.normal(size=(3, 249, 2)), axis=1)
    got = tr.smooth_velocities(raw)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(got[i, :, j], _smooth_reference(raw[i, :, j]), atol=1e-12)
    # periodic window: first tap 0, not symmetric about its centre
    w = tr.hann_periodic()
    assert w[0] == 0.0 and abs(w.sum() - 1) < 1e-12 and w[1] == pytest.approx(w[-1])


def test_family_statistics_and_limits():
    t = tr.sample_targets(400, "scorbot", rng=1)
    assert np.abs(t.omega).max() <= np.pi
    lim = np.deg2rad([130.0, 70.0])
    assert (np.abs(t.q) <= lim + 1e-12).all()
    touch = (np.abs(t.q) >= lim - 1e-9).any(axis=(1, 2)).mean()
    assert 0.3 < touch < 0.7  # SPEC: about half of the targets touch a joint limit
    z_high = (t.xyz[..., 2] >= 1.0).any(axis=1).mean()
    assert 0.15 < z_high < 0.4  # SPEC: about 28 %
    # the kinematics convention: the path is start + 0.01 cumsum(omega_path), and omega where unclipped
    np.testing.assert_allclose(tr.angles_from_velocities(t.omega_path, t.start), t.q, atol=1e-12)
    free = (np.abs(t.q) < lim - 1e-9).all(axis=(1, 2))
    np.testing.assert_allclose(t.omega_path[free], t.omega[free], atol=1e-9)
    np.testing.assert_allclose(t.q[:, 0], t.start + 0.01 * t.omega[:, 0], atol=1e-12)


def test_planar_start_and_no_clipping():
    t = tr.sample_targets(50, "planar2", rng=2)
    np.testing.assert_allclose(t.q, tr.angles_from_velocities(t.omega, [0.0, np.pi / 2]), atol=1e-12)
    assert np.all(t.xyz[..., 2] == 0)
    np.testing.assert_allclose(tr.forward_kinematics(np.array([0.0, np.pi / 2]), "planar2"), [0.5, 0.5, 0.0],
                               atol=1e-12)


def test_forward_kinematics_known_points_and_torch():
    np.testing.assert_allclose(tr.forward_kinematics(np.zeros(2)), [0.92, -0.033, 0.3585], atol=1e-12)
    q = np.array([np.pi / 2, np.pi / 2])
    np.testing.assert_allclose(tr.forward_kinematics(q), [-0.033, -0.05, 0.3585 + 0.87], atol=1e-12)
    rng = np.random.default_rng(0)
    qs = rng.uniform(-2, 2, size=(100, 2))
    for robot in ("scorbot", "planar2"):
        qt = torch.tensor(qs, requires_grad=True)
        xt = tr.forward_kinematics(qt, robot)
        np.testing.assert_allclose(xt.detach().numpy(), tr.forward_kinematics(qs, robot), atol=1e-12)
        xt.sum().backward()
        assert qt.grad is not None and torch.isfinite(qt.grad).all() and qt.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        tr.forward_kinematics(np.zeros(3))
    with pytest.raises(ValueError, match="robot"):
        tr.forward_kinematics(np.zeros(2), "ur5")


def test_clock():
    c = tr.clock_input()
    assert c.shape == (249, 5) and c.dtype == np.float32
    for k in range(5):
        np.testing.assert_array_equal(np.nonzero(c[:, k])[0], 50 * k + np.arange(0, 50, 10))


def test_paper_code_lsb_first_and_wraparound():
    # x = 0 -> 32768 = bit 15 only; y = -1 + 3/32768 -> 3 = bits 0, 1; z = 1.25 -> 73728 = 2**16 + 8192:
    # bit 16 dropped, so only bit 13 remains (wrap-around, as the released LSG was trained on).
    xyz = np.array([0.0, -1.0 + 3 / 32768, 1.25])
    code = tr.encode_coordinates(xyz)
    assert code.shape == (48,)
    assert np.nonzero(code[:16])[0].tolist() == [15]
    assert np.nonzero(code[16:32])[0].tolist() == [0, 1]
    assert np.nonzero(code[32:])[0].tolist() == [13]
    np.testing.assert_array_equal(tr.encode_coordinates(np.array([0.0, 0.0, 1.25])),
                                  tr.encode_coordinates(np.array([0.0, 0.0, -0.75])))
    t = tr.sample_targets(4, rng=0)
    np.testing.assert_array_equal(tr.encode_coordinates(torch.tensor(t.xyz)).numpy(), tr.encode_coordinates(t.xyz))
    x = tr.lsg_input(t.xyz)
    assert x.shape == (4, 249, 53)
    np.testing.assert_array_equal(x[0, :, :5], tr.clock_input())


def test_clean_code_roundtrip_and_range():
    t = tr.sample_targets(10, rng=5)
    for gray in (True, False):
        code = tr.encode_coordinates_clean(t.xyz, gray=gray)
        back = tr.decode_coordinates_clean(code, gray=gray)
        assert np.all(back <= t.xyz + 1e-12) and np.all(t.xyz - back < 3.0 / 2**16)
    # Gray code: one line changes between neighbouring bins
    a = tr.encode_coordinates_clean(np.array([0.1, 0.2, 0.3]))
    b = tr.encode_coordinates_clean(np.array([0.1 + 3.0 / 2**16, 0.2, 0.3]))
    assert np.abs(a - b).sum() == 1
    with pytest.raises(ValueError, match="lie in"):
        tr.encode_coordinates_clean(np.array([0.0, 0.0, 1.6]))
