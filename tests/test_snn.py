"""Tests of the torch spiking learner (pcmeta.agents.snn): dynamics vs a slow reference, the e-prop update,
surrogate gradients, the substrate-deployed learner, the released weights' one-shot learning, the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pcmeta.agents import snn
from pcmeta.tasks import trajectories as traj


TINY = snn.SNNConfig(n_in=3, n_rec=7, n_out=2, n_alif=3, v_th=0.5, tau_a=30.0, beta=0.8)


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
    rec = snn.run_snn(TINY, t(x), t(W_in), t(W_rec), t(W_out), record_psi=True, record_v=True)
    state = {k: np.zeros(TINY.n_rec) for k in ("v", "z", "r", "b")}
    zs, vs, psis, As = [], [], [], []
    for k in range(x.shape[0]):
        state = snn.reference_step(TINY, state, x[k], W_in, W_rec)
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
    cfg = snn.SNNConfig(n_in=1, n_rec=1, n_out=1, v_th=0.5)
    x = torch.ones(30, 1, dtype=torch.float64)
    rec = snn.run_snn(cfg, x, torch.full((1, 1), 10.0, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    assert torch.nonzero(rec.z[0, :, 0]).ravel().tolist() == list(range(0, 30, 5))


def test_self_connections_are_ignored():
    x, W_in, W_rec, W_out = _tiny_net(3)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    W2 = W_rec.copy()
    np.fill_diagonal(W2, 5.0)
    a = snn.run_snn(TINY, t(x), t(W_in), t(W_rec), t(W_out))
    b = snn.run_snn(TINY, t(x), t(W_in), t(W2), t(W_out))
    assert torch.equal(a.z, b.z) and torch.equal(a.y, b.y)


def test_batched_per_task_weights_match_single_runs():
    x, W_in, W_rec, W_out = _tiny_net(4)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    W_in_b = t(W_in) + 0.3 * torch.randn(3, *W_in.shape, generator=g, dtype=torch.float64)
    W_rec_b = t(W_rec) + 0.3 * torch.randn(3, *W_rec.shape, generator=g, dtype=torch.float64)
    rb = snn.run_snn(TINY, t(x), W_in_b, W_rec_b, t(W_out), record_psi=True)
    for k in range(3):
        r1 = snn.run_snn(TINY, t(x), W_in_b[k], W_rec_b[k], t(W_out), record_psi=True)
        assert torch.equal(rb.z[k], r1.z[0])
        torch.testing.assert_close(rb.y[k], r1.y[0])


def test_eprop_update_equals_per_synapse_sum():
    x, W_in, W_rec, W_out = _tiny_net(5)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    rec = snn.run_snn(TINY, t(x), t(W_in), t(W_rec), record_psi=True)
    L = torch.randn(1, x.shape[0], TINY.n_rec, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dW_in, dW_rec = snn.eprop_update(t(x), rec.z, rec.psi, L, TINY.alpha, eta=0.1)
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
    z = snn.spike_fn(v, 0.6, 0.6, 0.3)
    z.sum().backward()
    expect = (0.3 / 0.6) * torch.clamp(1 - (v.detach() - 0.6).abs() / 0.6, min=0)
    torch.testing.assert_close(v.grad, expect)
    assert z.tolist() == [0, 0, 0, 1, 1, 0]


def test_load_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--weights"):
        snn.load_weights(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, W_in_lsg=np.zeros((53, 800)))
    with pytest.raises(ValueError, match="lacks the keys"):
        snn.load_weights(bad)


@pytest.fixture(scope="module")
def released(reference_dir):
    return snn.load_weights(reference_dir / "authors_arm_natural_eprop.npz")


def test_released_weights_learn_in_one_shot(released):
    targets = traj.sample_targets(24, rng=2024)
    res = snn.evaluate(released, targets, batch_size=24)
    before, after = res["mse_omega_before"].mean(), res["mse_omega_after"].mean()
    # SPEC: 0.49 -> 0.0097 (omega), 0.166 -> 0.0158 (xyz) on 500 targets; 24 targets are noisy
    assert 0.25 < before < 0.9
    assert after < 0.03 and after < 0.1 * before
    assert res["mse_xyz_after"].mean() < 0.05
    # learning rate 0 gives no change
    res0 = snn.evaluate(released, targets[:4], batch_size=4, eta=0.0)
    np.testing.assert_allclose(res0["mse_omega_after"], res0["mse_omega_before"], rtol=1e-6)


def test_learner_on_software_substrate_equals_tensor_path(released):
    from pcmeta.hardware import SoftwareSubstrate

    targets = traj.sample_targets(2, rng=5)
    ref = snn.evaluate(released, targets, batch_size=2)
    sub_res = snn.evaluate(released, targets, substrate_factory=lambda: SoftwareSubstrate())
    for k in ("mse_omega_before", "mse_omega_after", "mse_xyz_after"):
        np.testing.assert_allclose(sub_res[k], ref[k], rtol=1e-4, atol=1e-7)


def test_learner_update_goes_through_the_substrate(released):
    from pcmeta.hardware import SoftwareSubstrate

    sub = SoftwareSubstrate()
    lr = snn.EpropLearner(sub, released["W_in_trainee"], released["W_rec_trainee"], released["W_out_trainee"])
    assert set(lr.arrays) == {"W_in", "W_rec", "W_out"}
    assert torch.all(torch.diagonal(torch.as_tensor(lr.arrays["W_rec"].read())) == 0)
    dW_rec = torch.full((250, 250), 0.01)
    lr.update(torch.zeros(5, 250), dW_rec)
    W = torch.as_tensor(lr.arrays["W_rec"].read())
    assert torch.all(torch.diagonal(W) == 0)  # no self-connection is ever created
    off = ~torch.eye(250, dtype=torch.bool)
    torch.testing.assert_close(W[off], snn._no_diag(released["W_rec_trainee"])[off] + 0.01)


def test_meta_gradient_flows_through_the_update(released):
    params = {k: v.detach().clone().double().requires_grad_(True) for k, v in released.items()}
    targets = traj.sample_targets(1, rng=3)
    loss, figs = snn.meta_loss(params, targets)
    loss.backward()
    for k in snn.PARAM_KEYS:
        g = params[k].grad
        assert g is not None and torch.isfinite(g).all(), k
        assert g.abs().sum() > 0, f"no meta-gradient reaches {k}"
    assert figs["loss"] < 0.1
    # the loss is smooth in the fixed readout W_out_trainee (spikes do not depend on it): the gradient,
    # through the differentiable kinematics, must match central finite differences
    eps = 1e-4
    j = int(torch.argmax(params["W_out_trainee"].grad.abs()))
    d = torch.zeros_like(params["W_out_trainee"])
    d.view(-1)[j] = eps
    with torch.no_grad():
        lp = snn.meta_loss({**params, "W_out_trainee": params["W_out_trainee"] + d}, targets)[0]
        lm = snn.meta_loss({**params, "W_out_trainee": params["W_out_trainee"] - d}, targets)[0]
    fd = (lp - lm) / (2 * eps)
    torch.testing.assert_close(fd, params["W_out_trainee"].grad.view(-1)[j], rtol=1e-4, atol=1e-8)


def test_cli_arm_eval_writes_json(tmp_path, capsys):
    from pcmeta.demos.cli import main

    out = tmp_path / "eval.json"
    assert main(["arm", "eval", "--tasks", "3", "--seed", "1", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    for k in ("mse_omega_before", "mse_omega_after", "mse_xyz_before", "mse_xyz_after", "loss_after", "tasks"):
        assert k in d
    assert d["tasks"] == 3 and d["mse_omega_after"] < d["mse_omega_before"]
    assert "mse_omega" in capsys.readouterr().out
    assert main(["arm", "eval", "--tasks", "2", "--time", "soon"]) == 2
    assert main(["arm", "eval", "--tasks", "2", "--weights", str(tmp_path / "none.npz")]) == 2


def test_parse_duration():
    from pcmeta.demos.cli_snn import parse_duration

    assert parse_duration("1min") == 60 and parse_duration("1d") == 86400 and parse_duration("620s") == 620
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


@pytest.mark.slow
def test_released_weights_reproduce_spec_table_500_targets(released):
    """Acceptance 2 (torch): SPEC section 2's table on 500 new targets, within 25 %."""
    targets = traj.sample_targets(500, rng=np.random.default_rng(0))
    res = snn.evaluate(released, targets, batch_size=100)
    assert res["mse_omega_before"].mean() == pytest.approx(0.491, rel=0.25)
    assert res["mse_xyz_before"].mean() == pytest.approx(0.166, rel=0.25)
    assert res["mse_omega_after"].mean() == pytest.approx(0.0097, rel=0.25)
    assert res["mse_xyz_after"].mean() == pytest.approx(0.0158, rel=0.25)
    assert res["loss_after"].mean() == pytest.approx(0.0127, rel=0.25)
    rnd = snn.evaluate(released, targets, batch_size=100, update_transform=snn.round_to_grid)
    assert rnd["mse_omega_after"].mean() == pytest.approx(0.0405, rel=0.25)
    assert rnd["mse_xyz_after"].mean() == pytest.approx(0.0134, rel=0.25)


