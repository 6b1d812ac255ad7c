"""The ``pcmeta`` command line.

Subcommand groups: ``pcmeta data``, ``pcmeta omniglot``, ``pcmeta arm``, ``pcmeta bench``, ``pcmeta benchmark``.
Each area lives in its own module listed in :data:`AREAS`; a module provides
``register(groups)`` where ``groups`` maps a group name ("data", "omniglot", "arm", "bench") to an
argparse sub-parsers object, and adds its subcommands there with ``set_defaults(func=handler)``.
Registration must stay cheap: heavy imports (torch, pybullet, brian2) belong inside the handlers.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: Modules that add subcommands (see the module docstring).
AREAS = [
    "pcmeta.demos.cli_hardware",
    "pcmeta.demos.cli_arm",
    "pcmeta.demos.cli_snn",
    "pcmeta.demos.cli_omniglot",
    "pcmeta.demos.omniglot_chip",
    "pcmeta.demos.cli_benchmark",
]

GROUPS = {
    "data": "download and prepare data sets",
    "omniglot": "few-shot image classification with MAML (train, eval, sweep)",
    "arm": "one-shot robot-arm trajectory learning (replay, train, eval, demo)",
    "bench": "benchmarks that print measured figures",
    "benchmark": "agents on fixed benchmark protocols: list, run (records, grids), report (leaderboard)",
}


def build_parser() -> argparse.ArgumentParser:
    from pcmeta import __version__

    parser = argparse.ArgumentParser(
        prog="pcmeta",
        description="Learning-to-learn on simulated phase-change-memory in-memory computing.",
    )
    parser.add_argument("--version", action="version", version=f"pcmeta {__version__}")
    top = parser.add_subparsers(dest="group", metavar="GROUP")
    groups = {}
    for name, help_ in GROUPS.items():
        p = top.add_parser(name, help=help_, description=help_)
        groups[name] = p.add_subparsers(dest="command", metavar="COMMAND")
        p.set_defaults(func=None, _group_parser=p)
    for mod in AREAS:
        importlib.import_module(mod).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for results that record the command that produced them
    if getattr(args, "group", None) is None:
        parser.print_help()
        return 2
    if getattr(args, "func", None) is None:
        args._group_parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except (ValueError, OSError) as exc:
        # user errors, one clear line and no traceback: bad values (ValueError, including pcmeta's own errors such
        # as pcmeta.files.WeightsFileError, which names the file), missing or unreadable files (OSError)
        print(f"pcmeta: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line (an OSError without a message: its class name)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
