"""Tests of the spiking network and the e-prop rule (pcmeta.agents.eprop.network, .rule, .losses): dynamics
vs a slow neuron-by-neuron reference, refractoriness, masked self-connections, per-task weights, the update
as a per-synapse sum, the surrogate gradient, read-noise sampling, the threshold gradient, the voltage
regularisation."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop


TINY = eprop.SNNConfig(n_in=3, n_rec=7, n_out=2, n_alif=3, v_th=0.5, tau_a=30.0, beta=0.8)


def _tiny_net(seed: int, T: int = 60):
    g = np.random.default_rng(seed)
    x = (g.random((T, TINY.n_in)) < 0.3).astype(np.float64)
    W_in = g.normal(0.0, 0.8, (TINY.n_in, TINY.n_rec))
    W_rec = g.normal(0.0, 0.5, (TINY.n_rec, TINY.n_rec))
    W_out = g.normal(0.0, 0.5, (TINY.n_rec, TINY.n_out))
    return x, W_in, W_rec, W_out



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_snn_matches_neuron_by_neuron_reference(seed):
    x, W_in, W_rec, W_out = _tiny_net(seed)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    rec = eprop.run_snn(TINY, t(x), t(W_in), t(W_rec), t(W_out), record_psi=True, record_v=True)
    state = {k: np.zeros(TINY.n_rec) for k in ("v", "z", "r", "b")}
    zs, vs, psis, As = [], [], [], []
    for k in range(x.shape[0]):
        state = eprop.reference_step(TINY, state, x[k], W_in, W_rec)
        zs.append(state["z"]), vs.append(state["v"]), psis.append(state["psi"]), As.append(state["A"])
    Z = np.array(zs)
    assert Z.sum() > 10, "the tiny net must spike for the test to mean anything"
    assert np.array_equal(rec.z[0].numpy(), Z)
    np.testing.assert_allclose(rec.v[0].numpy(), np.array(vs), atol=1e-12)
    np.testing.assert_allclose(rec.psi[0].numpy(), np.array(psis), atol=1e-12)
    np.testing.assert_allclose(rec.A[0].numpy(), np.array(As), atol=1e-12)
    # readout: y_t = kappa y_{t-1} + z_t W_out
    y = np.zeros(TINY.n_out)
    ys = []
    for k in range(Z.shape[0]):
        y = TINY.kappa * y + Z[k] @ W_out
        ys.append(y)
    np.testing.assert_allclose(rec.y[0].numpy(), np.array(ys), atol=1e-12)



def test_refractory_period_is_four_silent_steps():
    # one neuron driven hard every step: spikes at t = 0, 5, 10, ... (4 silent steps after each spike)
    cfg = eprop.SNNConfig(n_in=1, n_rec=1, n_out=1, v_th=0.5)
    x = torch.ones(30, 1, dtype=torch.float64)
    rec = eprop.run_snn(cfg, x, torch.full((1, 1), 10.0, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    assert torch.nonzero(rec.z[0, :, 0]).ravel().tolist() == list(range(0, 30, 5))



def test_self_connections_are_ignored():
    x, W_in, W_rec, W_out = _tiny_net(3)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    W2 = W_rec.copy()
    np.fill_diagonal(W2, 5.0)
    a = eprop.run_snn(TINY, t(x), t(W_in), t(W_rec), t(W_out))
    b = eprop.run_snn(TINY, t(x), t(W_in), t(W2), t(W_out))
    assert torch.equal(a.z, b.z) and torch.equal(a.y, b.y)



def test_batched_per_task_weights_match_single_runs():
    x, W_in, W_rec, W_out = _tiny_net(4)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    W_in_b = t(W_in) + 0.3 * torch.randn(3, *W_in.shape, generator=g, dtype=torch.float64)
    W_rec_b = t(W_rec) + 0.3 * torch.randn(3, *W_rec.shape, generator=g, dtype=torch.float64)
    rb = eprop.run_snn(TINY, t(x), W_in_b, W_rec_b, t(W_out), record_psi=True)
    for k in range(3):
        r1 = eprop.run_snn(TINY, t(x), W_in_b[k], W_rec_b[k], t(W_out), record_psi=True)
        assert torch.equal(rb.z[k], r1.z[0])
        torch.testing.assert_close(rb.y[k], r1.y[0])



def test_eprop_update_equals_per_synapse_sum():
    x, W_in, W_rec, W_out = _tiny_net(5)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    rec = eprop.run_snn(TINY, t(x), t(W_in), t(W_rec), record_psi=True)
    L = torch.randn(1, x.shape[0], TINY.n_rec, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dW_in, dW_rec = eprop.eprop_update(t(x), rec.z, rec.psi, L, TINY.alpha, eta=0.1)
    z, psi, Ln = rec.z[0].numpy(), rec.psi[0].numpy(), L[0].numpy()
    T = x.shape[0]
    e_in = np.zeros(TINY.n_in)
    e_rec = np.zeros(TINY.n_rec)
    ref_in = np.zeros((TINY.n_in, TINY.n_rec))
    ref_rec = np.zeros((TINY.n_rec, TINY.n_rec))
    for k in range(T):
        e_in = TINY.alpha * e_in + x[k]
        e_rec = TINY.alpha * e_rec + (z[k - 1] if k > 0 else 0.0)
        ref_in += np.outer(e_in, psi[k] * Ln[k])
        ref_rec += np.outer(e_rec, psi[k] * Ln[k])
    np.fill_diagonal(ref_rec, 0.0)
    np.testing.assert_allclose(dW_in[0].numpy(), -0.1 * ref_in, atol=1e-12)
    np.testing.assert_allclose(dW_rec[0].numpy(), -0.1 * ref_rec, atol=1e-12)
    assert np.abs(ref_in).sum() > 0



def test_surrogate_gradient_is_the_pseudo_derivative():
    v = torch.tensor([0.0, 0.3, 0.6, 0.9, 1.5, -0.2], dtype=torch.float64, requires_grad=True)
    z = eprop.spike_fn(v, 0.6, 0.6, 0.3)
    z.sum().backward()
    expect = (0.3 / 0.6) * torch.clamp(1 - (v.detach() - 0.6).abs() / 0.6, min=0)
    torch.testing.assert_close(v.grad, expect)
    assert z.tolist() == [0, 0, 0, 1, 1, 0]



def test_per_task_weights_when_batch_equals_steps():
    """B == T must not confuse a whole-trial product with a per-step one."""
    cfg = eprop.SNNConfig(n_in=2, n_rec=3, n_out=1, v_th=0.5)
    T = 4
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(T, 2, generator=g) < 0.5).double()
    W_in = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)  # B = T = 4 tasks
    W_rec = torch.zeros(3, 3, dtype=torch.float64)
    rb = eprop.run_snn(cfg, x, W_in, W_rec, record_v=True)
    for k in range(T):
        r1 = eprop.run_snn(cfg, x, W_in[k], W_rec, record_v=True)
        torch.testing.assert_close(rb.v[k], r1.v[0])



def test_threshold_gradient_changes_only_the_adaptive_neurons_gradients():
    """threshold_gradient=False (the authors' LSNN) leaves the forward pass alone and cuts only the spike
    function's gradient into the adaptive threshold: the LSG's (ALIF) gradients change, a LIF network's
    (threshold a constant) do not."""
    g = torch.Generator().manual_seed(0)
    for cfg, changes in ((eprop.LSG, True), (eprop.LEARNER, False)):
        x = (torch.rand(2, 60, cfg.n_in, generator=g) < 0.2).float()
        W_in = (torch.randn(cfg.n_in, cfg.n_rec, generator=g) * 2.0 / cfg.n_in ** 0.5).requires_grad_(True)
        W_rec = (torch.randn(cfg.n_rec, cfg.n_rec, generator=g) / cfg.n_rec ** 0.5).requires_grad_(True)
        res = []
        for tg in (True, False):
            rec = eprop.run_snn(cfg, x, W_in, W_rec, detach_reset=False, threshold_gradient=tg)
            (gi,) = torch.autograd.grad((rec.z * torch.linspace(0, 1, 60)[:, None]).sum(), [W_in])
            res.append((rec.z.detach(), gi))
        assert res[0][0].sum() > 50 and torch.equal(res[0][0], res[1][0])  # spikes, and the same ones
        rel = float((res[0][1] - res[1][1]).norm() / res[0][1].norm())
        assert (rel > 1e-2) if changes else (rel == 0.0), (cfg.n_rec, rel)



def test_run_snn_read_var_draws_output_space_noise_of_the_right_variance():
    """With no spikes possible (huge threshold) and W = 0, the membrane is pure read noise: v_t = alpha v_{t-1}
    + e_t with Var(e_t) = sum_i x_i^2 var_i, so Var(v_T) -> c n / (1 - alpha^2) for n active unit inputs."""
    from dataclasses import replace
    cfg = replace(eprop.LEARNER, v_th=1e9)
    T, n_in, n = 200, 5, 250
    x = torch.ones(T, n_in, dtype=torch.float64)
    W_in = torch.zeros(64, n_in, n, dtype=torch.float64)
    W_rec = torch.zeros(64, n, n, dtype=torch.float64)
    c = 1e-4
    torch.manual_seed(0)
    rec = eprop.run_snn(cfg, x, W_in, W_rec, None, record_v=True,
                      read_var=(torch.full_like(W_in, c), torch.zeros_like(W_rec), None))
    expected = c * n_in / (1 - cfg.alpha ** 2)
    assert float(rec.v[:, -1].var()) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="read_var"):
        eprop.run_snn(cfg, x, W_in, W_rec, None, per_step_mvm=True, read_var=(W_in, W_rec, None))



def test_voltage_regularization_acts_only_on_dead_neurons():
    """Neuron 0 never comes within v_th of threshold (silent for good), neuron 1 is always more than v_th above
    it when not refractory (saturated for good), neuron 2 crosses it: only 0 and 1 are penalised, and the
    gradient pushes 0 up and 1 down. The released LSG scores far lower than the random initialisation."""
    cfg = eprop.LEARNER
    T = 20
    v = torch.zeros(1, T, 3, dtype=torch.float64)
    v[0, :, 0] = -3.0 * cfg.v_th + cfg.v_th          # (v - A) / v_th = -3
    v[0, :, 1] = cfg.v_th + 2.5 * cfg.v_th           # +2.5 on every step
    v[0, :, 2] = torch.linspace(-2.0, 0.5, T) * cfg.v_th + cfg.v_th
    z = torch.zeros_like(v)
    z[0, ::5, 1] = 1.0                                # spikes every 5 steps (refractory in between)
    refractory = torch.ones(T, dtype=torch.bool)
    refractory[::5] = False
    v.data[0, refractory, 1] = cfg.v_th               # (v - A) = 0 while refractory: must not count
    A = torch.full_like(v, cfg.v_th)
    v.requires_grad_(True)
    r = eprop.voltage_regularization(v, A, z, cfg)
    assert float(r.detach()) == pytest.approx((-1 + 3.0) ** 2 + (2.5 - 1.0) ** 2)
    r.backward()
    assert float(v.grad[..., 0].sum()) < 0 and float(v.grad[..., 1].sum()) > 0  # descent: 0 up, 1 down
    assert float(v.grad[..., 2].abs().sum()) == 0.0


@pytest.mark.parametrize("per_task", [False, True])
def test_recurrent_weight_gradient_gathered_once_equals_per_step_autograd(per_task):
    """The CPU time loop's fast path (spike rows gathered for per-task weights, W_rec's gradient summed in one
    product after the loop) against one autograd product per step, in float64: values and every gradient."""
    from pcmeta.agents.eprop import network

    torch.manual_seed(3)
    cfg = eprop.LEARNER
    B, T = 4, 60
    x = (torch.rand(B, T, cfg.n_in, dtype=torch.float64) < 0.3).to(torch.float64)
    W_in0 = torch.randn(cfg.n_in, cfg.n_rec, dtype=torch.float64) * 0.8
    W_rec0 = torch.randn(*((B,) if per_task else ()), cfg.n_rec, cfg.n_rec, dtype=torch.float64) * 0.1
    W_out0 = torch.randn(cfg.n_rec, cfg.n_out, dtype=torch.float64) * 0.1
    out = {}
    for fast in (True, False):
        ws = [w.clone().requires_grad_(True) for w in (W_in0, W_rec0, W_out0)]
        with contextlib.nullcontext() if fast else network.per_step_autograd():
            assert network._lazy_weight_grad(ws[1]) is fast
            rec = eprop.run_snn(cfg, x, *ws, detach_reset=False)
        (rec.y.square().sum() + rec.z.sum() * 0.01).backward()
        out[fast] = (rec.z, rec.y, [w.grad for w in ws])
    assert out[True][0].sum() > 0.02 * out[True][0].numel()  # the network spikes (the rows gathered are used)
    assert torch.equal(out[True][0], out[False][0])
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-12, atol=1e-14)
    for a, b in zip(out[True][2], out[False][2]):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("threshold_gradient", [True, False])
def test_voltage_regularization_from_extremes_matches_the_full_record(threshold_gradient):
    """The extremes gathered in the time loop give the (B, T, n) version's value and gradient (float64, a random
    initialisation: a few hundred silent LSG neurons, gradient through the ALIF thresholds too), alone and with a
    batch split over processes (a fixed other share standing in for the all-reduce). The LSG's input weights are
    turned over and scaled up, so that it has saturated neurons as well as silent ones."""
    from pcmeta.tasks import trajectories as traj

    p = eprop.init_params(3)
    p["W_in_lsg"] = -5 * p["W_in_lsg"]
    params = {k: v.double().requires_grad_(True) for k, v in p.items()}
    tg = traj.sample_targets(3, rng=np.random.default_rng(1))
    x_lsg = eprop.target_tensors(tg, dtype=torch.float64)["x_lsg"]
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float64)
    ep = eprop.one_shot_episode(params, clock, x_lsg, record_v=True, record_extremes=True, test=False,
                                detach_reset=False, threshold_gradient=threshold_gradient)
    keys = list(params)
    ext = ep["extremes_lsg"]
    saturated = torch.where(torch.isfinite(ext.min), ext.min, 0.0).mean(dim=0) > 1
    assert int(saturated.sum()) > 10 and int((ext.max.mean(dim=0) < -1).sum()) > 10
    for net, cfg in (("lsg", eprop.LSG), ("demo", eprop.LEARNER)):
        other = torch.linspace(-3.0, 2.0, cfg.n_rec, dtype=torch.float64)
        for batch_mean in (None, lambda s: 0.5 * (s + other)):  # noqa: E731
            full = eprop.voltage_regularization(ep[f"v_{net}"], ep[f"A_{net}"], ep[f"z_{net}"], cfg, batch_mean)
            fast = eprop.voltage_regularization_of(ep[f"extremes_{net}"], batch_mean)
            assert float(full.detach()) > 0.1 and float(fast.detach()) == pytest.approx(float(full.detach()), rel=1e-12)
            g_full = torch.autograd.grad(full, [params[k] for k in keys], retain_graph=True, allow_unused=True)
            g_fast = torch.autograd.grad(fast, [params[k] for k in keys], retain_graph=True, allow_unused=True)
            for k, a, b in zip(keys, g_full, g_fast):
                assert (a is None) == (b is None), k
                if a is not None:
                    assert float(a.norm()) > 0, k
                    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=f"{net} {k}")


def test_meta_loss_takes_the_voltage_term_from_the_extremes_on_a_cpu():
    """meta_loss_tensors under the default voltage factor gives the loss and meta-gradient of its (B, T, n)
    reference (:func:`full_voltage_record`), float64."""
    from pcmeta.agents.eprop.losses import full_voltage_record
    from pcmeta.tasks import trajectories as traj

    params = {k: v.double().requires_grad_(True) for k, v in eprop.init_params(5).items()}
    tg = traj.sample_targets(2, rng=np.random.default_rng(2))
    batch = eprop.target_tensors(tg, dtype=torch.float64)
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float64)
    runs = []
    for reference in (False, True):
        with full_voltage_record() if reference else contextlib.nullcontext():
            loss, _ = eprop.meta_loss_tensors(params, clock, batch, voltage_reg=1e-2)
        runs.append((float(loss.detach()), torch.autograd.grad(loss, list(params.values()))))
    (fast, g_fast), (ref, g_ref) = runs
    no_vreg, _ = eprop.meta_loss_tensors(params, clock, batch, voltage_reg=0.0)
    assert fast == pytest.approx(ref, rel=1e-12) and fast - float(no_vreg.detach()) > 1e-3
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
