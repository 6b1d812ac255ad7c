"""The spiking learner as a pcmeta agent (pcmeta.agents.eprop.agent): the Agent protocol (deploy, adapt, predict,
reset) on a Deployment gives the figures of a bare chip with the same seed and the weights clipped, in torch and
brian2, and eprop.evaluate's figures on the same chips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.agents.evaluation import evaluate as evaluate_agent
from pcmeta.agents.protocol import Agent
from pcmeta.hardware import PCMSubstrate, SoftwareSubstrate
from pcmeta.hardware.deployment import Deployment, Placement
from pcmeta.tasks import trajectories as traj
from pcmeta.tasks.episodes import ArmTask


@pytest.fixture(scope="module")
def released(reference_dir):
    return eprop.load_weights(reference_dir / "authors_arm_natural_eprop.npz")


def _tasks(n: int, seed: int) -> list[ArmTask]:
    tg = traj.sample_targets(n, rng=np.random.default_rng(seed))
    return [ArmTask.from_targets(tg, i) for i in range(n)]


def test_eprop_agent_is_an_agent(released):
    agent = eprop.EpropAgent(released)
    assert isinstance(agent, Agent)
    with pytest.raises(RuntimeError, match="adapt"):
        agent.predict(_tasks(1, 0)[0])
    with pytest.raises(TypeError, match="Deployment"):
        agent.deploy("pcm")


def _on_bare_chip(params, dep: Deployment, chip: int, task: ArmTask, digital_readout: bool = False) -> np.ndarray:
    """The test trial of ``task`` on a bare PCMSubstrate seeded ``chip`` with the deployment's config, the weights
    clipped by the learner itself (what the CLI did before deployments)."""
    sub = PCMSubstrate(dep.pcm_config(seed=chip))
    learner = eprop.EpropLearner(sub, params["W_in_trainee"], params["W_rec_trainee"], params["W_out_trainee"],
                                 clip=dep.clip, digital_readout=digital_readout)
    sub.elapse(dep.time_s)
    clock = torch.as_tensor(traj.clock_input(task.steps), dtype=torch.float32)
    x_lsg = torch.as_tensor(traj.lsg_input(task.xyz[None]), dtype=torch.float32)
    with torch.no_grad():
        ep = eprop.one_shot_episode(params, clock, x_lsg, learner=learner, test=False)
        learner.update(ep["dW_in"][0], ep["dW_rec"][0])
        return learner.trial(clock).y[0].double().numpy()


@pytest.mark.parametrize("dep_name", ["pcm", "paper"])
def test_deployment_gives_the_bare_chips(released, dep_name):
    """deploy(Deployment.preset(...), seed) runs task k on the chip seeded chip_seed(seed, k) = seed * 100003 + k,
    clipped and placed by the deployment: the answers of a bare chip, bit for bit."""
    tasks = _tasks(2, 5)
    dep = Deployment.preset(dep_name, family="arm")
    agent = eprop.EpropAgent(released)
    agent.deploy(dep, seed=3)
    for k, task in enumerate(tasks, start=1):
        agent.reset()
        agent.adapt(task.without_answers())
        new = agent.predict(task.without_answers())
        assert new.shape == (task.steps, 2) and new.dtype == np.float64
        assert np.array_equal(new, _on_bare_chip(released, dep, eprop.chip_seed(3, k), task))
    assert agent.chips == 2


def test_digital_readout_placement_is_the_plain_readout(released):
    """The placement rule *.W_out -> digital (--digital-readout) gives the figures of a learner that keeps its
    readout as a plain tensor."""
    task = _tasks(1, 6)[0]
    dep = Deployment.preset("pcm", family="arm")
    agent = eprop.EpropAgent(released)
    agent.deploy(dep.with_(placements=(Placement("*.W_out", "digital"),)), seed=0)
    agent.adapt(task)
    assert np.array_equal(agent.predict(task), _on_bare_chip(released, dep, 1, task, digital_readout=True))


def test_agent_matches_evaluate_on_a_deployment(released):
    """pcmeta.agents.evaluation's loop over the agent gives eprop.evaluate's losses on the same chips."""
    tg = traj.sample_targets(3, rng=np.random.default_rng(8))
    tasks = [ArmTask.from_targets(tg, i) for i in range(3)]
    dep = Deployment.preset("pcm", family="arm")
    res = evaluate_agent(eprop.EpropAgent(released), tasks, dep, seed=1)
    ref = eprop.evaluate(released, tg, dep, seed=1)
    np.testing.assert_allclose(res.values, ref["loss_after"], rtol=1e-5)
    with pytest.raises(ValueError, match="float weights"):
        eprop.evaluate(released, tg, dep, update_transform=eprop.round_to_grid)


def test_from_weights_and_engines(released, reference_dir, monkeypatch):
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir))
    agent = eprop.EpropAgent.from_weights("authors")
    assert all(torch.equal(agent.params[k], released[k]) for k in eprop.PARAM_KEYS)
    assert eprop.EpropAgent.from_weights().params["W_in_lsg"].dtype == torch.float32
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir / "nowhere"))
    with pytest.raises(FileNotFoundError, match="PCMETA_REFERENCE_DIR"):
        eprop.EpropAgent.from_weights("authors")
    with pytest.raises(ValueError, match="torch engine"):
        eprop.evaluate_brian2(released, traj.sample_targets(1, rng=0), Deployment.preset("authors-model", "arm"))


def test_reset_returns_to_the_meta_learned_weights(released):
    sub = SoftwareSubstrate()
    agent = eprop.EpropAgent(released, sub)
    task = _tasks(1, 2)[0]
    agent.adapt(task)
    assert len(sub.arrays) == 3
    after = agent.predict(task)
    np.testing.assert_array_equal(agent.predict(task), after)  # exact software: the same test trial again
    agent.reset()
    assert len(sub.arrays) == 0
    agent.adapt(task)  # adapting again starts from the meta-learned weights
    np.testing.assert_array_equal(agent.predict(task), after)
    agent.adapt(task)  # without a reset in between as well
    np.testing.assert_array_equal(agent.predict(task), after)
    assert len(sub.arrays) == 3
    out = agent.learn({"xyz": task.xyz, "start": task.start})
    np.testing.assert_array_equal(out["omega_test"], after)
    assert len(sub.arrays) == 0
    with pytest.raises(ValueError, match="xyz"):
        agent.adapt({"start": task.start})


def test_brian2_agent_equals_the_one_run_episode(released):
    """The brian2 engine's adapt (demonstration run + update on the chip) and predict (test run) give the
    one-run episode's outputs on the same chip."""
    p64 = {k: v.double() for k, v in released.items()}
    task = _tasks(1, 4)[0]
    agent = eprop.EpropAgent(p64, engine="brian2")
    agent.deploy(Deployment.preset("pcm", family="arm").with_(time_s="1d"), seed=2)
    agent.adapt(task)
    omega = agent.predict(task)
    clock, x_lsg = traj.clock_input(task.steps), traj.lsg_input(task.xyz[None])[0]
    chip = Deployment.preset("pcm", family="arm").with_(time_s="1d").build(2 * 100003 + 1)
    ep = agent.brian2.episode(x_lsg.astype(np.float64), clock.astype(np.float64), substrate=chip, settle_s=86400.0)
    np.testing.assert_allclose(omega, ep["omega_after"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(agent.demo["dW_rec"], ep["dW_rec"], rtol=0, atol=1e-15)