def test_shipped_weights_learn_within_1p5x_of_the_released(released):
    """Acceptance 3: pcmeta's own meta-trained weights (package data, the default of load_weights / arm eval)
    reach a post-update loss within 1.5x of the released weights' on the same new targets."""
    assert snn.default_weights_path() == snn.SHIPPED_WEIGHTS and snn.SHIPPED_WEIGHTS.is_file()
    own = snn.load_weights()
    assert not torch.equal(own["W_rec_lsg"], released["W_rec_lsg"])
    by_name = snn.load_weights("authors")
    assert all(torch.equal(by_name[k], released[k]) for k in snn.PARAM_KEYS)
    targets = traj.sample_targets(200, rng=np.random.default_rng(11))
    a, b = snn.evaluate(own, targets, batch_size=100), snn.evaluate(released, targets, batch_size=100)
    assert a["loss_before"].mean() == pytest.approx(b["loss_before"].mean(), rel=0.1)  # same untrained start
    assert a["loss_after"].mean() < 1.5 * b["loss_after"].mean(), (a["loss_after"].mean(), b["loss_after"].mean())
    assert a["loss_after"].mean() < 0.1 * a["loss_before"].mean()  # one update: over 10x lower


def test_per_task_weights_when_batch_equals_steps():
    """B == T must not confuse a whole-trial product with a per-step one."""
    cfg = snn.SNNConfig(n_in=2, n_rec=3, n_out=1, v_th=0.5)
    T = 4
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(T, 2, generator=g) < 0.5).double()
    W_in = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)  # B = T = 4 tasks
    W_rec = torch.zeros(3, 3, dtype=torch.float64)
    rb = snn.run_snn(cfg, x, W_in, W_rec, record_v=True)
    for k in range(T):
        r1 = snn.run_snn(cfg, x, W_in[k], W_rec, record_v=True)
        torch.testing.assert_close(rb.v[k], r1.v[0])


