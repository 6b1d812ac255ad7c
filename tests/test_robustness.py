"""No lost runs (pcmeta.runs, used by both trainers and both train commands): a run folder holding another run
is refused unless --resume / --overwrite; a resumed run keeps its settings unless --allow-changed-settings; an
OS lock keeps a second process out and is taken over from a killed one; temporaries of killed writers are
removed; a non-finite loss, gradient or parameter stops training without writing that state; a checkpoint with
non-finite parameters is not resumed; a training killed (kill -9) at random moments and resumed ends with the
same weights, bit for bit, as an uninterrupted one."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcmeta import runs
from pcmeta.agents import eprop
from pcmeta.agents import maml as M
from pcmeta.agents.eprop import training as eprop_training
from pcmeta.demos.cli import build_parser, main

ARM = ["--iterations", "2", "--batch", "1", "--checkpoint-every", "1"]
OMNI = ["--preset", "paper-5w1s", "--meta-batch", "1", "--iterations", "3", "--checkpoint-every", "1",
        "--eval-every", "0", "--no-progress"]


def cli(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def arm_args(argv, **extra):
    """``arm train`` arguments as the parser gives them, with ``extra`` set afterwards (e.g. an ``lr`` that the
    parser itself refuses, to reach the trainer's own checks)."""
    args = build_parser().parse_args(["arm", "train", *map(str, argv)])
    args.argv = ["arm", "train", *map(str, argv)]
    for k, v in extra.items():
        setattr(args, k, v)
    return args


def run_arm(argv, **extra) -> int:
    from pcmeta.demos.arm_train import run_train

    return run_train(arm_args(argv, **extra))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != runs.LOCK_NAME}


def poison(ckpt: Path, key: str) -> None:
    ck = torch.load(ckpt, weights_only=True)
    ck["params"][key] = ck["params"][key].clone()
    ck["params"][key].view(-1)[0] = float("nan")
    torch.save(ck, ckpt)


def subprocess_env(omniglot_dir=None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if omniglot_dir is not None:
        env["PCMETA_DATA_DIR"] = str(omniglot_dir)
    return env


def wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 120.0, done_ok: bool = False) -> bool:
    """Until ``proc`` holds ``folder`` (its pid in the lock file): True; False if it ended with exit code 0
    first and ``done_ok``."""
    lock, t0 = folder / runs.LOCK_NAME, time.monotonic()
    while time.monotonic() - t0 < timeout:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return True
        if proc.poll() == 0 and done_ok:
            return False
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before it held {folder}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    raise AssertionError(f"{proc.pid} did not take {folder} within {timeout} s")


# ------------------------------------------------------------------------------------ another run in the folder
def test_arm_train_refuses_a_folder_holding_a_run_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    before = files_of(out)
    rc, _, err = cli(["arm", "train", "--out", out, *ARM], capsys)
    assert rc == 2 and f"{out} holds a run (checkpoint.pt, weights.npz, history.csv): pass --resume" in err
    assert err.count("\n") == 1 and files_of(out) == before  # one line, nothing touched
    # --overwrite deletes the run's own files (and says so), then starts again: the same run, the same bytes
    assert run_arm(["--out", out, *ARM], overwrite=True) == 0
    assert "--overwrite: deleted the previous run's checkpoint.pt, weights.npz, history.csv" in capsys.readouterr().err
    assert files_of(out)["weights.npz"] == before["weights.npz"]
    # ... but never files it did not write
    (out / "notes.txt").write_text("mine")
    before = files_of(out)
    with pytest.raises(runs.RunFolderError, match=r"other files \(notes.txt\); --overwrite deletes only"):
        run_arm(["--out", out, *ARM], overwrite=True)
    assert files_of(out) == before
    with pytest.raises(runs.RunFolderError, match="exclude each other"):
        run_arm(["--out", out, *ARM, "--resume"], overwrite=True)


