"""CLI of the spiking learner: ``pcmeta arm eval``, ``arm train``, ``arm runs``, ``arm demo`` and ``pcmeta bench snn``.

This module registers the commands; the handlers live in :mod:`pcmeta.demos.arm_eval`,
:mod:`~pcmeta.demos.arm_demo`, :mod:`~pcmeta.demos.arm_train` and :mod:`~pcmeta.demos.arm_bench`, the
deployment flags of ``arm eval`` / ``arm demo`` in :mod:`~pcmeta.demos.arm_options`. Registration is cheap:
torch / brian2 / PyBullet are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import sys

from pcmeta.demos.arm_options import add_arm_deployment_args
from pcmeta.demos.options import nonneg_int, positive_float, positive_int
from pcmeta.runs import add_run_folder_arguments

#: --weights of arm eval/demo and bench snn: a file or a name of pcmeta.agents.shipped.resolve_weights
WEIGHTS_HELP = ("weights in the released layout: a path, 'pcmeta' (default: the shipped ones), 'authors' (the "
                "authors' released weights, from $PCMETA_REFERENCE_DIR or ~/.cache/pcmeta/reference) or a shipped "
                "name")


def register(groups) -> None:
    _register_eval(groups)
    _register_train(groups)
    _register_runs(groups)
    _register_demo(groups)
    _register_bench(groups)


def _register_eval(groups) -> None:
    p = groups["arm"].add_parser(
        "eval", help="one-shot learning of new arm targets with natural e-prop: MSEs before/after the update",
        description="Demonstration trial -> LSG learning signals -> ONE e-prop update -> test trial, on N new "
                    "random targets, the learning network's weights deployed as --deployment says (default "
                    "software); prints a table of MSE omega / MSE xyz (mean +- SEM) and loss.")
    p.add_argument("--weights", metavar="PATH.npz|NAME", default=None, help=WEIGHTS_HELP)
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="a checkpoint.pt of pcmeta arm train (instead of --weights)")
    p.add_argument("--tasks", type=positive_int, default=100, help="number of new targets, >= 1 (default 100)")
    add_arm_deployment_args(p)
    p.add_argument("--engine", choices=["torch", "brian2"], default="torch")
    p.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy",
                   help="brian2 code generation target (default numpy; cython compiles once, then is cached)")
    p.add_argument("--round-update", action="store_true",
                   help="software only: round the update to multiples of 1/16 (the PCM update grid)")
    p.add_argument("--float64", action="store_true", help="torch engine: simulate in float64 (default float32)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="torch engine: tasks simulated together, >= 1")
    p.add_argument("--robot", default="scorbot", choices=["scorbot"],
                   help="arm (the released weights were trained on the Scorbot)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the targets and of the chips, >= 0")
    p.add_argument("--rates", action="store_true",
                   help="also print the firing-rate health of both networks (mean Hz, silent and > 150 Hz "
                        "neurons) on the first 20 targets")
    p.add_argument("--json", metavar="OUT", help="write the figures (and the deployment) as JSON to OUT")
    p.set_defaults(func=_arm_eval)


def _register_train(groups) -> None:
    t = groups["arm"].add_parser(
        "train", help="meta-train the LSG and the learning network (BPTT through the one e-prop update)",
        description="Meta-training of SPEC section 2: per iteration a batch of new targets, demonstration -> "
                    "LSG -> ONE e-prop update -> test trial, Adam on 0.5 MSE_omega + 0.5 MSE_xyz + rate "
                    "regularisation. Checkpoints (atomic) to OUT/checkpoint.pt and OUT/weights.npz.")
    t.add_argument("--out", default="runs/arm/meta", help="run folder (default runs/arm/meta)")
    t.add_argument("--iterations", type=positive_int, default=100000,
                   help="total iterations, >= 1 (default 100000, the paper)")
    t.add_argument("--batch", type=positive_int, default=90, help="tasks per iteration, >= 1 (default 90)")
    t.add_argument("--lr", type=positive_float, default=1.5e-3, help="Adam learning rate, > 0 (default 1.5e-3)")
    t.add_argument("--lr-decay", type=float, default=0.99, help="lr factor every --decay-every iterations")
    t.add_argument("--decay-every", type=positive_int, default=500, help="iterations between lr decays, >= 1")
    t.add_argument("--init", choices=["random", "weights"], default="random",
                   help="random (the authors' initial scales) or --weights (e.g. fine-tune the released ones)")
    t.add_argument("--weights", metavar="PATH.npz", default=None,
                   help="with --init weights: a weights file, or 'pcmeta' (the shipped ones) or 'authors'")
    t.add_argument("--clean-code", action="store_true",
                   help="LSG input: the Gray code without wrap-around instead of the paper's code")
    t.add_argument("--checkpoint-every", type=positive_int, default=25, help="iterations between checkpoints, >= 1")
    add_run_folder_arguments(t)
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    t.add_argument("--no-cuda-graph", action="store_true",
                   help="on CUDA, launch every kernel eagerly instead of replaying one captured iteration")
    t.add_argument("--clip-grad-norm", type=float, default=None,
                   help="scale the gradient down to this L2 norm before each Adam step (default: no fixed limit)")
    t.add_argument("--clip-grad-relative", type=_relative_clip, default=3.0, metavar="K|off",
                   help="scale the gradient down to K x the median norm of the last 50 iterations (default 3: cuts "
                        "only outliers, which began the collapses of earlier runs; 'off': no relative clip)")
    t.add_argument("--skip-grad-relative", type=_relative_clip, default=10.0, metavar="K|off",
                   help="take no step for a gradient above K x the same median norm (default 10: such outliers came "
                        "from a few tasks whose BPTT through the LSG exploded; 'off': always step)")
    t.add_argument("--readout-lr-factor", type=float, default=None,
                   help="lr factor of the learning network's readout W_out_trainee (default 1: one lr for all, as "
                        "the authors; its weights are 20-50x smaller than the others', e.g. 0.25 slows it down)")
    t.add_argument("--reset-gradient", action=argparse.BooleanOptionalAction, default=True,
                   help="let the BPTT gradient flow through the reset term, as the authors' TensorFlow code "
                        "(default); --no-reset-gradient stops it (e-prop convention). Forward values are the same")
    t.add_argument("--trainee-noise", choices=["none", "authors"], default="none",
                   help="the learning network during meta-training: float weights (none) or the PCM model of the "
                        "authors' training code (authors: programming/drift/read noise, update rounded to 1/16)")
    t.add_argument("--voltage-reg", type=float, default=1e-3,
                   help="factor of the voltage regularisation that keeps neurons from going silent or saturated "
                        "for good (default 1e-3; 0: off, SPEC's recipe)")
    t.add_argument("--threshold-gradient", action=argparse.BooleanOptionalAction, default=False,
                   help="let the spike function's gradient reach the LSG's adaptive thresholds (through the 600-ms "
                        "adaptation variable); default off, as the authors' code. Forward values are the same")
    t.add_argument("--best-window", type=int, default=25,
                   help="write OUT/best.npz whenever the mean loss of the last N iterations is the lowest so far "
                        "(default 25)")
    t.add_argument("--slim-checkpoint", action="store_true",
                   help="keep only the last --best-window iterations of the history in checkpoint.pt (small files "
                        "for long runs); the whole curve is in the run folder's history.csv either way")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much wall time (a checkpoint is written; --resume goes on)")
    t.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads, >= 1 (default 1)")
    t.add_argument("--seed", type=nonneg_int, default=0, help="seed of the initial weights and targets, >= 0")
    t.set_defaults(func=_arm_train)


def _register_runs(groups) -> None:
    r = groups["arm"].add_parser(
        "runs", help="compare meta-training runs: options, loss per window of iterations, firing health",
        description="For each `pcmeta arm train` run folder: its options, the iterations done, the mean loss over "
                    "windows of --window iterations, the largest gradient norm and the LSG's mean rate, silent and "
                    "> 150 Hz neurons now (10 fixed targets).")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--window", type=positive_int, default=25, help="iterations per loss window, >= 1 (default 25)")
    r.add_argument("--json", metavar="OUT", help="also write the summaries as JSON")
    r.add_argument("--plot", metavar="PNG", help="also plot the runs' loss and gradient-norm curves side by side "
                   "(moving mean over --window iterations) into this PNG")
    r.set_defaults(func=_arm_runs)


def _register_demo(groups) -> None:
    d = groups["arm"].add_parser(
        "demo", help="one-shot learning of a new arm movement: demonstration, ONE update, test, rendered",
        description="Draws a new target (--seed), runs the demonstration trial (the LSG sees the target), writes "
                    "ONE natural e-prop update to the learning network's weights on the deployment (default "
                    "pcm), runs the test trial, executes both trials in pcmeta/ArmTrajectory-v0 (PyBullet), "
                    "prints the MSEs and writes the animation (the two trials side by side) and a PNG plot.")
    d.add_argument("--weights", metavar="PATH.npz|NAME", default=None, help=WEIGHTS_HELP)
    add_arm_deployment_args(d)
    d.add_argument("--engine", choices=["torch", "brian2"], default="brian2")
    d.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy")
    d.add_argument("--seed", type=nonneg_int, default=0,
                   help="selects the target (env reset seed) and the chip seed, >= 0")
    d.add_argument("--out", default="demo.gif", help="animation, .gif or .mp4 (default demo.gif)")
    d.add_argument("--plot", default=None, help="PNG plot (default: --out with the suffix .png)")
    d.add_argument("--every", type=positive_int, default=3, help="render every N-th step, >= 1 (default 3)")
    d.add_argument("--no-video", action="store_true", help="only the MSEs and the plot")
    d.add_argument("--json", metavar="OUT", help="also write the figures (and the deployment) as JSON")
    d.set_defaults(func=_arm_demo)


def _register_bench(groups) -> None:
    b = groups["bench"].add_parser(
        "snn", help="wall time of one one-shot episode in torch and brian2, meta-training iterations/s",
        description="Times one one-shot episode (demonstration, LSG, update, test) in torch and in brian2 "
                    "(after code generation), and torch meta-training (forward + BPTT backward) at a batch.")
    b.add_argument("--weights", metavar="PATH.npz|NAME", default=None, help=WEIGHTS_HELP)
    b.add_argument("--episodes", type=positive_int, default=5, help="episodes timed per engine, >= 1 (default 5)")
    b.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy")
    b.add_argument("--train-batch", type=positive_int, default=90, help="meta-training batch, >= 1 (default 90)")
    b.add_argument("--train-iters", type=nonneg_int, default=1,
                   help="meta-training iterations timed, >= 0 (default 1; 0 skips the meta-training figure)")
    b.add_argument("--threads", type=positive_int, default=1, help="torch threads, >= 1 (default 1)")
    b.add_argument("--json", metavar="OUT")
    b.set_defaults(func=_bench_snn)


# ------------------------------------------------------------------ handlers (heavy imports inside)
def _relative_clip(text: str) -> float | None:
    """``--clip-grad-relative`` / ``--skip-grad-relative``: 'off' (None) or a number >= 1."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        k = float(text)
    except ValueError:
        k = float("nan")
    if not k >= 1 or k == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'off' or a finite number >= 1 (times the median gradient "
                                         f"norm), got {text!r}")
    return k


def _arm_eval(args: argparse.Namespace) -> int:
    from pcmeta.demos.arm_eval import run

    return run(args)


def _arm_train(args: argparse.Namespace) -> int:
    from pcmeta.demos.arm_train import run_train

    return run_train(args)


def _arm_runs(args: argparse.Namespace) -> int:
    from pcmeta.demos.arm_train import run_runs

    return run_runs(args)


def _arm_demo(args: argparse.Namespace) -> int:
    from pcmeta.demos.arm_demo import run

    return run(args)


def _bench_snn(args: argparse.Namespace) -> int:
    from pcmeta.demos.arm_bench import run

    return run(args)


if __name__ == "__main__":  # pragma: no cover
    from pcmeta.demos.cli import main

    sys.exit(main())
