"""examples/arm_task_gradients.py: the per-task gradients add up to the run's batch gradient (the batch's rate
term aside), on the run's own targets and settings."""

import numpy as np
import pytest

from pcmeta.agents import eprop


def test_per_task_gradients_of_a_run(tmp_path, capsys, load_example):
    run = tmp_path / "run"
    eprop.meta_train(run, 2, batch=3, checkpoint_every=2, seed=4, progress=False, voltage_reg=0.0)
    mod = load_example("arm_task_gradients")
    it, norms, losses = mod.task_gradients(run, None, 3)
    assert it == 2 and norms.shape == (3, len(eprop.PARAM_KEYS)) and np.all(norms[:, :5] > 0)
    # the task losses are the batch's: their mean is the loss the run logs for that batch after one more step
    hist = eprop.meta_train(run, 3, resume=True, batch=3, checkpoint_every=3, seed=4, progress=False,
                            voltage_reg=0.0)["history"]
    assert hist[-1]["iteration"] == 2 and losses.mean() == pytest.approx(hist[-1]["loss"], rel=1e-5)
    assert mod.main(["--run", str(run), "--iteration", "0", "--tasks", "2", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "batch of iteration 0, 2 tasks one at a time" in out and "| W_in_lsg |" in out and "(median)" in out
    with pytest.raises(SystemExit):
        mod.main(["--run", str(run), "--tasks", "1"])
