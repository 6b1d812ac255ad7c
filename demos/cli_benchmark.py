"""``pcmeta benchmark list | run | report``: pcmeta as a benchmark for learning-to-learn on in-memory hardware.

- ``list``: the benchmark definitions (:mod:`pcmeta.tasks.benchmarks`), the shipped agents
  (:data:`pcmeta.agents.baselines.SHIPPED`) and the deployment presets.
- ``run``: an agent (a shipped name or ``package.module:factory``) on a benchmark; with ``--json OUT`` one
  record, with ``--out DIR`` a grid (comma-separated lists of benchmarks, agents, deployments, times,
  compensations and seeds; one record per point, completed points skipped, ranks of ``torchrun`` sharing
  the points).
- ``report``: a markdown leaderboard and plots from records (:mod:`pcmeta.demos.benchmark_report`).
"""
from __future__ import annotations

import argparse

from .options import command_line, int_list, positive_float, positive_int, write_result


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(groups) -> None:
    sub = groups["benchmark"]
    p = sub.add_parser("list", help="benchmarks, shipped agents and deployment presets")
    p.set_defaults(func=_list)

    p = sub.add_parser("run", help="run agents on benchmarks (one record, or a resumable grid)")
    p.add_argument("--agent", required=True, help="shipped agent name(s) or import path(s) package.module:factory, "
                   "comma-separated (see `pcmeta benchmark list`)")
    p.add_argument("--benchmark", required=True, help="benchmark name(s), comma-separated")
    p.add_argument("--deployment", default="software", help="deployment preset name(s), comma-separated "
                   "(default software)")
    p.add_argument("--time", default="1min", help="drift time(s) after programming on a chip, comma-separated: "
                   "1min, 1h, 1d, 1mo, 1y or seconds (default 1min; software has none)")
    p.add_argument("--compensation", default=None, help="drift compensation(s) on PCM, comma-separated: none, "
                   "global, per_column (default: the preset's)")
    p.add_argument("--tasks", type=positive_int, help="meta-test tasks per point (default: the benchmark's)")
    p.add_argument("--seed", type=int_list(0), default=[0], help="chip seed(s), comma-separated (default 0)")
    p.add_argument("--time-limit", type=positive_float, metavar="S",
                   help="seconds allowed per task (adapt + predict); a slower task is recorded as failed")
    p.add_argument("--data-dir", help="Omniglot folder (default: $PCMETA_DATA_DIR or ~/.cache/pcmeta/omniglot)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--json", metavar="OUT", help="write the record of ONE point to this file")
    out.add_argument("--out", metavar="DIR", help="grid: one record per point in DIR (completed points skipped)")
    p.add_argument("--rerun-stale", action="store_true", help="grid: run again (and replace) the records in DIR "
                   "made with other weights, tasks or deployment settings than asked now (default: refuse, "
                   "naming them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    p = sub.add_parser("report", help="markdown leaderboard and plots from benchmark records")
    p.add_argument("results", nargs="+", help="record files or folders of them")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for leaderboard.md and the plots")
    p.set_defaults(func=_report)


def _list(args: argparse.Namespace) -> int:
    from pcmeta.agents.baselines import SHIPPED
    from pcmeta.hardware.deployment import PRESETS
    from pcmeta.tasks.benchmarks import BENCHMARKS

    print("benchmarks:")
    for b in BENCHMARKS.values():
        print(f"  {b.name:<28} {b.description} [{b.metric}, {b.test_tasks} test tasks]")
    print("shipped agents:")
    for name, e in SHIPPED.items():
        print(f"  {name:<28} {e.description} [{', '.join(e.families)}{'' if e.on_chip else ', software only'}]")
    print("deployments:")
    for fam, presets in PRESETS.items():
        print(f"  {fam}: {', '.join(presets)}")
    print("any other agent: --agent package.module:factory (see docs/benchmark.md)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from pcmeta.agents.benchmark_grid import expand_grid, run_grid

    comps = _names(args.compensation) if args.compensation else [None]
    points = expand_grid(_names(args.benchmark), _names(args.agent), _names(args.deployment),
                         _names(args.time), comps, args.seed)
    if not points:
        raise ValueError("no grid point: the agents run on none of these benchmarks/deployments "
                         "(see `pcmeta benchmark list`)")
    if args.json:
        if len(points) != 1:
            raise ValueError(f"--json takes exactly one point, these arguments make {len(points)}; use --out DIR")
        return _run_one(args, points[0])
    counts = run_grid(points, args.out, tasks=args.tasks, data_dir=args.data_dir, time_limit_s=args.time_limit,
                      progress=not args.no_progress, command=command_line(args),
                      stale="rerun" if args.rerun_stale else "error")
    print(f"{args.out}: {counts['done']} points run ({counts['stale']} of them stale records replaced), "
          f"{counts['skipped']} already there, {counts['unavailable']} unavailable")
    return 0


def _run_one(args: argparse.Namespace, point) -> int:
    from pcmeta.agents.benchmark import run

    rec = run(point.agent, point.benchmark, point.deployment, time=point.time_s, compensation=point.compensation,
              tasks=args.tasks, seed=point.seed, data_dir=args.data_dir, time_limit_s=args.time_limit,
              progress=not args.no_progress)
    scale, unit = (100.0, " %") if rec["metric"] == "accuracy" else (1.0, "")
    val = "n/a" if rec["value"] is None else f"{rec['value'] * scale:.4g}{unit}"
    ci = "" if rec["ci95"] is None else f" +- {rec['ci95'] * scale:.2g}"
    print(f"{rec['benchmark']} | {rec['agent']} | {rec['deployment']} t={rec['time_s']:g} s: "
          f"{rec['metric']} {val}{ci} over {rec['n_tasks'] - rec['n_failed']} tasks ({rec['n_failed']} failed)")
    for reason, n in rec["failures"].items():
        print(f"  failed x{n}: {reason}")
    write_result(args, rec)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .benchmark_report import write_report

    paths = write_report(args.results, args.out)
    for p in paths:
        print(f"wrote {p}")
    return 0