def test_omniglot_train_refuses_a_run_overwrites_only_its_files(tmp_path, omniglot_dir, capsys):
    d = tmp_path / "run"
    base = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, *OMNI]
    assert cli(base, capsys)[0] == 0
    before = files_of(d)
    rc, _, err = cli(base, capsys)
    assert rc == 2 and f"{d} holds a run (ckpt.pt, train.log, weights.npz)" in err and files_of(d) == before
    rc, _, err = cli(base + ["--overwrite"], capsys)
    assert rc == 0 and "deleted the previous run's ckpt.pt, train.log, weights.npz" in err
    assert files_of(d)["weights.npz"] == before["weights.npz"]
    assert files_of(d)["train.log"].count(b"# start") == 1  # the old log went with the old run
    (d / "eval.json").write_text("{}")
    rc, _, err = cli(base + ["--overwrite"], capsys)
    assert rc == 2 and "other files (eval.json)" in err
    assert (d / "ckpt.pt").is_file() and (d / "eval.json").is_file()


def test_a_folder_without_a_run_is_used_as_it_is(tmp_path):
    (tmp_path / "README").write_text("x")
    with runs.open_run(tmp_path, ("checkpoint.pt",)) as r:
        assert r.deleted == []
    with runs.open_run(tmp_path, ("checkpoint.pt",), overwrite=True):
        pass
    assert (tmp_path / "README").is_file()


# ---------------------------------------------------------------------------------------- changed settings
def test_arm_resume_refuses_changed_settings_naming_each(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    before = files_of(out)
    rc, _, err = cli(["arm", "train", "--out", out, *ARM, "--resume", "--seed", "3", "--batch", "2", "--lr", "0.01",
                      "--trainee-noise", "authors", "--no-reset-gradient"], capsys)
    assert rc == 2 and files_of(out) == before and err.count("\n") == 1
    for part in ("--batch 2 differs from the run's 1", "--lr 0.01 differs from the run's 0.0015",
                 "--seed 3 differs from the run's 0", "--trainee-noise authors differs from the run's none",
                 "--no-reset-gradient (detach_reset) on differs from the run's off", "--allow-changed-settings"):
        assert part in err, part
    # settings that do not change the run may change: total iterations, checkpoint cadence, threads, best window
    rc, outp, _ = cli(["arm", "train", "--out", out, "--iterations", "3", "--batch", "1", "--checkpoint-every", "2",
                       "--threads", "1", "--best-window", "5", "--resume"], capsys)
    assert rc == 0 and "resumed" in outp and "at iteration 2" in outp
    # allowed changes are applied and recorded
    assert run_arm(["--out", out, "--iterations", "4", "--batch", "2", "--seed", "3", "--lr", "0.01", "--resume"],
                   allow_changed_settings=True) == 0
    assert "--allow-changed-settings: resuming" in capsys.readouterr().err
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["config"]["batch"] == 2 and ck["config"]["seed"] == 3 and ck["config"]["lr"] == 0.01
    assert ck["setting_changes"][0]["iteration"] == 3 and len(ck["setting_changes"][0]["changes"]) == 3
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]] == [0.01] * len(eprop.PARAM_KEYS)
    with pytest.raises(ValueError, match="goes with --resume"):
        run_arm(["--out", tmp_path / "new", *ARM], allow_changed_settings=True)


def test_omniglot_resume_refuses_changed_settings(tmp_path, omniglot_dir, capsys):
    d = tmp_path / "run"
    base = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, *OMNI]
    assert cli(base, capsys)[0] == 0
    before = files_of(d)
    rc, _, err = cli(base + ["--resume", "--seed", "3", "--meta-batch", "2", "--bits", "4"], capsys)
    assert rc == 2 and files_of(d) == before
    for part in ("--seed 3 differs from the run's 0", "--meta-batch 2 differs from the run's 1",
                 "--bits 4 differs from the run's none"):
        assert part in err, part
    rc, _, err = cli(base + ["--resume", "--preset", "paper-5w5s"], capsys)
    assert rc == 2 and "--preset (k_shot) 5 differs from the run's 1" in err
    # iterations, checkpoint and evaluation cadence, threads, progress may change
    more = [a if a != "3" else "4" for a in base]
    rc, out, _ = cli(more + ["--resume", "--checkpoint-every", "2", "--eval-every", "4", "--threads", "1"], capsys)
    assert rc == 0 and "resumed" in out and "at iteration 3" in out
    rc, out, err = cli([a if a != "3" else "5" for a in base] + ["--resume", "--meta-batch", "2",
                                                                 "--allow-changed-settings"], capsys)
    assert rc == 0 and "--meta-batch 2 differs from the run's 1" in err
    assert "changed settings: --meta-batch 2" in (d / "train.log").read_text()
    rc, _, err = cli(base + ["--allow-changed-settings"], capsys)
    assert rc == 2 and "goes with --resume" in err


