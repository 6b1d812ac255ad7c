"""Simulated time: the one parser and printer of durations in pcmeta ("1min", "2.5h", "1d", "1mo", "1y", "620s").

A duration is a non-negative finite number of seconds, written as a number with an optional unit:

====================  ============
unit                  seconds
====================  ============
s, sec, (none)        1
min                   60
h                     3,600
d, day                86,400
mo, month             30 days
y, yr, year           365 days
====================  ============

:data:`TIMES` names the drift times of pcmeta's tables and benchmarks. Imports nothing else of pcmeta.
"""
from __future__ import annotations

import math
import re

UNITS: dict[str, float] = {
    "": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "day": 86400.0,
    "mo": 30 * 86400.0, "month": 30 * 86400.0, "y": 365 * 86400.0, "yr": 365 * 86400.0, "year": 365 * 86400.0,
}

#: The named drift times of pcmeta's tables and benchmarks, in seconds.
TIMES: dict[str, float] = {"1s": 1.0, "1min": 60.0, "1h": 3600.0, "1d": 86400.0, "1mo": 30 * 86400.0,
                           "1y": 365 * 86400.0}

_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_time(text: str | float | int) -> float:
    """Seconds in a duration such as ``"1d"``, ``"2.5h"``, ``"620s"``, ``"1e3"`` or a number.

    Raises ValueError naming the accepted forms for anything else (negative, NaN, inf, unknown unit).
    """
    if isinstance(text, bool):
        raise ValueError(f"a duration must be a number of seconds or a string like '1d', got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _PATTERN.match(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in UNITS:
            raise ValueError(f"cannot read the duration {text!r}: expected a number of seconds or a number with "
                             f"one of the units {', '.join(u for u in UNITS if u)} (e.g. 1min, 2.5h, 1d, 1y)")
        value = float(m.group(1)) * UNITS[unit]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {text!r}")
    return value


def format_time(seconds: float) -> str:
    """A short label for ``seconds``: the name in :data:`TIMES` when there is one, else e.g. ``"620s"``."""
    for name, s in TIMES.items():
        if s == seconds:
            return name
    return f"{seconds:g}s"