def test_eprop_agent_learns_in_the_arm_env(released):
    import gymnasium as gym

    env = gym.make("pcmeta.envs:pcmeta/ArmTrajectory-v0")
    try:
        env.reset(seed=0)
        tg = traj.sample_targets(1, rng=77)
        task = {"robot": tg.robot, "start": tg.start, "omega": tg.omega[0], "q": tg.q[0], "xyz": tg.xyz[0],
                "omega_path": tg.omega_path[0]}
        agent = snn.EpropAgent(released)
        r = agent.one_shot(env, task)
    finally:
        env.close()
    assert r["xyz_demo"].shape == (249, 3) and r["xyz_test"].shape == (249, 3)
    assert r["mse_xyz_test"] < 0.2 * r["mse_xyz_demo"]
    assert r["mse_omega_test"] < 0.2 * r["mse_omega_demo"]
    # the executed path is the env's physics: while no joint limit is touched it equals the kinematics
    q = np.asarray(task["start"]) + 0.01 * np.cumsum(r["omega_test"], axis=0)
    inside = np.all((np.abs(q) < np.deg2rad([130.0, 70.0])).all(axis=1))
    if inside:
        np.testing.assert_allclose(r["xyz_test"], traj.forward_kinematics(q), atol=1e-4)
    with pytest.raises(ValueError, match="engine"):
        snn.EpropAgent(released, engine="tensorflow")