# ------------------------------------------------------------------------------------------------ the lock
HOLD = ("import sys, time; from pcmeta.runs import open_run; r = open_run(sys.argv[1], ()); print('held', flush=True);"
        " time.sleep(120)")


def test_lock_refuses_a_second_process_and_is_taken_over_from_a_killed_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert (out / runs.LOCK_NAME).read_text().strip() == str(p.pid)
        before = files_of(out)
        rc, _, err = cli(["arm", "train", "--out", out, "--iterations", "3", "--batch", "1", "--resume"], capsys)
        assert rc == 2 and err == (f"pcmeta: error: {out} is in use by another training (pid {p.pid}); wait for it "
                                   "to end, or stop it and --resume\n")
        assert files_of(out) == before
        with pytest.raises(runs.RunFolderError, match=f"pid {p.pid}"):
            eprop.meta_train(out, 3, batch=1, resume=True, progress=False)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (out / runs.LOCK_NAME).read_text().strip() == str(p.pid)  # stale: its holder was killed
    rc, outp, _ = cli(["arm", "train", "--out", out, "--iterations", "3", "--batch", "1", "--resume"], capsys)
    assert rc == 0 and "at iteration 2" in outp
    assert (out / runs.LOCK_NAME).read_text() == ""  # released at the end


def test_two_omniglot_trainings_on_one_folder(tmp_path, omniglot_dir, capsys):
    """The reproduced case: a second ``omniglot train --resume`` while one runs is refused (it used to log the
    same iterations a second time)."""
    d = tmp_path / "run"
    argv = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, "--preset", "paper-5w1s", "--meta-batch",
            "1", "--iterations", "100000", "--checkpoint-every", "1", "--eval-every", "0", "--no-progress"]
    p = subprocess.Popen([sys.executable, "-m", "pcmeta", *map(str, argv)], env=subprocess_env(omniglot_dir),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lock(d, p)
        rc, _, err = cli(argv + ["--resume"], capsys)
        assert rc == 2 and f"{d} is in use by another training (pid {p.pid})" in err and err.count("\n") == 1
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    log = (d / "train.log").read_text()
    assert log.count("# start") == 1 and "# resume" not in log


def test_lock_in_one_process_and_release():
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        with runs.open_run(t, ()):
            with pytest.raises(runs.RunFolderError, match=f"pid {os.getpid()}"):
                runs.open_run(t, ())
        with runs.open_run(t, ()):
            pass


# ------------------------------------------------------------------------------------------------ temporaries
def test_temporaries_of_killed_writers_are_removed_on_start(tmp_path, omniglot_dir, monkeypatch, capsys):
    import pcmeta.files as files

    written = []
    real = files.atomic_write
    monkeypatch.setattr(files, "atomic_write", lambda path, w: written.append(Path(path).name) or real(path, w))
    out = tmp_path / "arm"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    assert written.count("checkpoint.pt") == 2  # unique temporaries, fsync'ed (pcmeta.files)
    junk = [".checkpoint.pt.x1.pcmeta-tmp", "weights.npz.tmp.npz", "best.npz.tmp.npz"]
    for n in junk:
        (out / n).write_bytes(b"half")
    assert cli(["arm", "train", "--out", out, "--iterations", "3", "--batch", "1", "--resume"], capsys)[0] == 0
    assert not any((out / n).exists() for n in junk)
    d = tmp_path / "omni"
    base = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, *OMNI]
    written.clear()
    assert cli(base, capsys)[0] == 0 and "ckpt.pt" in written
    junk = [".ckpt.pt.x1.pcmeta-tmp", ".ckpt.pt.abc.tmp", ".weights.npz.abc.tmp"]
    for n in junk:
        (d / n).write_bytes(b"half")
    assert cli(base + ["--resume"], capsys)[0] == 0
    assert not any((d / n).exists() for n in junk)
    assert (d / "other.tmp").write_text("x") and cli(base + ["--resume"], capsys)[0] == 0
    assert (d / "other.tmp").exists()  # only the writers' own temporaries


