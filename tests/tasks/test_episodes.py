"""Task dataclasses of the agent protocol: validation, answers hidden, prediction checks, task sets."""
import numpy as np
import pytest

from pcmeta.tasks.episodes import ArmTask, OmniglotTask, arm_tasks, omniglot_tasks


def _task(**kw):
    base = dict(support_x=np.zeros((10, 28, 28), np.float32), support_y=np.repeat(np.arange(5), 2),
                query_x=np.ones((3, 1, 28, 28)), query_y=[0, 4, 2], n_way=5)
    base.update(kw)
    return OmniglotTask(**base)


def test_omniglot_task_normalises_and_hides_answers():
    t = _task()
    assert t.query_x.shape == (3, 28, 28) and t.query_x.dtype == np.float32 and t.k_shot == 2
    assert t.without_answers().query_y is None and t.query_y.tolist() == [0, 4, 2]
    np.testing.assert_array_equal(t.check_prediction(np.eye(5)[:3]), np.eye(5)[:3])


@pytest.mark.parametrize("kw, msg", [
    (dict(support_x=np.zeros((10, 28, 27))), r"\(n, 28, 28\)"),
    (dict(support_x=np.full((10, 28, 28), 2.0)), r"in \[0, 1\]"),
    (dict(query_x=np.full((3, 28, 28), np.nan)), "NaN"),
    (dict(support_y=np.zeros(10, int)), "every label"),
    (dict(support_y=np.arange(9)), "9 labels for 10"),
    (dict(query_y=[0, 5, 1]), r"0\.\.4"),
    (dict(n_way=1), "n_way"),
    (dict(support_y=np.repeat(np.arange(5), 2).astype(float)), "integers"),
])
def test_bad_omniglot_tasks(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _task(**kw)


@pytest.mark.parametrize("answer, msg", [(np.ones((3, 4)), r"shape \(3, 5\)"), (np.full((3, 5), np.nan), "NaN"),
                                         ("abc", "expected")])
def test_bad_predictions_are_named(answer, msg):
    with pytest.raises(ValueError, match=msg):
        _task().check_prediction(answer)


def test_arm_tasks_match_the_cli_targets_and_hide_answers():
    from pcmeta.tasks import trajectories as traj

    tasks = arm_tasks(3, seed=4)
    ref = traj.sample_targets(3, rng=np.random.default_rng(4)).numpy()
    np.testing.assert_array_equal(tasks[2].xyz, ref.xyz[2])
    np.testing.assert_array_equal(tasks[2].omega, ref.omega[2])
    shown = tasks[0].without_answers()
    assert shown.omega is None and shown.q is None and shown.xyz is tasks[0].xyz
    env_task = tasks[0].as_env_task()
    assert env_task["q"].shape == (traj.T_STEPS, 2)
    with pytest.raises(ValueError, match=r"\(249, 2\)"):
        tasks[0].check_prediction(np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        ArmTask(xyz=np.zeros((5, 2)), start=np.zeros(2))


def test_omniglot_tasks_are_the_samplers_and_name_their_characters(omniglot_dir):
    from pcmeta.tasks.omniglot import TaskSampler, class_pool

    tasks = omniglot_tasks(3, 5, 1, 2, seed=7, data_dir=omniglot_dir)
    b = TaskSampler(class_pool("paper", "test", omniglot_dir), 5, 1, 2, seed=7).sample(3)
    np.testing.assert_array_equal(tasks[1].support_x, b.support_x[1, :, 0])
    np.testing.assert_array_equal(tasks[1].query_y, b.query_y[1])
    assert len(tasks[0].meta["characters"]) == 5 and tasks[0].meta["split"] == "paper"