def test_authors_arm_pcm_model():
    sub = snn.AuthorsArmPCM(seed=0)
    W = np.array([[0.5, -0.3, 0.0], [2.0, -1.5, 0.02]])
    arr = sub.place("w", W)
    w0 = arr.read()
    assert np.all(np.abs(w0) <= 1.0)
    assert np.all(w0[0, :2] * W[0, :2] > 0) and np.all(np.abs(w0[0, :2]) < np.abs(W[0, :2]) + 0.011)  # drift shrinks
    # reads are noisy per MVM, zero input gives zero output
    x = np.array([[1.0, 0.0]])
    assert not np.allclose(arr.matmul(x), arr.matmul(x))
    np.testing.assert_array_equal(arr.matmul(np.zeros((1, 2))), np.zeros((1, 3)))
    # updates are rounded to 1/16; only changed entries are re-programmed
    dW = np.zeros((2, 3))
    dW[0, 0] = 0.02   # rounds to 0: unchanged
    dW[0, 1] = 0.1    # rounds to 1/16 (0.0625)
    arr.update(dW)
    w1 = arr.read()
    assert w1[0, 0] == w0[0, 0] and np.array_equal(w1[1], w0[1])
    assert w1[0, 1] != w0[0, 1]
    with pytest.raises(ValueError, match="already placed"):
        sub.place("w", W)


def test_cli_arm_demo_writes_plot_and_json(tmp_path, capsys):
    from pcmeta.demos.cli import main

    plot, js = tmp_path / "demo.png", tmp_path / "demo.json"
    rc = main(["arm", "demo", "--substrate", "software", "--engine", "torch", "--seed", "3", "--no-video",
               "--plot", str(plot), "--json", str(js)])
    assert rc == 0 and plot.stat().st_size > 10_000
    d = json.loads(js.read_text())
    assert d["mse_xyz_test"] < 0.2 * d["mse_xyz_demo"]
    assert "test (after ONE update)" in capsys.readouterr().out
    assert main(["arm", "demo", "--out", str(tmp_path / "demo.avi")]) == 2


def test_meta_train_resume_is_exact(tmp_path):
    a = snn.meta_train(tmp_path / "a", 3, batch=2, checkpoint_every=1, seed=5, progress=False)
    snn.meta_train(tmp_path / "b", 2, batch=2, checkpoint_every=1, seed=5, progress=False)
    b = snn.meta_train(tmp_path / "b", 3, batch=2, checkpoint_every=1, seed=5, resume=True, progress=False)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    pa = snn.load_checkpoint_params(tmp_path / "a" / "checkpoint.pt")
    pb = snn.load_checkpoint_params(tmp_path / "b" / "checkpoint.pt")
    for k in snn.PARAM_KEYS:
        assert torch.equal(pa[k], pb[k]), k
    w = snn.load_weights(tmp_path / "a" / "weights.npz")  # the released layout, loadable by arm eval
    assert torch.equal(w["W_rec_lsg"], pa["W_rec_lsg"])
    p0 = snn.init_params(5)
    assert not torch.equal(p0["W_in_lsg"], pa["W_in_lsg"])  # the optimizer moved the weights
    with pytest.raises(FileNotFoundError):
        snn.meta_train(tmp_path / "c", 1, batch=1, resume=True, progress=False)


def test_threshold_gradient_changes_only_the_adaptive_neurons_gradients():
    """threshold_gradient=False (the authors' LSNN) leaves the forward pass alone and cuts only the spike
    function's gradient into the adaptive threshold: the LSG's (ALIF) gradients change, a LIF network's
    (threshold a constant) do not."""
    g = torch.Generator().manual_seed(0)
    for cfg, changes in ((snn.LSG, True), (snn.LEARNER, False)):
        x = (torch.rand(2, 60, cfg.n_in, generator=g) < 0.2).float()
        W_in = (torch.randn(cfg.n_in, cfg.n_rec, generator=g) * 2.0 / cfg.n_in ** 0.5).requires_grad_(True)
        W_rec = (torch.randn(cfg.n_rec, cfg.n_rec, generator=g) / cfg.n_rec ** 0.5).requires_grad_(True)
        res = []
        for tg in (True, False):
            rec = snn.run_snn(cfg, x, W_in, W_rec, detach_reset=False, threshold_gradient=tg)
            (gi,) = torch.autograd.grad((rec.z * torch.linspace(0, 1, 60)[:, None]).sum(), [W_in])
            res.append((rec.z.detach(), gi))
        assert res[0][0].sum() > 50 and torch.equal(res[0][0], res[1][0])  # spikes, and the same ones
        rel = float((res[0][1] - res[1][1]).norm() / res[0][1].norm())
        assert (rel > 1e-2) if changes else (rel == 0.0), (cfg.n_rec, rel)