# ------------------------------------------------------------------------------------------------ non-finite
class BadGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _maml_trainer(d, omniglot_dir):
    cfg = M.preset("paper-5w1s", meta_batch=1, channels=8, iterations=4)
    return M.Trainer(cfg, d, omniglot_dir, seed=0, checkpoint_every=2, eval_every=0, log_every=1)


@pytest.mark.parametrize("what", ["loss", "gradient", "parameters"])
def test_maml_stops_on_non_finite_values_and_keeps_the_last_good_checkpoint(tmp_path, omniglot_dir, what):
    tr = _maml_trainer(tmp_path, omniglot_dir)
    tr.train(iterations=2, progress=False)
    good = files_of(tmp_path)
    real = tr.model.meta_loss
    if what == "loss":
        tr.model.meta_loss = lambda *a: (lambda la: (la[0] * float("nan"), la[1]))(real(*a))
    elif what == "gradient":
        tr.model.meta_loss = lambda *a: (lambda la: (BadGrad.apply(la[0]), la[1]))(real(*a))
    else:
        tr.opt.param_groups[0]["lr"] = float("inf")
    msg = {"loss": "iteration 3: non-finite loss (loss)", "gradient": "iteration 3: non-finite gradient (",
           "parameters": "iteration 3: non-finite parameters after the Adam step ("}[what]
    with pytest.raises(runs.NonFiniteError) as e:
        tr.train(progress=False)
    assert msg in str(e.value) and f"the last good checkpoint {tmp_path / 'ckpt.pt'} (iteration 2) is kept" in str(e.value)
    now = files_of(tmp_path)
    assert now["ckpt.pt"] == good["ckpt.pt"] and now["weights.npz"] == good["weights.npz"]
    assert "# stopped: iteration 3: non-finite" in now["train.log"].decode()


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_eprop_stops_on_non_finite_values_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, what):
    eprop.meta_train(tmp_path, 2, batch=1, checkpoint_every=1, progress=False)
    good = files_of(tmp_path)
    real = eprop_training.meta_loss_tensors

    def bad(*a, **k):
        loss, figs = real(*a, **k)
        if what == "loss":
            return loss * float("nan"), {**figs, "loss": figs["loss"] * float("nan")}
        return BadGrad.apply(loss), figs

    monkeypatch.setattr(eprop_training, "meta_loss_tensors", bad)
    with pytest.raises(runs.NonFiniteError, match=f"iteration 3: non-finite {what} .*the last good checkpoint "
                                                  r".*checkpoint.pt \(iteration 2\) is kept"):
        eprop.meta_train(tmp_path, 4, batch=1, checkpoint_every=1, progress=False, resume=True)
    assert files_of(tmp_path) == good


def test_train_commands_exit_non_zero_on_non_finite_parameters(tmp_path, omniglot_dir, capsys, monkeypatch):
    out = tmp_path / "arm"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    good = files_of(out)
    with pytest.raises(runs.NonFiniteError, match="iteration 3: non-finite parameters after the Adam step"):
        run_arm(["--out", out, "--iterations", "4", "--batch", "1", "--resume", "--allow-changed-settings"],
                lr=float("inf"))
    assert files_of(out) == good
    d = tmp_path / "omni"
    base = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, *OMNI]
    real = M.MAML.meta_loss
    monkeypatch.setattr(M.MAML, "meta_loss", lambda self, *a: (lambda la: (la[0] * float("inf"), la[1]))(
        real(self, *a)))
    rc, _, err = cli(base, capsys)
    assert rc == 2 and "iteration 1: non-finite loss (loss)" in err and "no checkpoint has been written yet" in err
    assert not (d / "ckpt.pt").exists()


