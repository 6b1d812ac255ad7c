"""``pcmeta arm eval``: one-shot learning of N new arm targets with natural e-prop, on one Deployment.

Demonstration trial -> LSG learning signals -> ONE e-prop update -> test trial, per target; prints the MSEs
before / after the update (mean +- SEM) and writes them, with the deployment, through
:func:`pcmeta.demos.options.write_result`.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from pcmeta.demos.arm_options import arm_deployment, describe
from pcmeta.demos.options import write_result

#: the per-task figures of :func:`pcmeta.agents.eprop.evaluate`, as printed: (name, unit)
ROWS = (("mse_omega", "(rad/s)^2"), ("mse_xyz", "m^2"), ("loss", ""))


def _check(args: argparse.Namespace) -> None:
    # the flags are registered in pcmeta.demos.cli_snn; the same ranges as the argparse types of options.py
    if args.checkpoint and args.weights:
        raise ValueError("give --weights or --checkpoint, not both")


def _load_params(args: argparse.Namespace) -> tuple[dict, str]:
    """(weight dict, where it came from) of --checkpoint or --weights."""
    import torch

    from pcmeta.agents import eprop
    from pcmeta.agents.shipped import resolve_weights

    dtype = torch.float64 if (args.float64 or args.engine == "brian2") else torch.float32
    if args.checkpoint:
        return eprop.load_checkpoint_params(args.checkpoint, dtype=dtype), str(args.checkpoint)
    return eprop.load_weights(args.weights, dtype=dtype), str(resolve_weights(args.weights, "arm"))


def _evaluate(args: argparse.Namespace, params: dict, targets, dep) -> dict[str, Any]:
    """Per-task figures of the chosen engine on ``dep`` (chips seeded from --seed)."""
    from pcmeta.agents import eprop
    from pcmeta.agents.eprop.chips import exact_float

    if args.round_update and not (exact_float(dep) and args.engine == "torch"):
        raise ValueError("--round-update applies to float weights (--deployment software) in the torch engine; "
                         "a chip rounds its updates itself")
    if args.engine == "torch":
        return eprop.evaluate(params, targets, dep, seed=args.seed, batch_size=args.batch_size,
                              update_transform=eprop.round_to_grid if args.round_update else None, progress=True)
    return eprop.evaluate_brian2(params, targets, dep, seed=args.seed, target=args.brian2_target, progress=True)


def _print_table(args: argparse.Namespace, dep, stats: dict, wall: float) -> None:
    cond = describe(dep) + (", update rounded to 1/16" if args.round_update else "")
    print(f"one-shot arm learning, {args.tasks} new targets, engine {args.engine}, deployment {cond}, "
          f"seed {args.seed}")
    print(f"{'':<14}{'before':>22}{'after':>22}")
    for name, unit in ROWS:
        b, a = stats[f"{name}_before"], stats[f"{name}_after"]
        print(f"{name:<14}{b[0]:>12.4f} +- {b[1]:<7.4f}{a[0]:>12.4f} +- {a[1]:<7.4f} {unit}")
    print(f"wall time {wall:.1f} s ({wall / args.tasks:.3f} s per task)")


def _print_rates(args: argparse.Namespace, rates: dict) -> None:
    for name, r in rates.items():
        print(f"{name} firing (demonstration, first {min(20, args.tasks)} targets): mean {r['mean_hz']:.1f} Hz, "
              f"{r['silent']} of {r['neurons']} neurons silent, {r['saturated']} above 150 Hz")


def run(args: argparse.Namespace) -> int:
    """The handler of ``pcmeta arm eval``."""
    import numpy as np
    import torch

    from pcmeta.agents import eprop
    from pcmeta.tasks import trajectories as traj

    _check(args)
    dep = arm_deployment(args, "software")
    torch.set_num_threads(1)
    params, weights = _load_params(args)
    targets = traj.sample_targets(args.tasks, robot=args.robot, rng=np.random.default_rng(args.seed))
    t0 = time.perf_counter()
    res = _evaluate(args, params, targets, dep)
    wall = time.perf_counter() - t0
    stats = {k: eprop.summarize(res[k]) for k in eprop.evaluation.FIGURES}
    _print_table(args, dep, stats, wall)
    rates = eprop.firing_stats(params, targets[:20]) if args.rates else None
    _print_rates(args, rates or {})
    record: dict[str, Any] = {k: v[0] for k, v in stats.items()}
    record.update(tasks=args.tasks, sem={k: v[1] for k, v in stats.items()}, engine=args.engine,
                  deployment=dep.to_dict(), round_update=bool(args.round_update), seed=args.seed, weights=weights,
                  wall_s=wall, firing=rates)
    if args.engine == "brian2":
        record["brian2_codegen_s"] = res.get("codegen_s")
        record["brian2_episode_s"] = float(np.mean(res["episode_s"]))
    write_result(args, record)
    return 0
