"""Tests of one-shot learning with the spiking learner (pcmeta.agents.eprop): weight files, the released and the
shipped weights' one-shot learning, the learner on a substrate, the meta-gradient through the update, the
agent in the arm env, firing health, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.tasks import trajectories as traj


def test_load_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found"):
        eprop.load_weights(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, W_in_lsg=np.zeros((53, 800)))
    with pytest.raises(ValueError, match="lacks the keys"):
        eprop.load_weights(bad)



@pytest.fixture(scope="module")
def released(reference_dir):
    return eprop.load_weights(reference_dir / "authors_arm_natural_eprop.npz")



def test_released_weights_learn_in_one_shot(released):
    targets = traj.sample_targets(24, rng=2024)
    res = eprop.evaluate(released, targets, batch_size=24)
    before, after = res["mse_omega_before"].mean(), res["mse_omega_after"].mean()
    # SPEC: 0.49 -> 0.0097 (omega), 0.166 -> 0.0158 (xyz) on 500 targets; 24 targets are noisy
    assert 0.25 < before < 0.9
    assert after < 0.03 and after < 0.1 * before
    assert res["mse_xyz_after"].mean() < 0.05
    # learning rate 0 gives no change
    res0 = eprop.evaluate(released, targets[:4], batch_size=4, eta=0.0)
    np.testing.assert_allclose(res0["mse_omega_after"], res0["mse_omega_before"], rtol=1e-6)



def test_learner_on_software_substrate_equals_tensor_path(released):
    """A software deployment with a placement rule runs task by task on a substrate (one MVM per step): the
    figures of the batched float path."""
    from pcmeta.hardware.deployment import Deployment, Placement

    targets = traj.sample_targets(2, rng=5)
    ref = eprop.evaluate(released, targets, batch_size=2)
    dep = Deployment("software-per-step", "software", placements=(Placement("*.W_out", "digital"),))
    sub_res = eprop.evaluate(released, targets, dep)
    for k in ("mse_omega_before", "mse_omega_after", "mse_xyz_after"):
        np.testing.assert_allclose(sub_res[k], ref[k], rtol=1e-4, atol=1e-7)



def test_learner_update_goes_through_the_substrate(released):
    from pcmeta.hardware import SoftwareSubstrate

    sub = SoftwareSubstrate()
    lr = eprop.EpropLearner(sub, released["W_in_trainee"], released["W_rec_trainee"], released["W_out_trainee"])
    assert set(lr.arrays) == {"W_in", "W_rec", "W_out"}
    assert torch.all(torch.diagonal(torch.as_tensor(lr.arrays["W_rec"].read())) == 0)
    dW_rec = torch.full((250, 250), 0.01)
    lr.update(torch.zeros(5, 250), dW_rec)
    W = torch.as_tensor(lr.arrays["W_rec"].read())
    assert torch.all(torch.diagonal(W) == 0)  # no self-connection is ever created
    off = ~torch.eye(250, dtype=torch.bool)
    torch.testing.assert_close(W[off], eprop.no_diag(released["W_rec_trainee"])[off] + 0.01)



def test_meta_gradient_flows_through_the_update(released):
    params = {k: v.detach().clone().double().requires_grad_(True) for k, v in released.items()}
    targets = traj.sample_targets(1, rng=3)
    loss, figs = eprop.meta_loss(params, targets)
    loss.backward()
    for k in eprop.PARAM_KEYS:
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
        lp = eprop.meta_loss({**params, "W_out_trainee": params["W_out_trainee"] + d}, targets)[0]
        lm = eprop.meta_loss({**params, "W_out_trainee": params["W_out_trainee"] - d}, targets)[0]
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



@pytest.mark.slow
def test_released_weights_reproduce_spec_table_500_targets(released):
    """Acceptance 2 (torch): SPEC section 2's table on 500 new targets, within 25 %."""
    targets = traj.sample_targets(500, rng=np.random.default_rng(0))
    res = eprop.evaluate(released, targets, batch_size=100)
    assert res["mse_omega_before"].mean() == pytest.approx(0.491, rel=0.25)
    assert res["mse_xyz_before"].mean() == pytest.approx(0.166, rel=0.25)
    assert res["mse_omega_after"].mean() == pytest.approx(0.0097, rel=0.25)
    assert res["mse_xyz_after"].mean() == pytest.approx(0.0158, rel=0.25)
    assert res["loss_after"].mean() == pytest.approx(0.0127, rel=0.25)
    rnd = eprop.evaluate(released, targets, batch_size=100, update_transform=eprop.round_to_grid)
    assert rnd["mse_omega_after"].mean() == pytest.approx(0.0405, rel=0.25)
    assert rnd["mse_xyz_after"].mean() == pytest.approx(0.0134, rel=0.25)



