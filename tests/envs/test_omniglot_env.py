"""pcmeta/OmniglotFewShot-v0: checker, random baseline, determinism, task API, bad input, MAML agent."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import pcmeta.envs  # noqa: F401  (registers the ids)
from pcmeta.envs import omniglot as omniglot_module
from pcmeta.envs.omniglot import MAX_EPISODE_STEPS, OmniglotFewShotEnv
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
    bad = dict(tasks[0], classes=[0, 1, 2, 3, 10_000])
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
