"""MAMLAgent behind the Agent protocol: deploy, adapt (as the model's config says), predict, reset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.agents.maml import MAML, WEIGHTS_DIR, MAMLAgent, evaluate
from pcmeta.hardware import SoftwareSubstrate
from pcmeta.tasks.episodes import OmniglotTask
from pcmeta.tasks.omniglot import TaskSampler, class_pool


def _tasks(batch) -> list[OmniglotTask]:
    return [OmniglotTask(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t], n_way=5)
            for t in range(batch.support_x.shape[0])]


@pytest.fixture(scope="module")
def classic():
    return MAML.from_weights(WEIGHTS_DIR / "classic_5w1s.npz")


@pytest.fixture(scope="module")
def paper():
    return MAML.from_weights(WEIGHTS_DIR / "paper_5w5s.npz")


def test_classic_agent_through_the_protocol_scores_as_evaluate(classic, omniglot_dir):
    """classic_5w1s adapts every layer (3 steps, lr 0.4): through deploy/reset/adapt/predict on 100 classic test
    tasks (1 shot, 1 query per class) it scores within 1 point of maml.evaluate on the same tasks (the env loop
    once adapted the readout only: 31.6 %)."""
    from pcmeta.agents.evaluation import evaluate as run
    from pcmeta.agents.protocol import Agent
    from pcmeta.hardware import Deployment

    pool = class_pool("classic", "test", omniglot_dir)
    want = evaluate(classic, TaskSampler(pool, 5, 1, 1, seed=0), 100, batch=100)
    tasks = _tasks(TaskSampler(pool, 5, 1, 1, seed=0).sample(100))
    agent = MAMLAgent(classic)
    assert isinstance(agent, Agent)
    res = run(agent, tasks, deployment=Deployment.preset("software", family="omniglot"), seed=0)
    assert want.mean() > 0.97
    assert abs(res.mean - want.mean()) <= 0.01, (res.mean, want.mean())


def test_adapting_every_layer_on_a_chip_is_refused(classic):
    from pcmeta.hardware import Deployment, PCMSubstrate

    with pytest.raises(ValueError, match="adapt='all'.*not supported"):
        MAMLAgent(classic).deploy(Deployment.preset("pcm", family="omniglot"))
    with pytest.raises(ValueError, match="not supported"):
        MAMLAgent(classic, substrate=PCMSubstrate())


def test_classic_adapts_every_layer_and_reset_restores_them(classic, omniglot_dir):
    """adapt() changes the conv layers, batch-norm and readout as the model's inner loop does (adapt_params);
    reset() brings back the meta-learned values."""
    from pcmeta.agents.maml import forward
    from pcmeta.agents.maml.inner import adapt_params

    pool = class_pool("classic", "test", omniglot_dir)
    b = TaskSampler(pool, 5, 1, 3, seed=1).sample(1)
    task = _tasks(b)[0]
    agent = MAMLAgent(classic)
    before = {k: v.clone() for k, v in agent.deployed.weights().items()}
    agent.adapt(task)
    sx, sy, qx, _ = b.torch()
    ad = adapt_params({k: v.detach() for k, v in classic.params.items()}, sx, sy, classic.cfg)
    now = agent.deployed.weights()
    for k in before:
        torch.testing.assert_close(now[k], ad[k][0], atol=1e-6, rtol=1e-5)
        assert not torch.equal(now[k], before[k]), k
    with torch.no_grad():
        want = forward({k: v[0] for k, v in ad.items()}, qx[0], classic.cfg)
    torch.testing.assert_close(torch.as_tensor(agent.predict(task)), want, atol=1e-4, rtol=1e-4)
    agent.reset()
    for k, v in agent.deployed.weights().items():
        assert torch.equal(v, before[k]), k


def test_head_agent_batch_statistics_and_reset(paper, omniglot_dir):
    """The paper CNN adapts the readout on the substrate; several query images use their own batch statistics,
    a single one the support pass's; reset() re-places the meta-learned readout."""
    pool = class_pool("paper", "test", omniglot_dir)
    b = TaskSampler(pool, 5, 5, 5, seed=2).sample(1)
    task = _tasks(b)[0]
    sx, sy, qx, qy = b.torch()
    agent = MAMLAgent(paper)
    agent.adapt(task)
    assert agent.adaptations == 1
    ref = paper.deploy(SoftwareSubstrate())
    stats = ref.adapt(sx[0], sy[0])
    torch.testing.assert_close(torch.as_tensor(agent.predict(task)), ref.predict(qx[0]))
    one = OmniglotTask(task.support_x, task.support_y, task.query_x[:1], n_way=5)
    torch.testing.assert_close(torch.as_tensor(agent.predict(one)), ref.predict(qx[0, :1], stats))
    assert (agent.predict(task).argmax(-1) == qy[0].numpy()).mean() > 0.8
    agent.reset()
    torch.testing.assert_close(agent.deployed.head.read(), paper.params["readout"].detach())
    with pytest.raises(RuntimeError, match="adapt"):
        agent.predict(one)


