"""pcmeta/OmniglotFewShot-v0: checker, random baseline, determinism, task API, bad input, MAML agent."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import pcmeta.envs  # noqa: F401  (registers the ids)
from pcmeta.envs import omniglot as omniglot_module
from pcmeta.envs.omniglot import MAX_EPISODE_STEPS, OmniglotFewShotEnv
from pcmeta.tasks.episodes import omniglot_spec_indices
from pcmeta.tasks.omniglot import N_DRAWINGS, OmniglotDataError, class_pool


@pytest.fixture
def env(omniglot_dir):
    e = gym.make("pcmeta/OmniglotFewShot-v0", n_way=5, k_shot=1, n_query=2, data_dir=str(omniglot_dir),
                 render_mode="rgb_array").unwrapped
    yield e
    e.close()


def test_check_env_passes(env):
    check_env(env)


def test_check_env_default_without_render_mode(omniglot_dir, monkeypatch):
    """The default check_env on a make'd env without render_mode (it makes one per declared mode)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    e = gym.make("pcmeta/OmniglotFewShot-v0", data_dir=str(omniglot_dir))
    check_env(e.unwrapped)
    e.close()


def test_max_episode_steps_never_cuts_an_episode(omniglot_dir):
    """Episodes end by termination after N * n_query steps; the registered limit lies above every
    episode any pool allows, so make's TimeLimit agrees with the env's own truncated=False."""
    assert gym.spec("pcmeta/OmniglotFewShot-v0").max_episode_steps == MAX_EPISODE_STEPS
    assert pcmeta.envs.MAX_EPISODE_STEPS["pcmeta/OmniglotFewShot-v0"] == MAX_EPISODE_STEPS
    longest = max(class_pool(split, part, omniglot_dir).n_classes
                  for split in ("paper", "classic") for part in ("train", "val", "test")) * (N_DRAWINGS - 1)
    assert longest == 4400 * 19 and longest < MAX_EPISODE_STEPS
    e = gym.make("pcmeta/OmniglotFewShot-v0", n_way=4, k_shot=1, n_query=3, data_dir=str(omniglot_dir))
    assert e.spec.max_episode_steps == MAX_EPISODE_STEPS and e.unwrapped.episode_length == 12
    for seed in range(2):
        e.reset(seed=seed)
        for i in range(12):
            _, _, term, trunc, _ = e.step(0)
            assert (term, trunc) == (i == 11, False)
    e.close()


def test_version_history_and_spec_in_docstring():
    doc = omniglot_module.__doc__
    assert "Version history" in doc and "- v0: initial version" in doc
    for word in ("Observation", "Action", "Reward", "Termination", "Truncation", "max_episode_steps"):
        assert word in doc
    assert "version history" in OmniglotFewShotEnv.__doc__


def test_gym_make_and_spaces(omniglot_dir):
    e = gym.make("pcmeta/OmniglotFewShot-v0", n_way=3, k_shot=2, n_query=1, data_dir=str(omniglot_dir))
    obs, info = e.reset(seed=0)
    assert obs["support_images"].shape == (6, 1, 28, 28) and obs["support_images"].dtype == np.float32
    assert obs["support_labels"].dtype == np.int64 and sorted(obs["support_labels"]) == [0, 0, 1, 1, 2, 2]
    assert obs["query_image"].shape == (1, 28, 28)
    assert e.action_space == gym.spaces.Discrete(3)
    assert info["queries"] == 3
    e.close()


def test_random_agent_scores_one_over_n(env):
    rng = np.random.default_rng(0)
    rewards = []
    env.reset(seed=1)
    while len(rewards) < 2000:
        env.reset()
        done = False
        while not done:
            _, r, done, trunc, info = env.step(int(rng.integers(5)))
            assert not trunc
            rewards.append(r)
    r = np.array(rewards[:2000])
    ci = 1.96 * r.std(ddof=1) / np.sqrt(r.size)
    assert abs(r.mean() - 0.2) <= ci


def test_episode_length_reward_and_info(env):
    obs, _ = env.reset(seed=5)
    acc, n = 0, 0
    for i in range(10):
        obs, r, term, trunc, info = env.step(0)
        n += 1
        acc += r
        assert r in (0.0, 1.0) and r == float(info["label"] == 0)
        assert info["accuracy"] == pytest.approx(acc / n)
        assert term == (i == 9)
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(0)


def test_deterministic_under_seed(env):
    a, _ = env.reset(seed=42)
    seq_a = [env.step(1)[4]["label"] for _ in range(10)]
    b, _ = env.reset(seed=42)
    seq_b = [env.step(1)[4]["label"] for _ in range(10)]
    np.testing.assert_array_equal(a["support_images"], b["support_images"])
    assert seq_a == seq_b
    c, _ = env.reset(seed=43)
    assert not np.array_equal(a["support_images"], c["support_images"])


def test_sample_tasks_and_set_task(env):
    env.reset(seed=0)
    tasks = env.sample_tasks(2)
    assert len(tasks) == 2 and tasks[0] != tasks[1]
    env.set_task(tasks[1])
    o1, i1 = env.reset()
    o2, i2 = env.reset(seed=123)
    np.testing.assert_array_equal(o1["support_images"], o2["support_images"])
    np.testing.assert_array_equal(o1["query_image"], o2["query_image"])
    assert i1["task"] == tasks[1]
    env.set_task(None)
    o3, _ = env.reset()
    assert not np.array_equal(o1["support_images"], o3["support_images"])
    with pytest.raises(ValueError, match="lacks"):
        env.set_task({"classes": [0, 1, 2, 3, 4]})
    bad = dict(omniglot_spec_indices(env.pool, tasks[0]), classes=[0, 1, 2, 3, 10_000])  # an index task
    with pytest.raises(ValueError, match="class indices"):
        env.set_task(bad)


