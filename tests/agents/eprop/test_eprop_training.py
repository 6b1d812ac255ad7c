"""Tests of meta-training (pcmeta.agents.eprop.training, .checkpoints): exact resume, best weights, the readout's
lr factor, the authors' training-time PCM model of the learning network, run summaries."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.hardware import authors_arm
from pcmeta.tasks import trajectories as traj


def test_meta_train_resume_is_exact(tmp_path):
    a = eprop.meta_train(tmp_path / "a", 3, batch=2, checkpoint_every=1, seed=5, progress=False)
    eprop.meta_train(tmp_path / "b", 2, batch=2, checkpoint_every=1, seed=5, progress=False)
    b = eprop.meta_train(tmp_path / "b", 3, batch=2, checkpoint_every=1, seed=5, resume=True, progress=False)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    pa = eprop.load_checkpoint_params(tmp_path / "a" / "checkpoint.pt")
    pb = eprop.load_checkpoint_params(tmp_path / "b" / "checkpoint.pt")
    for k in eprop.PARAM_KEYS:
        assert torch.equal(pa[k], pb[k]), k
    w = eprop.load_weights(tmp_path / "a" / "weights.npz")  # the released layout, loadable by arm eval
    assert torch.equal(w["W_rec_lsg"], pa["W_rec_lsg"])
    p0 = eprop.init_params(5)
    assert not torch.equal(p0["W_in_lsg"], pa["W_in_lsg"])  # the optimizer moved the weights
    c = eprop.meta_train(tmp_path / "c", 1, batch=1, resume=True, progress=False)  # no checkpoint: a new run
    assert c["resumed"] is None and c["iteration"] == 1 and b["resumed"] == 2



def test_meta_train_keeps_its_best_weights(tmp_path):
    """best_window=1: best.npz holds the weights after the iteration with the lowest loss (a fresh run
    stopped there writes the same weights.npz); a resumed run keeps best and threshold_gradient."""
    kw = dict(batch=2, checkpoint_every=1, seed=6, progress=False, best_window=1)
    a = eprop.meta_train(tmp_path / "a", 4, **kw)
    loss = [h["loss"] for h in a["history"]]
    k = int(np.argmin(loss))
    assert a["best"]["iteration"] == k + 1 and a["best"]["window_loss"] == pytest.approx(loss[k])
    eprop.meta_train(tmp_path / "b", k + 1, **kw)
    wa, wb = np.load(tmp_path / "a" / "best.npz"), np.load(tmp_path / "b" / "weights.npz")
    for key in eprop.PARAM_KEYS:
        np.testing.assert_array_equal(wa[key], wb[key])
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["threshold_gradient"] is False and ck["best"] == a["best"]
    with pytest.raises(ValueError, match="--threshold-gradient on differs from the run's off"):
        eprop.meta_train(tmp_path / "a", 5, resume=True, threshold_gradient=True, **kw)
    c = eprop.meta_train(tmp_path / "a", 5, resume=True, **kw)
    assert c["best"]["window_loss"] <= a["best"]["window_loss"]
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["threshold_gradient"] is False  # a resumed run keeps its setting
    with pytest.raises(ValueError, match="best_window"):
        eprop.meta_train(tmp_path / "d", 1, batch=1, best_window=0, progress=False)



def test_meta_train_readout_lr_factor(tmp_path):
    """The learning network's readout takes Adam steps of lr * readout_lr_factor (default 1): after one step
    every W_out_trainee entry moved by at most that (Adam's first step is lr * sign(g)), the other matrices by
    the full lr; the factor is kept in the checkpoint and a resumed run uses it."""
    lr = 1e-3
    eprop.meta_train(tmp_path / "a", 1, batch=1, lr=lr, seed=2, readout_lr_factor=0.25, progress=False)
    p0, p1 = eprop.init_params(2), eprop.load_checkpoint_params(tmp_path / "a" / "checkpoint.pt")
    d_out = (p1["W_out_trainee"] - p0["W_out_trainee"]).abs().max().item()
    d_rec = (p1["W_rec_trainee"] - p0["W_rec_trainee"]).abs().max().item()
    assert d_out == pytest.approx(lr * 0.25, rel=1e-3)
    assert d_rec == pytest.approx(lr, rel=1e-3)
    assert eprop.READOUT_LR_FACTOR == 1.0
    eprop.meta_train(tmp_path / "b", 1, batch=1, lr=lr, seed=2, readout_lr_factor=1.0, progress=False)
    with pytest.raises(ValueError, match="--readout-lr-factor 0.5 differs from the run's 1"):
        eprop.meta_train(tmp_path / "b", 2, batch=1, lr=lr, seed=2, readout_lr_factor=0.5, resume=True,
                       progress=False)
    r = eprop.meta_train(tmp_path / "b", 2, batch=1, lr=lr, seed=2, resume=True, progress=False)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["readout_lr_factor"] == 1.0 and r["iteration"] == 2  # the run's own factor
    with pytest.raises(ValueError, match="readout_lr_factor"):
        eprop.meta_train(tmp_path / "c", 1, batch=1, readout_lr_factor=0.0, progress=False)



def test_authors_training_weights_statistics_and_gradient():
    """Programming as the authors' training code: value ~ W 32^-nu + U(-0.01, 0.01) (nu per weight and task),
    one draw per task, gradient 32^-nu (clips are straight-through)."""
    torch.manual_seed(0)
    W = torch.full((200, 250), 0.5, requires_grad=True)
    w = authors_arm.training_weights(W, 4)
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
    :class:`~pcmeta.hardware.authors_arm.AuthorsArmSubstrate`'s reads (the evaluation model), for weights whose
    noisy reads stay positive."""
    sub = authors_arm.AuthorsArmSubstrate(seed=0)
    for w0 in (0.05, 0.3, 0.9):
        w = torch.full((100_000,), w0, dtype=torch.float64)
        reads = sub.noisy_read(w)
        var = authors_arm.read_var(w)
        assert float(reads.var()) == pytest.approx(float(var[0]), rel=0.03), w0



def test_authors_training_reprogram_rounds_and_reprograms_only_changed_weights():
    torch.manual_seed(1)
    w = torch.full((2, 50, 40), 0.25, dtype=torch.float64)
    dW = torch.zeros_like(w)
    dW[:, :10] = 0.02     # under half a step (1/32): rounded to 0, untouched
    dW[:, 10:20] = 0.05   # rounded to 1/16: re-programmed
    dW.requires_grad_(True)
    out = authors_arm.training_reprogram(w, dW)
    assert torch.equal(out[:, :10].detach(), w[:, :10]) and torch.equal(out[:, 20:].detach(), w[:, 20:])
    changed = out[:, 10:20].detach()
    assert float((changed - (0.25 + 1 / 16)).abs().max()) > 0  # programming noise and drift
    assert 0.2 < float(changed.mean()) < 0.3125  # drifted below the target 0.3125
    out.sum().backward()
    assert torch.equal(dW.grad[:, :10], torch.ones_like(dW.grad[:, :10]))  # straight-through
    assert float(dW.grad[:, 10:20].max()) < 1.0  # the fresh drift factor



def test_authors_arm_pcm_model():
    sub = authors_arm.AuthorsArmSubstrate(seed=0)
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



def test_trainee_noise_model_reproduces_the_authors_pcm_reference(reference_dir):
    """The released weights under the training-time PCM model lose about as much as under the authors' PCM
    evaluation model (SPEC: 0.109 on 500 targets), against 0.0127 in float."""
    w = eprop.load_weights(reference_dir / "authors_arm_natural_eprop.npz")
    tg = traj.sample_targets(40, rng=np.random.default_rng(3))
    t = eprop.target_tensors(tg)
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        flt = float(eprop.meta_loss_tensors(w, clock, t, robot=tg.robot)[1]["loss"])
        noisy = float(eprop.meta_loss_tensors(w, clock, t, robot=tg.robot, trainee_noise="authors")[1]["loss"])
    assert flt < 0.03 and 0.07 < noisy < 0.16, (flt, noisy)
    with pytest.raises(ValueError, match="trainee_noise"):
        eprop.meta_loss_tensors(w, clock, t, robot=tg.robot, trainee_noise="pcm")



def test_meta_train_with_trainee_noise_resumes_exactly(tmp_path):
    kw = dict(batch=2, checkpoint_every=1, seed=4, progress=False, trainee_noise="authors")
    a = eprop.meta_train(tmp_path / "a", 2, **kw)
    eprop.meta_train(tmp_path / "b", 1, **kw)
    b = eprop.meta_train(tmp_path / "b", 2, resume=True, **kw)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["trainee_noise"] == "authors"



def test_arm_runs_summarises_meta_training_runs(tmp_path, capsys):
    from pcmeta.demos.cli import main

    eprop.meta_train(tmp_path / "a", 4, batch=1, checkpoint_every=2, seed=1, progress=False, voltage_reg=1e-3)
    s = eprop.run_summary(tmp_path / "a", window=2)
    assert s["iterations"] == 4 and list(s["loss_windows"]) == ["0-2", "2-4"]
    assert s["config"]["voltage_reg"] == 1e-3 and s["config"]["detach_reset"] is False
    assert s["max_grad_norm"] > 0 and s["firing"]["lsg"]["neurons"] == 800
    assert len(s["curve"]["loss"]) == 4 and len(s["curve"]["grad_norm"]) == 4 and len(s["curve"]["reg"]) == 4
    assert s["collapse"] is None and 0 < s["curve"]["rate_lsg_hz"][0] < 200 and 0 <= s["clipped"] <= 4
    assert main(["arm", "runs", str(tmp_path / "a"), "--window", "2", "--json", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "runs.png")]) == 0
    assert (tmp_path / "runs.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "voltage_reg=0.001" in out and "| 4 |" in out and "collapse at" in out
    assert json.loads((tmp_path / "r.json").read_text())["runs"][0]["iterations"] == 4
    with pytest.raises(FileNotFoundError):
        eprop.run_summary(tmp_path / "missing")


def test_slim_checkpoint_keeps_the_tail_and_the_csv_log_the_whole_curve(tmp_path):
    from pcmeta.agents.eprop.checkpoints import read_history

    run = tmp_path / "slim"
    eprop.meta_train(run, 4, batch=1, checkpoint_every=2, seed=1, progress=False, slim_checkpoint=True,
                     best_window=2)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert [h["iteration"] for h in ck["history"]] == [2, 3]
    # a line cut by a kill after the checkpoint, then a resume: the log keeps exactly iterations 0..5
    with open(run / "history.csv", "a") as f:
        f.write("4,0.5,0.1")
    res = eprop.meta_train(run, 6, batch=1, checkpoint_every=2, seed=1, progress=False, slim_checkpoint=True,
                           best_window=2, resume=True)
    assert res["resumed"] == 4
    rows = read_history(run / "history.csv")
    assert [r["iteration"] for r in rows] == list(range(6)) and all(r["loss"] > 0 for r in rows)
    full = tmp_path / "full"
    eprop.meta_train(full, 6, batch=1, checkpoint_every=2, seed=1, progress=False, best_window=2)
    ref = torch.load(full / "checkpoint.pt", weights_only=False)["history"]
    assert [r["loss"] for r in rows] == pytest.approx([h["loss"] for h in ref], rel=1e-6)
    assert eprop.run_summary(run, window=2)["loss_windows"] == eprop.run_summary(full, window=2)["loss_windows"]


def test_clip_gradients_cuts_outliers_relative_to_the_median_norm():
    from pcmeta.agents.eprop.clipping import CLIP_WINDOW, clip_gradients

    norms = torch.full((CLIP_WINDOW,), math.nan)
    g = [torch.tensor([6.0, 8.0]), None]  # norm 10
    assert float(clip_gradients(g, norms, 0, None, 3.0)[0]) == pytest.approx(10.0)
    assert torch.equal(g[0], torch.tensor([6.0, 8.0]))  # fewer than 10 norms known: no relative limit yet
    assert float(norms[0]) == pytest.approx(10.0)
    norms[:] = 1.0
    norms[:5] = 100.0  # a few outliers do not move the median
    g = [torch.tensor([6.0, 8.0])]
    assert float(clip_gradients(g, norms, 57, None, 3.0)[0]) == pytest.approx(10.0)
    assert float(g[0].norm()) == pytest.approx(3.0, rel=1e-5) and float(norms[57 % CLIP_WINDOW]) == pytest.approx(10.0)
    g = [torch.tensor([1.2, 1.6])]  # norm 2 <= 3 x median: untouched
    clip_gradients(g, norms, 58, None, 3.0)
    assert torch.equal(g[0], torch.tensor([1.2, 1.6]))
    g = [torch.tensor([6.0, 8.0])]  # both limits: the lower one
    clip_gradients(g, norms, 59, 2.0, 3.0)
    assert float(g[0].norm()) == pytest.approx(2.0, rel=1e-5)
    g = [torch.tensor([6.0, 8.0])]
    clip_gradients(g, norms, 60, None, None)
    assert torch.equal(g[0], torch.tensor([6.0, 8.0]))
    # before 10 norms are known, the calibration norms (measured at the initial weights) set the limit
    fresh, calibration = torch.full((CLIP_WINDOW,), math.nan), torch.tensor([1.0] * 9 + [1e6])
    g = [torch.tensor([6.0e5, 8.0e5])]  # a first gradient of norm 1e6
    assert float(clip_gradients(g, fresh, 0, None, 3.0, calibration)[0]) == pytest.approx(1e6)
    assert float(g[0].norm()) == pytest.approx(3.0, rel=1e-5)
    fresh[:10] = 100.0  # ten known: the window's median from here on
    g = [torch.tensor([6.0, 8.0])]
    clip_gradients(g, fresh, 10, None, 3.0, calibration)
    assert torch.equal(g[0], torch.tensor([6.0, 8.0]))
    # above skip x the median: zeroed and flagged (the caller takes no step); below it: clipped, not flagged
    norms[:] = 1.0
    g = [torch.tensor([6.0, 8.0])]
    norm, skipped = clip_gradients(g, norms, 61, None, 3.0, None, 5.0)
    assert float(norm) == pytest.approx(10.0) and bool(skipped) and not g[0].any()
    assert float(norms[61 % CLIP_WINDOW]) == pytest.approx(10.0)  # the skipped norm enters the window
    g = [torch.tensor([2.4, 3.2])]  # norm 4: clipped to 3, not skipped
    assert not bool(clip_gradients(g, norms, 62, None, 3.0, None, 5.0)[1])
    assert float(g[0].norm()) == pytest.approx(3.0, rel=1e-5)


def test_relative_clip_is_the_default_and_resumes_exactly(tmp_path):
    """With the clip at the median (1x) it acts on about half the iterations from the 11th on; its window of
    norms is part of the checkpoint, so a resumed run continues the same curve."""
    kw = dict(batch=1, checkpoint_every=1, seed=2, progress=False, clip_grad_relative=1.0)
    a = eprop.meta_train(tmp_path / "a", 13, **kw)
    eprop.meta_train(tmp_path / "b", 11, **kw)
    b = eprop.meta_train(tmp_path / "b", 13, resume=True, **kw)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    pa = eprop.load_checkpoint_params(tmp_path / "a" / "checkpoint.pt")
    pb = eprop.load_checkpoint_params(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(pa[k], pb[k]) for k in eprop.PARAM_KEYS)
    off = eprop.meta_train(tmp_path / "off", 13, **{**kw, "clip_grad_relative": None, "skip_grad_relative": None})
    assert [h["loss"] for h in off["history"][:11]] == [h["loss"] for h in a["history"][:11]]
    assert off["history"][12]["loss"] != a["history"][12]["loss"]  # the clip acted from iteration 10 on
    o = eprop.MetaTrainOptions()
    assert (o.clip_grad_relative, o.skip_grad_relative, o.voltage_reg) == (3.0, 10.0, 1e-3)  # the default recipe
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ck["clip_calibration"].shape == (10,) and torch.isfinite(ck["clip_calibration"]).all()
    # the first calibration batch is iteration 0's batch at the same (initial) weights: the same norm
    assert float(ck["clip_calibration"][0]) == pytest.approx(a["history"][0]["grad_norm"], rel=1e-6)
    assert not torch.isfinite(torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=False)
                              ["clip_calibration"]).any()  # no relative clip: no calibration
    with pytest.raises(ValueError, match="clip_grad_relative"):
        eprop.meta_train(tmp_path / "bad", 1, **{**kw, "clip_grad_relative": 0.5})
    from pcmeta.runs import RunFolderError

    with pytest.raises(RunFolderError, match="--clip-grad-relative 3 differs from the run's 1"):  # a resumed run
        eprop.meta_train(tmp_path / "a", 14, resume=True, **{**kw, "clip_grad_relative": 3.0})