def test_meta_train_keeps_its_best_weights(tmp_path):
    """best_window=1: best.npz holds the weights after the iteration with the lowest loss (a fresh run
    stopped there writes the same weights.npz); a resumed run keeps best and threshold_gradient."""
    kw = dict(batch=2, checkpoint_every=1, seed=6, progress=False, best_window=1)
    a = snn.meta_train(tmp_path / "a", 4, **kw)
    loss = [h["loss"] for h in a["history"]]
    k = int(np.argmin(loss))
    assert a["best"]["iteration"] == k + 1 and a["best"]["window_loss"] == pytest.approx(loss[k])
    snn.meta_train(tmp_path / "b", k + 1, **kw)
    wa, wb = np.load(tmp_path / "a" / "best.npz"), np.load(tmp_path / "b" / "weights.npz")
    for key in snn.PARAM_KEYS:
        np.testing.assert_array_equal(wa[key], wb[key])
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["threshold_gradient"] is False and ck["best"] == a["best"]
    c = snn.meta_train(tmp_path / "a", 5, resume=True, threshold_gradient=True, **kw)
    assert c["best"]["window_loss"] <= a["best"]["window_loss"]
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["threshold_gradient"] is False  # a resumed run keeps its setting
    with pytest.raises(ValueError, match="best_window"):
        snn.meta_train(tmp_path / "d", 1, batch=1, best_window=0, progress=False)


def test_firing_stats_tell_a_healthy_lsg_from_a_broken_one(reference_dir):
    """`pcmeta arm eval --rates`: the released LSG has (almost) no silent or saturated neurons; with its input
    weights flipped and scaled x-5 (its recurrent balance broken) many neurons go silent and many saturate."""
    p = snn.load_weights(reference_dir / "authors_arm_natural_eprop.npz")
    tg = traj.sample_targets(5, rng=np.random.default_rng(0))
    ok = snn.firing_stats(p, tg)
    assert ok["lsg"]["neurons"] == 800 and ok["learner"]["neurons"] == 250
    assert ok["lsg"]["silent"] <= 5 and ok["lsg"]["saturated"] == 0 and 5 < ok["lsg"]["mean_hz"] < 20
    bad = snn.firing_stats({**p, "W_in_lsg": -5 * p["W_in_lsg"]}, tg)["lsg"]
    assert bad["saturated"] > 100 and bad["silent"] > 50 and bad["mean_hz"] > 40


def test_meta_train_readout_lr_factor(tmp_path):
    """The learning network's readout takes Adam steps of lr * readout_lr_factor (default 1): after one step
    every W_out_trainee entry moved by at most that (Adam's first step is lr * sign(g)), the other matrices by
    the full lr; the factor is kept in the checkpoint and a resumed run uses it."""
    lr = 1e-3
    snn.meta_train(tmp_path / "a", 1, batch=1, lr=lr, seed=2, readout_lr_factor=0.25, progress=False)
    p0, p1 = snn.init_params(2), snn.load_checkpoint_params(tmp_path / "a" / "checkpoint.pt")
    d_out = (p1["W_out_trainee"] - p0["W_out_trainee"]).abs().max().item()
    d_rec = (p1["W_rec_trainee"] - p0["W_rec_trainee"]).abs().max().item()
    assert d_out == pytest.approx(lr * 0.25, rel=1e-3)
    assert d_rec == pytest.approx(lr, rel=1e-3)
    assert snn.READOUT_LR_FACTOR == 1.0
    snn.meta_train(tmp_path / "b", 1, batch=1, lr=lr, seed=2, readout_lr_factor=1.0, progress=False)
    with pytest.raises(ValueError, match="started with readout_lr_factor 1"):
        snn.meta_train(tmp_path / "b", 2, batch=1, lr=lr, seed=2, readout_lr_factor=0.5, resume=True,
                       progress=False)
    r = snn.meta_train(tmp_path / "b", 2, batch=1, lr=lr, seed=2, resume=True, progress=False)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["readout_lr_factor"] == 1.0 and r["iteration"] == 2  # the run's own factor
    with pytest.raises(ValueError, match="readout_lr_factor"):
        snn.meta_train(tmp_path / "c", 1, batch=1, readout_lr_factor=0.0, progress=False)


