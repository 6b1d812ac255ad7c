"""Command-line options shared by the ``pcmeta`` commands: the deployment flags and the result writer.

A command that deploys an agent takes ``--deployment NAME`` (a preset of :mod:`pcmeta.hardware.deployment`
for its family, or a JSON file written by ``Deployment.to_json``), ``--time`` and per-field overrides; the
flags become ONE :class:`pcmeta.hardware.Deployment` (:func:`deployment_from_args`), which the command passes
to the agent and writes into its result file. ``--json OUT`` of every command goes through
:func:`write_result` (atomic, parent folders created, the command line and pcmeta's version recorded).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_deployment_args(p: argparse.ArgumentParser, family: str, default: str | None = None) -> None:
    """``--deployment`` and ``--time`` (the overrides are per family and added by the command)."""
    from pcmeta.hardware.deployment import PRESETS

    names = ", ".join(sorted(PRESETS[family]))
    p.add_argument("--deployment", default=default, metavar="NAME|FILE.json",
                   help=f"where the weights live: a preset ({names}; 'pcm' is the best deployment pcmeta knows, "
                        f"'paper' the authors' conventions) or a deployment JSON file")
    p.add_argument("--time", default=None, metavar="T",
                   help="time between programming the weights and adapting: 1s, 1min, 1h, 1d, 1mo, 1y or seconds "
                        "(default: the deployment's, 1min on a chip)")


def load_deployment(spec: str, family: str):
    """A preset name or a deployment JSON file as a :class:`pcmeta.hardware.Deployment`."""
    from pcmeta.hardware import Deployment

    path = Path(spec)
    if spec.endswith(".json"):
        if not path.is_file():
            raise FileNotFoundError(f"--deployment {spec}: no such file")
        try:
            return Deployment.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"--deployment {spec}: not a deployment JSON file ({exc})") from None
    return Deployment.preset(spec, family)


def deployment_from_args(args: argparse.Namespace, family: str, name: str, config: dict[str, Any] | None = None,
                         **fields: Any):
    """The deployment ``name`` (or ``args.deployment`` when given) with ``--time``, the ``config`` overrides
    (None values ignored) and other fields applied."""
    dep = load_deployment(getattr(args, "deployment", None) or name, family)
    if getattr(args, "time", None) is not None:
        fields["time_s"] = args.time
    cfg = {k: v for k, v in (config or {}).items() if v is not None}
    if cfg:
        dep = dep.with_(config=cfg)
    return dep.with_(**fields) if fields else dep


def command_line(args: argparse.Namespace) -> str:
    """The command that produced a result, as typed (``pcmeta ...``)."""
    return " ".join(["pcmeta", *getattr(args, "argv", sys.argv[1:])])


def write_result(args: argparse.Namespace, record: dict[str, Any], path: str | None = None) -> None:
    """Write ``record`` with ``command`` (the command line) and ``version`` to ``path`` (default ``args.json``)
    as JSON, atomically, parent folders created; nothing when no path is given."""
    path = path or getattr(args, "json", None)
    if not path:
        return
    from pcmeta import __version__
    from pcmeta.files import write_json

    write_json(path, {**record, "command": command_line(args), "version": __version__})
    print(f"wrote {path}")