def test_bad_actions_raise(env):
    env.reset(seed=0)
    for a in (5, -1, 2.5, "1", None):
        with pytest.raises(ValueError, match="Discrete\\(5\\)"):
            env.step(a)
    env.step(np.int64(4))  # numpy ints are fine


def test_bad_construction_raises(omniglot_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        OmniglotFewShotEnv(split="imagenet", data_dir=str(omniglot_dir))
    with pytest.raises(OmniglotDataError, match="Omniglot not found"):
        OmniglotFewShotEnv(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="render_mode"):
        OmniglotFewShotEnv(data_dir=str(omniglot_dir), render_mode="human")


def test_render_draws_support_and_query(env):
    obs, _ = env.reset(seed=0)
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 5 * 28 * 2
    # the first support image appears (2x upscaled) at the top left
    first = (obs["support_images"][0, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(img[4:4 + 56:2, 4:4 + 56:2, 0], first)


def test_maml_agent_with_released_weights(omniglot_dir, reference_dir):
    import torch

    from pcmeta.agents.maml import MAML, MAMLAgent

    torch.set_num_threads(1)
    agent = MAMLAgent(MAML.from_weights(reference_dir / "authors_omniglot_maml.npz"))
    e = OmniglotFewShotEnv(n_way=5, k_shot=5, n_query=5, data_dir=str(omniglot_dir))
    rewards = []
    for ep in range(12):
        obs, _ = e.reset(seed=ep)
        done = False
        while not done:
            obs, r, done, _, _ = e.step(agent.act(obs))
            rewards.append(r)
    assert agent.adaptations == 12  # once per support set
    assert np.mean(rewards) > 0.85


# ------------------------------------------------------------------ query_batch=True: all queries in one step
@pytest.fixture
def batch_env(omniglot_dir):
    e = gym.make("pcmeta/OmniglotFewShot-v0", n_way=5, k_shot=1, n_query=2, data_dir=str(omniglot_dir),
                 render_mode="rgb_array", query_batch=True).unwrapped
    yield e
    e.close()


def test_check_env_passes_query_batch(batch_env, omniglot_dir, monkeypatch):
    check_env(batch_env)
    monkeypatch.delenv("DISPLAY", raising=False)
    e = gym.make("pcmeta/OmniglotFewShot-v0", data_dir=str(omniglot_dir), query_batch=True)
    check_env(e.unwrapped)
    e.close()


def test_query_batch_default_is_off(env, omniglot_dir):
    assert env.query_batch is False and env.episode_length == 10
    assert "query_image" in env.observation_space.spaces and "query_images" not in env.observation_space.spaces
    with pytest.raises(ValueError, match="query_batch"):
        OmniglotFewShotEnv(data_dir=str(omniglot_dir), query_batch="yes")


def test_query_batch_one_step_answers_all_queries(batch_env, env):
    e = batch_env
    assert e.action_space == gym.spaces.MultiDiscrete([5] * 10) and e.episode_length == 1
    assert set(e.observation_space.spaces) == {"support_images", "support_labels", "query_images"}
    obs, info = e.reset(seed=3)
    assert obs["query_images"].shape == (10, 1, 28, 28) and obs["query_images"].dtype == np.float32
    assert info["queries"] == 10
    # the same task in the one-query-per-step env shows the same support set and the same queries in order
    env.set_task(info["task"])
    single, _ = env.reset()
    np.testing.assert_array_equal(single["support_images"], obs["support_images"])
    labels = []
    for i in range(10):
        np.testing.assert_array_equal(single["query_image"], obs["query_images"][i])
        single, _, _, _, inf = env.step(0)
        labels.append(inf["label"])
    action = np.array(labels)
    action[:3] = (action[:3] + 1) % 5  # 3 of 10 wrong
    obs2, r, term, trunc, inf = e.step(action)
    assert (term, trunc) == (True, False) and isinstance(r, float) and r == pytest.approx(0.7)
    assert inf["labels"].tolist() == labels and inf["correct"].tolist() == [False] * 3 + [True] * 7
    assert inf["accuracy"] == pytest.approx(0.7) and inf["queries_done"] == 10 and inf["task"] == info["task"]
    assert e.observation_space.contains(obs2)
    with pytest.raises(RuntimeError, match="terminated"):
        e.step(action)
    e.reset(seed=3)
    assert e.step(labels)[1] == 1.0  # a list of ints is fine


def test_query_batch_bad_actions_raise(batch_env):
    batch_env.reset(seed=0)
    for a in (0, np.int64(1), [0] * 9, np.zeros(11, np.int64), np.full(10, 5), np.full(10, -1),
              np.zeros(10, np.float32), [0.0] * 10, np.zeros((2, 5), np.int64), None, "0" * 10):
        with pytest.raises(ValueError, match="MultiDiscrete"):
            batch_env.step(a)
    batch_env.step(np.zeros(10, np.int32))  # any integer dtype


def test_query_batch_render_draws_support_and_all_queries(batch_env):
    obs, _ = batch_env.reset(seed=0)
    img = batch_env.render()
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[0] >= 5 * 28 * 2
    first = (obs["support_images"][0, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(img[4:4 + 56:2, 4:4 + 56:2, 0], first)
    x0 = 2 * (2 + 1 * 30 + 4)  # the queries' first column (2x upscaled), n_query = 2 per row
    for j in (0, 3, 9):
        y, x = 2 * (2 + (j // 2) * 30), x0 + 2 * (j % 2) * 30
        want = (obs["query_images"][j, 0] * 255).astype(np.uint8)
        np.testing.assert_array_equal(img[y:y + 56:2, x:x + 56:2, 0], want)
