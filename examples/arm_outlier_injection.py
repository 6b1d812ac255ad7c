"""Does ONE outlier gradient make arm meta-training collapse, and do the relative clip and the skip stop it?

Copies a `pcmeta arm train` run's checkpoint three times, multiplies the gradient of the next iteration by
``--factor`` (35: the outlier that began the collapse of an earlier seed-0 GPU run), and continues the copies
for ``--iterations`` on the run's own targets: one without any clip, one with the relative clip alone (3x the
median norm of the last 50 iterations), one with the default (that clip, and no step above 10x the median). The
run folder itself is not touched; its own continuation (if it went on) is the curve without the outlier. Prints
the loss, the LSG's rate and the rate term after the outlier:

    python examples/arm_outlier_injection.py --run runs/arm_seeds/s1 --out runs/outlier_s1 --iterations 40

(``--run`` a copy of a live run's folder and ``--compare`` the live run: the table gets the run's own
continuation once it has gone that far.)

docs/arm-training.md shows its output. Uses the run's settings; one thread.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from pcmeta.agents import eprop
from pcmeta.agents.eprop import training
from pcmeta.agents.eprop.checkpoints import read_checkpoint, read_history

#: The run settings a resumed copy must repeat (the others keep meta_train's defaults).
_KEEP = ("batch", "lr", "lr_decay", "decay_every", "seed", "clean_code", "clip_grad_norm", "readout_lr_factor",
         "detach_reset", "trainee_noise", "voltage_reg", "threshold_gradient")


def continue_with_outlier(run: Path, out: Path, factor: float, iterations: int, relative: float | None,
                          skip: float | None = None) -> list[dict]:
    """A copy of ``run`` continued ``iterations`` with its next gradient x ``factor``, the relative clip
    ``relative`` and the skip ``skip`` (None: off); returns the copy's per-iteration history after the outlier."""
    start = int(read_checkpoint(run / "checkpoint.pt")["iteration"])
    done = [h for h in read_history(out / "history.csv") if h["iteration"] >= start] if out.is_dir() else []
    if len(done) >= iterations:  # this copy ran before (the command was rerun): its rows
        return done[:iterations]
    out.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "history.csv"):
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    config = dict(read_checkpoint(out / "checkpoint.pt")["config"])
    original, calls = training.clip_gradients, []

    def clip_after_outlier(grads, *args):
        if not calls:  # the first iteration after the checkpoint: the outlier
            for g in grads:
                if g is not None:
                    g.mul_(factor)
        calls.append(args)
        return original(grads, *args)

    training.clip_gradients = clip_after_outlier
    try:
        res = eprop.meta_train(out, start + iterations, resume=True, allow_changed_settings=True, progress=False,
                               checkpoint_every=iterations, slim_checkpoint=True, clip_grad_relative=relative,
                               skip_grad_relative=skip,
                               **{k: config[k] for k in _KEEP if k in config})
    finally:
        training.clip_gradients = original
    return [h for h in read_history(out / "history.csv") if h["iteration"] >= start] or res["history"][-iterations:]


def _row(name: str, h: list[dict]) -> str:
    loss = np.array([x["loss"] for x in h])
    rate = np.array([x["rate_lsg_hz"] for x in h])
    reg = np.array([x["reg"] for x in h])
    cells = [f"{loss[a:b].mean():.4f}" for a, b in ((0, 1), (1, 10), (10, 20), (20, len(h))) if b > a and len(h) > a]
    return (f"| {name} | {h[0]['grad_norm']:.3g} | " + " | ".join(cells)
            + f" | {rate[:10].max():.1f} / {rate[-10:].mean():.1f} | {reg[-10:].mean():.4f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a `pcmeta arm train` run folder (not modified)")
    ap.add_argument("--out", required=True, help="folder for the two copies")
    ap.add_argument("--factor", type=float, default=35.0, help="the outlier: the next gradient times this")
    ap.add_argument("--iterations", type=int, default=40, help="iterations after the outlier (>= 21)")
    ap.add_argument("--compare", default=None, help="a folder whose history.csv continues the run without the "
                    "outlier (default: --run itself; e.g. the live run when --run is a copy of its checkpoint)")
    args = ap.parse_args(argv)
    if not args.factor > 0 or args.iterations < 21:
        ap.error("--factor must be > 0 and --iterations >= 21")
    torch.set_num_threads(1)
    run, out = Path(args.run), Path(args.out)
    start = int(read_checkpoint(run / "checkpoint.pt")["iteration"])
    rows = {}
    rel, skip = training.CLIP_GRAD_RELATIVE, training.SKIP_GRAD_RELATIVE
    for name, folder, limits in ((f"x{args.factor:g} outlier, no clip", "noclip", (None, None)),
                                 (f"x{args.factor:g} outlier, relative clip {rel:g}", "clip", (rel, None)),
                                 (f"x{args.factor:g} outlier, clip {rel:g} + skip {skip:g} (default)", "skip",
                                  (rel, skip))):
        rows[name] = continue_with_outlier(run, out / folder, args.factor, args.iterations, *limits)
    ref = Path(args.compare) if args.compare else run  # read now: a live run has gone on meanwhile
    own = [h for h in read_history(ref / "history.csv") if start <= h["iteration"] < start + args.iterations]
    if len(own) == args.iterations:
        rows = {"no outlier (the run itself)": own, **rows}
    print(f"outlier at iteration {start} of {run}; loss = mean over the iterations after it (a rerun of the command "
          f"reuses the copies in {out})")
    print("| continuation | gradient norm at the outlier (before clipping) | loss, it 0 | its 1-9 | its 10-19 | "
          f"its 20-{args.iterations - 1} | LSG Hz: max of its 0-9 / mean of the last 10 | rate term, last 10 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, h in rows.items():
        print(_row(name, h))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