def test_authors_training_weights_statistics_and_gradient():
    """Programming as the authors' training code: value ~ W 32^-nu + U(-0.01, 0.01) (nu per weight and task),
    one draw per task, gradient 32^-nu (clips are straight-through)."""
    torch.manual_seed(0)
    W = torch.full((200, 250), 0.5, requires_grad=True)
    w = snn.authors_training_weights(W, 4)
    assert w.shape == (4, 200, 250)
    assert not torch.equal(w[0], w[1])  # one programming per task
    g = 0.5
    mu = min(max(-0.0155 * math.log(g) + 0.0244, 0.049), 0.1)
    assert float(w.detach().mean()) == pytest.approx(0.5 * 32.0 ** (-mu), rel=0.01)
    w.sum().backward()
    f = W.grad / 4  # mean of 32^-nu over the tasks
    assert float(f.mean()) == pytest.approx(32.0 ** (-mu), rel=0.01) and float(f.min()) > 0.5
    assert float(w.detach().abs().max()) <= 1.0


def test_authors_read_var_matches_the_evaluation_model():
    """The per-weight read-noise variance used in training equals the empirical variance of
    :class:`AuthorsArmPCM`'s reads (the evaluation model), for weights whose noisy reads stay positive."""
    sub = snn.AuthorsArmPCM(seed=0)
    for w0 in (0.05, 0.3, 0.9):
        w = torch.full((100_000,), w0, dtype=torch.float64)
        reads = sub._read(w)
        var = snn.authors_read_var(w)
        assert float(reads.var()) == pytest.approx(float(var[0]), rel=0.03), w0


def test_run_snn_read_var_draws_output_space_noise_of_the_right_variance():
    """With no spikes possible (huge threshold) and W = 0, the membrane is pure read noise: v_t = alpha v_{t-1}
    + e_t with Var(e_t) = sum_i x_i^2 var_i, so Var(v_T) -> c n / (1 - alpha^2) for n active unit inputs."""
    from dataclasses import replace
    cfg = replace(snn.LEARNER, v_th=1e9)
    T, n_in, n = 200, 5, 250
    x = torch.ones(T, n_in, dtype=torch.float64)
    W_in = torch.zeros(64, n_in, n, dtype=torch.float64)
    W_rec = torch.zeros(64, n, n, dtype=torch.float64)
    c = 1e-4
    torch.manual_seed(0)
    rec = snn.run_snn(cfg, x, W_in, W_rec, None, record_v=True,
                      read_var=(torch.full_like(W_in, c), torch.zeros_like(W_rec), None))
    expected = c * n_in / (1 - cfg.alpha ** 2)
    assert float(rec.v[:, -1].var()) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="read_var"):
        snn.run_snn(cfg, x, W_in, W_rec, None, per_step_mvm=True, read_var=(W_in, W_rec, None))


def test_authors_training_reprogram_rounds_and_reprograms_only_changed_weights():
    torch.manual_seed(1)
    w = torch.full((2, 50, 40), 0.25, dtype=torch.float64)
    dW = torch.zeros_like(w)
    dW[:, :10] = 0.02     # under half a step (1/32): rounded to 0, untouched
    dW[:, 10:20] = 0.05   # rounded to 1/16: re-programmed
    dW.requires_grad_(True)
    out = snn.authors_training_reprogram(w, dW)
    assert torch.equal(out[:, :10].detach(), w[:, :10]) and torch.equal(out[:, 20:].detach(), w[:, 20:])
    changed = out[:, 10:20].detach()
    assert float((changed - (0.25 + 1 / 16)).abs().max()) > 0  # programming noise and drift
    assert 0.2 < float(changed.mean()) < 0.3125  # drifted below the target 0.3125
    out.sum().backward()
    assert torch.equal(dW.grad[:, :10], torch.ones_like(dW.grad[:, :10]))  # straight-through
    assert float(dW.grad[:, 10:20].max()) < 1.0  # the fresh drift factor