def test_shipped_weights_learn_within_1p5x_of_the_released(released, reference_dir, monkeypatch):
    """Acceptance 3: pcmeta's own meta-trained weights (package data, the default of load_weights / arm eval)
    reach a post-update loss within 1.5x of the released weights' on the same new targets."""
    assert eprop.SHIPPED_WEIGHTS.is_file()
    own = eprop.load_weights()
    assert not torch.equal(own["W_rec_lsg"], released["W_rec_lsg"])
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir))
    by_name = eprop.load_weights("authors")
    assert all(torch.equal(by_name[k], released[k]) for k in eprop.PARAM_KEYS)
    targets = traj.sample_targets(200, rng=np.random.default_rng(11))
    a, b = eprop.evaluate(own, targets, batch_size=100), eprop.evaluate(released, targets, batch_size=100)
    assert a["loss_before"].mean() == pytest.approx(b["loss_before"].mean(), rel=0.1)  # same untrained start
    assert a["loss_after"].mean() < 1.5 * b["loss_after"].mean(), (a["loss_after"].mean(), b["loss_after"].mean())
    assert a["loss_after"].mean() < 0.1 * a["loss_before"].mean()  # one update: over 10x lower



def test_eprop_agent_learns_in_the_arm_env(released):
    import gymnasium as gym

    env = gym.make("pcmeta.envs:pcmeta/ArmTrajectory-v0")
    try:
        env.reset(seed=0)
        tg = traj.sample_targets(1, rng=77)
        task = {"robot": tg.robot, "start": tg.start, "omega": tg.omega[0], "q": tg.q[0], "xyz": tg.xyz[0],
                "omega_path": tg.omega_path[0]}
        agent = eprop.EpropAgent(released)
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
        eprop.EpropAgent(released, engine="tensorflow")



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



def test_firing_stats_tell_a_healthy_lsg_from_a_broken_one(reference_dir):
    """`pcmeta arm eval --rates`: the released LSG has (almost) no silent or saturated neurons; with its input
    weights flipped and scaled x-5 (its recurrent balance broken) many neurons go silent and many saturate."""
    p = eprop.load_weights(reference_dir / "authors_arm_natural_eprop.npz")
    tg = traj.sample_targets(5, rng=np.random.default_rng(0))
    ok = eprop.firing_stats(p, tg)
    assert ok["lsg"]["neurons"] == 800 and ok["learner"]["neurons"] == 250
    assert ok["lsg"]["silent"] <= 5 and ok["lsg"]["saturated"] == 0 and 5 < ok["lsg"]["mean_hz"] < 20
    bad = eprop.firing_stats({**p, "W_in_lsg": -5 * p["W_in_lsg"]}, tg)["lsg"]
    assert bad["saturated"] > 100 and bad["silent"] > 50 and bad["mean_hz"] > 40



def test_voltage_regularization_separates_released_from_random_lsg(reference_dir):
    tg = traj.sample_targets(8, rng=np.random.default_rng(0))
    t = eprop.target_tensors(tg)
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float32)
    vals = []
    for p in (eprop.load_weights(reference_dir / "authors_arm_natural_eprop.npz"), eprop.init_params(0)):
        with torch.no_grad():
            ep = eprop.one_shot_episode(p, clock, t["x_lsg"], record_v=True, test=False)
            vals.append(float(eprop.voltage_regularization(ep["v_lsg"], ep["A_lsg"], ep["z_lsg"], eprop.LSG)))
    assert vals[0] < 5 < 50 < vals[1], vals
