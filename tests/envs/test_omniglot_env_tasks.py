"""``pcmeta/OmniglotFewShot-v0`` with portable task specs: exact images, replay from info, mismatches named."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import pcmeta.envs  # noqa: F401  (registers the ids)
from pcmeta.envs.omniglot import OmniglotFewShotEnv
from pcmeta.tasks.episodes import load_omniglot_task, omniglot_spec_indices, omniglot_tasks


@pytest.fixture(scope="module")
def task(omniglot_dir):
    return omniglot_tasks(1, n_way=5, k_shot=1, n_query=2, seed=7, data_dir=omniglot_dir)[0]


_ENVS: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _free_envs():
    yield
    _ENVS.clear()  # their class pools hold tens of MB each


def _env(omniglot_dir, **kw):
    """A 5-way 1-shot 2-query env (``kw`` changes that), one per configuration in this module."""
    key = tuple(sorted(kw.items()))
    if key not in _ENVS:
        _ENVS[key] = OmniglotFewShotEnv(**{"n_way": 5, "k_shot": 1, "n_query": 2, "data_dir": str(omniglot_dir), **kw})
    env = _ENVS[key]
    env.set_task(None)
    return env


def test_env_shows_exactly_a_specs_images_in_its_order(omniglot_dir):
    env = _env(omniglot_dir)
    env.reset(seed=1)
    spec = json.loads(json.dumps(env.sample_tasks(1)[0]))
    assert spec["query_order"] != list(range(10))  # the env shuffles its queries
    t = load_omniglot_task(spec, omniglot_dir)
    obs, info = env.reset(options={"task": spec})
    assert info["task"] == spec
    np.testing.assert_array_equal(obs["support_images"][:, 0], t.support_x)
    np.testing.assert_array_equal(obs["support_labels"], t.support_y)
    for j in range(10):
        np.testing.assert_array_equal(obs["query_image"][0], t.query_x[j])
        obs, _, done, _, info = env.step(0)
        assert info["label"] == t.query_y[j] and info["task"] == spec
    assert done


def test_env_loads_an_omniglot_task_and_replays_from_info(omniglot_dir, task):
    env = gym.make("pcmeta/OmniglotFewShot-v0", n_way=5, k_shot=1, n_query=2, data_dir=str(omniglot_dir),
                   query_batch=True)
    env.unwrapped.set_task(task)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs["support_images"][:, 0], task.support_x)
    np.testing.assert_array_equal(obs["query_images"][:, 0], task.query_x)
    _, reward, _, _, step_info = env.step(task.query_y)
    assert reward == 1.0 and np.array_equal(step_info["labels"], task.query_y)
    assert info["task"] == task.spec
    other = _env(omniglot_dir, query_batch=True)  # another env (as another process would) replays the episode
    obs2, _ = other.reset(options={"task": json.loads(json.dumps(info["task"]))})
    np.testing.assert_array_equal(obs2["query_images"], obs["query_images"])
    with pytest.raises(ValueError, match="has no spec"):
        env.unwrapped.set_task(task.without_answers())
    env.close()


def test_classic_rotations_survive_the_spec(omniglot_dir):
    env = _env(omniglot_dir, split="classic")
    obs, info = env.reset(seed=5)
    assert {c["rotation"] for s in env.sample_tasks(4) for c in s["classes"]} - {0}  # rotations are classes
    env2 = _env(omniglot_dir, split="classic", query_batch=True)
    obs2, _ = env2.reset(options={"task": json.loads(json.dumps(info["task"]))})
    np.testing.assert_array_equal(obs2["support_images"], obs["support_images"])


@pytest.mark.parametrize("kw, msg", [
    (dict(part="train"), r"task is from split 'paper' part 'test' .* but this env draws from split 'paper' part "
                         r"'train' .*: part differs; make the env with part='test'"),
    (dict(split="classic"), r"split, part differ|split differs"),
    (dict(n_way=10), r"n_way differs; make the env with n_way=5"),
    (dict(k_shot=2), r"k_shot differs; make the env with k_shot=1"),
    (dict(n_query=3), r"n_query differs; make the env with n_query=2"),
])
def test_mismatched_task_is_refused_naming_the_field(omniglot_dir, task, kw, msg):
    env = _env(omniglot_dir, **kw)
    for load in (env.set_task, lambda t: env.reset(options={"task": t})):
        with pytest.raises(ValueError, match=msg):
            load(task)
        with pytest.raises(ValueError, match=msg):
            load(task.spec)


def test_unknown_character_is_refused(omniglot_dir, task):
    spec = json.loads(json.dumps(task.spec))
    spec["classes"][2]["alphabet"] = "Klingon"
    with pytest.raises(ValueError, match=r"class 2 names character 'Klingon/character\d+'"):
        _env(omniglot_dir).set_task(spec)


def test_index_task_lengths_are_checked_against_the_env(omniglot_dir, task):
    env = _env(omniglot_dir)
    idx = omniglot_spec_indices(env.pool, task.spec)
    env.set_task(idx)  # the legacy index dict still works
    obs, info = env.reset()
    np.testing.assert_array_equal(obs["support_images"][:, 0], task.support_x)
    assert info["task"] == task.spec
    big = _env(omniglot_dir, n_way=10)
    with pytest.raises(ValueError, match=r"task has 5 classes but this env is 10-way .*make the env with n_way=5"):
        big.set_task(idx)
    with pytest.raises(ValueError, match=r"each of the 5 classes needs k_shot \+ n_query = 4 drawings"):
        _env(omniglot_dir, k_shot=2).set_task(idx)
    with pytest.raises(ValueError, match=r"11 entries in query_order .* n_way \* n_query = 10"):
        env.set_task(dict(idx, query_order=list(range(11))))