def test_trainee_noise_model_reproduces_the_authors_pcm_reference(reference_dir):
    """The released weights under the training-time PCM model lose about as much as under the authors' PCM
    evaluation model (SPEC: 0.109 on 500 targets), against 0.0127 in float."""
    w = snn.load_weights(reference_dir / "authors_arm_natural_eprop.npz")
    tg = traj.sample_targets(40, rng=np.random.default_rng(3))
    t = snn.target_tensors(tg)
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        flt = float(snn.meta_loss_tensors(w, clock, t, robot=tg.robot)[1]["loss"])
        noisy = float(snn.meta_loss_tensors(w, clock, t, robot=tg.robot, trainee_noise="authors")[1]["loss"])
    assert flt < 0.03 and 0.07 < noisy < 0.16, (flt, noisy)
    with pytest.raises(ValueError, match="trainee_noise"):
        snn.meta_loss_tensors(w, clock, t, robot=tg.robot, trainee_noise="pcm")


def test_meta_train_with_trainee_noise_resumes_exactly(tmp_path):
    kw = dict(batch=2, checkpoint_every=1, seed=4, progress=False, trainee_noise="authors")
    a = snn.meta_train(tmp_path / "a", 2, **kw)
    snn.meta_train(tmp_path / "b", 1, **kw)
    b = snn.meta_train(tmp_path / "b", 2, resume=True, progress=False, batch=2, checkpoint_every=1, seed=4)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["trainee_noise"] == "authors"


def test_voltage_regularization_acts_only_on_dead_neurons():
    """Neuron 0 never comes within v_th of threshold (silent for good), neuron 1 is always more than v_th above
    it when not refractory (saturated for good), neuron 2 crosses it: only 0 and 1 are penalised, and the
    gradient pushes 0 up and 1 down. The released LSG scores far lower than the random initialisation."""
    cfg = snn.LEARNER
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
    r = snn.voltage_regularization(v, A, z, cfg)
    assert float(r.detach()) == pytest.approx((-1 + 3.0) ** 2 + (2.5 - 1.0) ** 2)
    r.backward()
    assert float(v.grad[..., 0].sum()) < 0 and float(v.grad[..., 1].sum()) > 0  # descent: 0 up, 1 down
    assert float(v.grad[..., 2].abs().sum()) == 0.0


def test_voltage_regularization_separates_released_from_random_lsg(reference_dir):
    tg = traj.sample_targets(8, rng=np.random.default_rng(0))
    t = snn.target_tensors(tg)
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float32)
    vals = []
    for p in (snn.load_weights(reference_dir / "authors_arm_natural_eprop.npz"), snn.init_params(0)):
        with torch.no_grad():
            ep = snn.one_shot_episode(p, clock, t["x_lsg"], record_v=True, test=False)
            vals.append(float(snn.voltage_regularization(ep["v_lsg"], ep["A_lsg"], ep["z_lsg"], snn.LSG)))
    assert vals[0] < 5 < 50 < vals[1], vals


def test_arm_runs_summarises_meta_training_runs(tmp_path, capsys):
    from pcmeta.demos.cli import main

    snn.meta_train(tmp_path / "a", 4, batch=1, checkpoint_every=2, seed=1, progress=False, voltage_reg=1e-3)
    s = snn.run_summary(tmp_path / "a", window=2)
    assert s["iterations"] == 4 and list(s["loss_windows"]) == ["0-2", "2-4"]
    assert s["config"]["voltage_reg"] == 1e-3 and s["config"]["detach_reset"] is False
    assert s["max_grad_norm"] > 0 and s["firing"]["lsg"]["neurons"] == 800
    assert main(["arm", "runs", str(tmp_path / "a"), "--window", "2", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "voltage_reg=0.001" in out and "| 4 |" in out
    assert json.loads((tmp_path / "r.json").read_text())[0]["iterations"] == 4
    with pytest.raises(FileNotFoundError):
        snn.run_summary(tmp_path / "missing")
