"""Meta-training run folders: the atomic checkpoint (``checkpoint.pt``), its parameters, the per-iteration log
(``history.csv``), and a summary of a run (options, losses over windows, gradient norms, firing health)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcmeta.files import atomic_write, load_checkpoint, save_torch
from pcmeta.tasks import trajectories as traj

from .config import OLD_RUN_VALUES, PARAM_KEYS
from .evaluation import firing_stats

__all__ = ["atomic_save", "read_checkpoint", "load_checkpoint_params", "run_summary", "find_collapse",
           "append_history", "read_history", "trim_history"]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically through a uniquely named temporary file (:mod:`pcmeta.files`), so
    that a crash never leaves half a checkpoint and two writers never share a temporary file."""
    save_torch(path, obj)


def append_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append per-iteration figures to the run's CSV log (header written with the first rows)."""
    if not rows:
        return
    keys = ["iteration", *sorted(k for k in rows[0] if k != "iteration")]
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a run's CSV log (iteration as int, figures as float); a cut last line is skipped."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append({k: (int(v) if k == "iteration" else float(v)) for k, v in r.items()})
            except (TypeError, ValueError):
                continue  # a line cut by a kill while it was written
    return rows


def trim_history(path: Path, before: int) -> None:
    """Keep the log's rows of iterations < ``before`` (a resumed run drops what came after its checkpoint)."""
    rows = [r for r in read_history(path) if r["iteration"] < before]
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A :func:`~pcmeta.agents.eprop.training.meta_train` checkpoint (``weights_only`` load, on the CPU)."""
    return load_checkpoint(path, "arm checkpoint", required=("params",))


def load_checkpoint_params(path: str | Path, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The parameters of a :func:`~pcmeta.agents.eprop.training.meta_train` checkpoint (``checkpoint.pt``), loaded
    through :func:`pcmeta.files.load_checkpoint` (``weights_only``) and checked like a weights file
    (:func:`~pcmeta.agents.eprop.weights.check_params`): FileNotFoundError without a file,
    :class:`pcmeta.files.WeightsFileError` naming the file for anything that does not fit."""
    from pcmeta.files import load_checkpoint

    from .weights import check_params

    ck = load_checkpoint(path, "arm checkpoint", required=("params",))
    check_params(ck["params"], path, "arm checkpoint", label="params")
    return {k: ck["params"][k].to(dtype) for k in PARAM_KEYS}


#: A run has collapsed at iteration i when the mean loss of iterations [i - 100, i) is more than twice the lowest
#: such 100-iteration mean before it (checked from iteration 200 on; each iteration draws new targets).
COLLAPSE_WINDOW, COLLAPSE_FACTOR = 100, 2.0


def find_collapse(loss, window: int = COLLAPSE_WINDOW, factor: float = COLLAPSE_FACTOR) -> int | None:
    """The first iteration at which the moving mean loss over ``window`` iterations exceeds ``factor`` x its
    lowest value so far (from iteration 2 x ``window`` on), or None: the collapse test of ``pcmeta arm runs``."""
    loss = np.asarray(loss, dtype=float)
    if loss.size < 2 * window:
        return None
    mean = np.convolve(loss, np.ones(window) / window, mode="valid")  # mean[j]: iterations [j, j + window)
    low = np.minimum.accumulate(mean)
    for j in range(window, mean.size):
        if mean[j] > factor * low[j - 1]:
            return j + window
    return None


def clipped_iterations(history: list[dict], relative: float | None, calibration=None) -> int | None:
    """How many iterations of ``history`` the relative clip (:func:`~pcmeta.agents.eprop.clip_gradients`) cut (or,
    given ``skip_grad_relative``, skipped): norm above ``relative`` x the median of the previous 50 norms (of
    ``calibration`` before 10 are known); None when the run had no relative clip (no skip)."""
    from .clipping import CLIP_CALIBRATION, CLIP_WINDOW

    if relative is None:
        return None
    norms = np.array([x.get("grad_norm", math.nan) for x in history], dtype=float)
    calib = np.asarray(calibration if calibration is not None else [], dtype=float)
    calib = calib[np.isfinite(calib)]
    count = 0
    for i, n in enumerate(norms):
        window = norms[max(0, i - CLIP_WINDOW):i]
        window = window[np.isfinite(window)]
        ref = window if window.size >= CLIP_CALIBRATION else calib
        count += bool(ref.size and n > relative * float(np.median(ref)))
    return count


def run_summary(run_dir: str | Path, window: int = 25, n_targets: int = 10) -> dict[str, Any]:
    """What a meta-training run folder holds: its options, iterations done, the mean loss over windows of
    ``window`` iterations (iterations [k window, (k + 1) window)), the largest logged gradient norm and the
    firing health (:func:`~pcmeta.agents.eprop.evaluation.firing_stats`) of its current weights on
    ``n_targets`` fixed targets (seed 0), the iteration of a collapse (:func:`find_collapse`; None), the iterations
    the relative clip cut and skipped (:func:`clipped_iterations`) and the per-iteration curves (``curve``: loss,
    grad_norm, reg, rate_lsg_hz)."""
    p = Path(run_dir) / "checkpoint.pt"
    ck = load_checkpoint(p, "arm checkpoint", required=("params", "history"))
    h = read_history(Path(run_dir) / "history.csv") or ck["history"]  # the log: complete also for slim checkpoints
    loss = np.array([x["loss"] for x in h], dtype=float)
    gn = [x["grad_norm"] for x in h if "grad_norm" in x and math.isfinite(x["grad_norm"])]
    windows = {f"{k}-{k + window}": float(loss[k:k + window].mean()) for k in range(0, len(loss) - window + 1, window)}
    tg = traj.sample_targets(n_targets, rng=np.random.default_rng(0))
    params = {k: ck["params"][k].float() for k in PARAM_KEYS}
    config = {**OLD_RUN_VALUES, **dict(ck.get("config", {}))}  # runs from before an option: its old behaviour
    return {"run": str(run_dir), "config": config, "iterations": int(ck["iteration"]), "best": ck.get("best", {}),
            "loss_windows": windows, "loss_last": float(loss[-window:].mean()) if len(loss) else float("nan"),
            "max_grad_norm": max(gn) if gn else None, "firing": firing_stats(params, tg),
            "collapse": find_collapse(loss),
            "clipped": clipped_iterations(h, config.get("clip_grad_relative"), ck.get("clip_calibration")),
            "skipped": clipped_iterations(h, config.get("skip_grad_relative"), ck.get("clip_calibration")),
            "curve": {"loss": loss.tolist(), **{k: [float(x.get(k, math.nan)) for x in h]
                                                for k in ("grad_norm", "reg", "rate_lsg_hz")}}}
