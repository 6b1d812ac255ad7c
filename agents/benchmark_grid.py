"""Benchmark grids: many (benchmark, agent, deployment, time, compensation, seed) points, one JSON record each.

>>> points = expand_grid(["omniglot-5w5s-v0"], ["maml-4bit"], ["software", "pcm"], times=["1min", "1d"])
>>> run_grid(points, "results/", tasks=300)     # skips points whose record exists; shows progress

Points are independent jobs: :func:`run_grid` writes each record atomically to its own file
(:func:`record_path`), skips those already written (a killed grid resumes where it stopped), and, under
``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE``), each rank runs the points ``i`` with
``i % WORLD_SIZE == RANK``, so N workers (on one machine or several sharing the folder) produce exactly the
records of a serial run.

Expansion rules: a deployment-independent shipped agent (``Entry.on_chip`` False: random, pixel prototype)
runs on ``software`` only (so does one on the splits it adapts in software only); software deployments have no drift time or compensation (one point, time 0); a
shipped agent runs only on its families' benchmarks.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pcmeta.files import write_json
from pcmeta.hardware import Deployment
from pcmeta.hardware.times import format_time, parse_time
from pcmeta.tasks.benchmarks import get_benchmark

from .baselines import SHIPPED, NotAvailable
from .benchmark import run


@dataclass(frozen=True)
class Point:
    """One grid point; ``time_s`` and ``compensation`` are None on software."""

    benchmark: str
    agent: str
    deployment: str
    time_s: float | None = None
    compensation: str | None = None
    seed: int = 0

    def key(self) -> str:
        """A file-name-safe identifier of the point."""
        t = "t0" if self.time_s is None else f"t{format_time(self.time_s)}"
        parts = [self.benchmark, self.agent, self.deployment, t, self.compensation or "nocomp", f"s{self.seed}"]
        return "__".join(re.sub(r"[^A-Za-z0-9.+-]", "_", p) for p in parts)


def expand_grid(benchmarks: Iterable[str], agents: Iterable[str], deployments: Iterable[str],
                times: Iterable[Any] = ("1min",), compensations: Iterable[str | None] = (None,),
                seeds: Iterable[int] = (0,)) -> list[Point]:
    """The points of a grid, in a fixed order, after the expansion rules of the module docstring."""
    points: list[Point] = []
    seen: set[Point] = set()
    for b in benchmarks:
        bench = get_benchmark(b)
        for a in agents:
            entry = SHIPPED.get(a)
            if entry is not None and bench.family not in entry.families:
                continue
            for d in deployments:
                dep = Deployment.preset(d, bench.family)
                if entry is not None and dep.on_chip and (not entry.on_chip
                                                          or bench.split in entry.software_only_splits):
                    continue
                if dep.on_chip:  # compensation None: the preset's own, written out (one key per physics)
                    own = dep.config.get("drift_compensation", "none") if dep.substrate == "pcm" else None
                    variants = [(parse_time(t), own if c is None else c) for t in times for c in compensations]
                else:
                    variants = [(None, None)]
                for t, c in variants:
                    for s in seeds:
                        p = Point(bench.name, a, d, t, c, int(s))
                        if p not in seen:
                            seen.add(p)
                            points.append(p)
    return points


def record_path(out_dir: str | os.PathLike, point: Point) -> Path:
    return Path(out_dir) / f"{point.key()}.json"


def shard(points: list[Point], rank: int | None = None, world: int | None = None) -> list[Point]:
    """This worker's points: ``i % world == rank`` (default from the ``RANK`` / ``WORLD_SIZE`` environment)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else int(world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..world-1 and world >= 1, got rank {rank}, world {world}")
    return [p for i, p in enumerate(points) if i % world == rank]


def run_grid(points: list[Point], out_dir: str | os.PathLike, *, tasks: int | None = None, data_dir: Any = None,
             time_limit_s: float | None = None, progress: bool = True, rank: int | None = None,
             world: int | None = None, command: str | None = None) -> dict[str, int]:
    """Run this worker's share of ``points`` whose record is not in ``out_dir`` yet; returns counts
    ``{"done", "skipped", "unavailable"}``; ``command`` is recorded in each record. A point whose agent has no weights for its benchmark
    (:class:`NotAvailable`) is recorded as ``{"status": "unavailable", "reason": ...}``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = shard(points, rank, world)
    counts = {"done": 0, "skipped": 0, "unavailable": 0}
    bar = tqdm(mine, desc="grid", unit="point", disable=not progress)
    for p in bar:
        path = record_path(out, p)
        if path.is_file():
            counts["skipped"] += 1
            continue
        bar.set_postfix_str(p.key()[:60])
        try:
            rec = run(p.agent, p.benchmark, p.deployment, time=p.time_s, compensation=p.compensation, tasks=tasks,
                      seed=p.seed, data_dir=data_dir, time_limit_s=time_limit_s)
            counts["done"] += 1
        except NotAvailable as exc:
            rec = {"benchmark": p.benchmark, "agent": p.agent, "deployment": p.deployment, "time_s": p.time_s,
                   "compensation": p.compensation, "seed": p.seed, "status": "unavailable", "reason": str(exc)}
            counts["unavailable"] += 1
        if command:
            rec["command"] = command
        write_json(path, rec)
    return counts


def load_records(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Records from JSON files and folders of them (unavailable points left out)."""
    recs: list[dict] = []
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{f}: not a benchmark record ({exc})") from None
            if not isinstance(rec, dict) or "benchmark" not in rec:
                raise ValueError(f"{f}: not a benchmark record (no 'benchmark' key)")
            if rec.get("status") != "unavailable":
                recs.append(rec)
    return recs