def test_resume_refuses_a_checkpoint_with_non_finite_parameters(tmp_path, omniglot_dir, capsys):
    out = tmp_path / "arm"
    assert cli(["arm", "train", "--out", out, *ARM], capsys)[0] == 0
    poison(out / "checkpoint.pt", "W_rec_lsg")
    before = files_of(out)
    rc, _, err = cli(["arm", "train", "--out", out, "--iterations", "3", "--batch", "1", "--resume"], capsys)
    assert rc == 2 and f"{out / 'checkpoint.pt'} holds non-finite parameters (W_rec_lsg); refusing" in err
    assert files_of(out) == before
    d = tmp_path / "omni"
    base = ["omniglot", "train", "--run-dir", d, "--data-dir", omniglot_dir, *OMNI]
    assert cli(base, capsys)[0] == 0
    poison(d / "ckpt.pt", "conv2")
    before = files_of(d)
    rc, _, err = cli(base + ["--resume"], capsys)
    assert rc == 2 and f"{d / 'ckpt.pt'} holds non-finite parameters (conv2)" in err
    assert files_of(d) == before


# ------------------------------------------------------------------------------------------------ kill -9
def _kill_and_resume(argv: list, folder: Path, env: dict, kills: int, window_s: float) -> list[float]:
    """Start ``argv --resume`` and kill -9 it at a random moment (uniform in [0, window_s] s after it holds
    ``folder``), ``kills`` times; then run it to its end. Returns the moments of the kills that hit a running
    training (a training that had already ended is not counted). $PCMETA_KILL_SEED repeats a draw."""
    seed = int(os.environ.get("PCMETA_KILL_SEED", time.time_ns() % 2**32))
    rng, moments = random.Random(seed), []
    for _ in range(kills):
        p = subprocess.Popen([sys.executable, "-m", "pcmeta", *argv, "--resume"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if not wait_for_lock(folder, p, done_ok=True):
                break
            t = round(rng.uniform(0.0, window_s), 3)
            time.sleep(t)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        if p.returncode == -signal.SIGKILL:
            moments.append(t)
    done = subprocess.run([sys.executable, "-m", "pcmeta", *argv, "--resume"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, (seed, moments, done.stderr[-2000:])
    assert len(moments) >= 2, f"only {len(moments)} kills hit a running training (seed {seed}): make it longer"
    print(f"kill -9 at {moments} s after the lock (PCMETA_KILL_SEED={seed})")
    return moments


def _assert_no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith((".pcmeta-tmp", ".tmp", ".tmp.npz"))]


@pytest.mark.slow
def test_arm_train_killed_at_random_moments_resumes_bit_for_bit(tmp_path):
    argv = ["arm", "train", "--iterations", "6", "--batch", "1", "--checkpoint-every", "1", "--best-window", "2"]
    env = subprocess_env()
    ref = subprocess.run([sys.executable, "-m", "pcmeta", *argv, "--out", str(tmp_path / "ref")], env=env,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    moments = _kill_and_resume(argv + ["--out", str(tmp_path / "run")], tmp_path / "run", env, 3, 2.5)
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True) for n in ("ref", "run"))
    assert a["iteration"] == b["iteration"] == 6, moments
    for k in eprop.PARAM_KEYS:
        assert torch.equal(a["params"][k], b["params"][k]), (k, moments)
    assert a["history"] == b["history"] and a["best"] == b["best"], moments
    for n in ("weights.npz", "best.npz"):
        assert (tmp_path / "ref" / n).read_bytes() == (tmp_path / "run" / n).read_bytes(), (n, moments)
    _assert_no_temporaries(tmp_path / "run")


@pytest.mark.slow
def test_omniglot_train_killed_at_random_moments_resumes_bit_for_bit(tmp_path, omniglot_dir):
    argv = ["omniglot", "train", "--preset", "paper-5w1s", "--meta-batch", "1", "--iterations", "120",
            "--checkpoint-every", "1", "--eval-every", "0", "--no-progress"]
    env = subprocess_env(omniglot_dir)
    ref = subprocess.run([sys.executable, "-m", "pcmeta", *argv, "--run-dir", str(tmp_path / "ref")], env=env,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    moments = _kill_and_resume(argv + ["--run-dir", str(tmp_path / "run")], tmp_path / "run", env, 3, 1.2)
    a, b = (torch.load(tmp_path / n / "ckpt.pt", weights_only=True) for n in ("ref", "run"))
    assert a["iteration"] == b["iteration"] == 120, moments
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), (k, moments)
    with np.load(tmp_path / "ref" / "weights.npz") as wa, np.load(tmp_path / "run" / "weights.npz") as wb:
        assert sorted(wa.files) == sorted(wb.files)
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k])
    _assert_no_temporaries(tmp_path / "run")