def test_skipped_gradients_take_no_adam_step(tmp_path):
    """With the skip at the median (1x) the iterations whose norm is above the median of the earlier ones take no
    step: Adam's step count is the iterations less the skipped ones, which run_summary counts from the log."""
    run = tmp_path / "r"
    eprop.meta_train(run, 16, batch=1, checkpoint_every=16, seed=2, progress=False, skip_grad_relative=1.0)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    steps = {float(st["step"]) for st in ck["optimizer"]["state"].values()}
    skipped = eprop.run_summary(run, window=4)["skipped"]
    assert skipped >= 1 and steps == {16.0 - skipped}
    with pytest.raises(ValueError, match="skip_grad_relative"):
        eprop.meta_train(tmp_path / "bad", 1, batch=1, progress=False, skip_grad_relative=0.5)


def test_clip_grad_relative_option_parses_off_and_refuses_below_one():
    import argparse

    from pcmeta.demos.cli_snn import _relative_clip

    assert _relative_clip("off") is None and _relative_clip("2.5") == 2.5
    for bad in ("0.5", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="'off' or a finite number >= 1"):
            _relative_clip(bad)


def test_find_collapse_marks_a_lasting_jump_of_the_moving_mean_loss():
    falling = np.linspace(0.3, 0.02, 1500)
    assert eprop.find_collapse(falling) is None
    jump = np.r_[np.linspace(0.3, 0.03, 1000), np.full(300, 0.2)]  # 100-it mean > 2 x its lowest from it 1030
    assert eprop.find_collapse(jump) == 1030
    spike = falling.copy()
    spike[700] = 5.0  # one bad batch moves the 100-iteration mean by 0.05, not 2x
    assert eprop.find_collapse(spike) is None
    assert eprop.find_collapse([0.1] * 150) is None  # too short to tell


def test_clipped_iterations_counts_norms_above_the_relative_limit():
    from pcmeta.agents.eprop.checkpoints import clipped_iterations

    h = [{"grad_norm": 1.0}] * 30 + [{"grad_norm": 3.5}, {"grad_norm": 2.9}]
    assert clipped_iterations(h, 3.0) == 1 and clipped_iterations(h, None) is None
    first = [{"grad_norm": 1e6}] + [{"grad_norm": 1.0}] * 12
    assert clipped_iterations(first, 3.0) == 0  # no calibration known: the first 10 are not judged
    assert clipped_iterations(first, 3.0, [1.0] * 10) == 1
