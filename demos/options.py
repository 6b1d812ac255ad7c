"""Command-line options shared by the ``pcmeta`` commands: the deployment flags and the result writer.

A command that deploys an agent takes ``--deployment NAME`` (a preset of :mod:`pcmeta.hardware.deployment`
for its family, or a JSON file written by ``Deployment.to_json``), ``--time`` and per-field overrides; the
flags become ONE :class:`pcmeta.hardware.Deployment` (:func:`deployment_from_args`), which the command passes
to the agent and writes into its result file. ``--json OUT`` of every command goes through
:func:`write_result` (atomic, parent folders created, the command line and pcmeta's version recorded).

Numeric flags take the argparse types here (:func:`int_range`, :data:`positive_int`, :data:`nonneg_int`,
:func:`float_range`, :data:`positive_float`, :func:`int_list`): an out-of-range value is an argparse error (exit 2,
one line naming the flag); the help of each flag states its range.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


def int_range(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (None: unbounded on that side)."""
    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {desc}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {desc}, got {value}")
        return value

    desc = _range_text("an integer", minimum, maximum)
    parse.__name__ = parse.__qualname__ = desc
    return parse


def float_range(minimum: float | None = None, maximum: float | None = None, *,
                include_min: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in [minimum, maximum] ((minimum, maximum] with ``include_min=False``)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {desc}, got {text!r}") from None
        low = minimum is not None and (value < minimum or (value == minimum and not include_min))
        if not math.isfinite(value) or low or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {desc}, got {text!r}")
        return value

    desc = _range_text("a finite number", minimum, maximum, ">=" if include_min else ">")
    parse.__name__ = parse.__qualname__ = desc
    return parse


def _range_text(kind: str, minimum, maximum, low: str = ">=") -> str:
    if minimum is not None and maximum is not None and low == ">=":
        return f"{kind} in {minimum}..{maximum}"
    parts = ([f"{low} {minimum}"] if minimum is not None else []) + ([f"<= {maximum}"] if maximum is not None else [])
    return f"{kind} {' and '.join(parts)}".strip()


#: argparse types: an integer >= 1 (counts: tasks, shots, queries, batch sizes), an integer >= 0 (seeds, steps),
#: a finite number > 0
positive_int, nonneg_int, positive_float = int_range(1), int_range(0), float_range(0.0, include_min=False)


def int_list(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers, each in [minimum, maximum] (e.g. ``--shots 5,1``)."""
    one = int_range(minimum, maximum)

    def parse(text: str) -> list[int]:
        items = [t for t in str(text).split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers ({one.__name__}), got {text!r}")
        try:
            return [one(t) for t in items]
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None

    parse.__name__ = parse.__qualname__ = f"comma-separated integers ({one.__name__})"
    return parse


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