def test_head_agent_on_the_pcm_deployment(omniglot_dir):
    """The 4-bit weights on the default PCM deployment: on-chip readout updates, accuracy far above chance, and a
    query time after the adaptation gives every task a fresh chip."""
    from pcmeta.agents.evaluation import evaluate as run
    from pcmeta.hardware import Deployment

    model = MAML.from_weights(WEIGHTS_DIR / "paper_5w5s_4bit.npz")
    pool = class_pool("paper", "test", omniglot_dir)
    tasks = _tasks(TaskSampler(pool, 5, 5, 5, seed=3).sample(6))
    agent = MAMLAgent(model)
    dep = Deployment.preset("pcm", family="omniglot")
    res = run(agent, tasks, deployment=dep, seed=0)
    assert res.mean > 0.8
    assert agent.deployed.substrate.report()["programming_events"] > 0
    later = dep.with_(query_time_s=dep.time_s + 3600.0)
    res2 = run(agent, tasks[:3], deployment=later, seed=0)
    assert agent.deployed.substrate.seed == 2000 and np.isfinite(res2.mean)  # chips 0, 1, 2: seeds 0, 1000, 2000


def test_classic_agent_in_the_query_batch_env_scores_as_evaluate(classic, omniglot_dir, capsys):
    """The gym env loop with query_batch=True (all 5 queries in one step, so batch norm normalises over the
    query batch as maml.evaluate and `pcmeta omniglot eval` do) scores within 1 point of maml.evaluate on the
    SAME 100 classic test tasks (5-way 1-shot, 1 query per class): the env plays the sampler's tasks through
    set_task, and shows exactly the sampler's images. The one-query-per-step env (a single image is normalised
    with the support set's statistics) is reported too, for information."""
    from pcmeta.agents.protocol import OmniglotPolicy
    from pcmeta.envs.omniglot import OmniglotFewShotEnv

    pool = class_pool("classic", "test", omniglot_dir)
    want = evaluate(classic, TaskSampler(pool, 5, 1, 1, seed=0), 100, batch=100).mean()
    b = TaskSampler(pool, 5, 1, 1, seed=0).sample(100)
    rng = np.random.default_rng(0)
    tasks = [{"classes": b.classes[t].tolist(), "rotations": b.rotations[t].tolist(),
              "drawings": b.drawings[t].tolist(), "query_order": rng.permutation(5).tolist()} for t in range(100)]
    got = {}
    for query_batch in (True, False):
        env = OmniglotFewShotEnv(5, 1, 1, split="classic", part="test", data_dir=str(omniglot_dir),
                                 query_batch=query_batch)
        policy = OmniglotPolicy(MAMLAgent.from_weights("classic_5w1s"), n_way=5)
        accs = []
        for t, task in enumerate(tasks):
            env.unwrapped.set_task(task)
            obs, _ = env.reset()
            order = task["query_order"]
            np.testing.assert_array_equal(obs["support_images"], b.support_x[t])
            np.testing.assert_array_equal(obs["support_labels"], b.support_y[t])
            done, rewards, i = False, [], 0
            while not done:
                if query_batch:
                    np.testing.assert_array_equal(obs["query_images"], b.query_x[t][order])
                else:
                    np.testing.assert_array_equal(obs["query_image"], b.query_x[t][order[i]])
                obs, r, done, trunc, info = env.step(policy.act(obs))
                assert not trunc
                rewards.append(r)
                i += 1
            if query_batch:
                assert i == 1 and info["labels"].tolist() == b.query_y[t][order].tolist()
            else:
                assert i == 5
            accs.append(np.mean(rewards))
        env.close()
        assert policy.adaptations == 100
        got[query_batch] = float(np.mean(accs))
    with capsys.disabled():
        print(f"\n[classic_5w1s, 100 classic test tasks, 5-way 1-shot 1 query/class] maml.evaluate {want:.1%}, "
              f"env loop query_batch=True {got[True]:.1%}, env loop one query per step {got[False]:.1%}")
    assert want > 0.97
    assert abs(got[True] - want) <= 0.01, (got[True], want)
