"""Benchmark grids: many (benchmark, agent, deployment, time, compensation, seed) points, one JSON record each.

>>> points = expand_grid(["omniglot-5w5s-v0"], ["maml-4bit"], ["software", "pcm"], times=["1min", "1d"])
>>> run_grid(points, "results/", tasks=300)     # skips points whose record exists; shows progress

Points are independent jobs: :func:`run_grid` writes each record atomically to its own file
(:func:`record_path`), skips those already written (a killed grid resumes where it stopped), and, under
``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE``), each rank runs the points ``i`` with
``i % WORLD_SIZE == RANK``, so N workers (on one machine or several sharing the folder) produce exactly the
records of a serial run.

A record is skipped only where it answers the point as asked now (:func:`stale_reason`): the same number
of tasks, the same weights file (its SHA-256) and the same deployment settings. Any other record is stale:
:func:`run_grid` refuses to start and names each one with what differs (``stale="rerun"``, the command
line's ``--rerun-stale``, replaces them), so a changed weights file or preset never hides behind an old figure.

Expansion rules: a deployment-independent shipped agent (``Entry.on_chip`` False: random, pixel prototype)
runs on ``software`` only (so does one on the splits it adapts in software only); software deployments have no
drift time or compensation (one point, time 0); a shipped agent runs only on its families' benchmarks.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pcmeta.files import to_json, write_json
from pcmeta.hardware import Deployment
from pcmeta.hardware.times import format_time, parse_time
from pcmeta.tasks.benchmarks import get_benchmark

from .baselines import SHIPPED, NotAvailable
from .benchmark import resolve_deployment, run, weights_sha256_of


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


class StaleRecords(ValueError):
    """Records in a grid's folder that do not answer their points as asked now (see :func:`stale_reason`)."""


def stale_reason(rec: dict, point: Point, tasks: int | None = None) -> str | None:
    """Why the record ``rec`` of ``point`` does not answer it as asked now (None: it does): another number of
    tasks than ``tasks`` (None: the benchmark's protocol), other weights than the entry's file now, or other
    deployment settings than the preset's now."""
    bench = get_benchmark(point.benchmark)
    sha = weights_sha256_of(point.agent, bench)
    if rec.get("weights_sha256") != sha:
        if "weights_sha256" not in rec:
            return "it holds no weights fingerprint (an older pcmeta wrote it), so its weights cannot be checked"
        then = _short(rec["weights_sha256"])
        return f"it was made with other weights (SHA-256 {then}, the agent's now {_short(sha)})"
    if rec.get("status") == "unavailable":
        return None
    want = bench.test_tasks if tasks is None else int(tasks)
    if rec.get("n_tasks") != want:
        return f"it ran on {rec.get('n_tasks')} tasks, {want} asked for"
    dep = resolve_deployment(point.deployment, bench, point.time_s, point.compensation)
    now, then = json.loads(to_json(dep.to_dict())), rec.get("deployment_config", {})
    differ = sorted(_differ(now, then))
    if differ:
        return f"its deployment settings differ from the preset's now in {', '.join(differ)}"
    return None


def _differ(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The keys whose values differ between two dicts, nested dicts by their dotted keys."""
    out: list[str] = []
    for k in set(a) | set(b):
        x, y = a.get(k, "absent"), b.get(k, "absent")
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differ(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def _short(sha: str | None) -> str:
    return "none" if sha is None else f"{sha[:12]}..."


def _stale_records(points: list[Point], out: Path, tasks: int | None) -> dict[Point, str]:
    """The stale existing records of ``points`` with their reasons."""
    stale: dict[Point, str] = {}
    for p in points:
        path = record_path(out, p)
        if path.is_file():
            reason = stale_reason(json.loads(path.read_text()), p, tasks)
            if reason is not None:
                stale[p] = reason
    return stale


def run_grid(points: list[Point], out_dir: str | os.PathLike, *, tasks: int | None = None, data_dir: Any = None,
             time_limit_s: float | None = None, progress: bool = True, rank: int | None = None,
             world: int | None = None, command: str | None = None, stale: str = "error") -> dict[str, int]:
    """Run this worker's share of ``points`` whose record is not in ``out_dir`` yet; returns counts
    ``{"done", "skipped", "unavailable", "stale"}``; ``command`` is recorded in each record. A point whose
    agent has no weights for its benchmark (:class:`NotAvailable`) is recorded as ``{"status": "unavailable",
    "reason": ...}``. Existing records of any point that are stale (:func:`stale_reason`) raise
    :class:`StaleRecords` before anything runs (``stale="error"``), or are run again and replaced
    (``stale="rerun"``, counted in ``"stale"`` as well as ``"done"``)."""
    from tqdm.auto import tqdm

    if stale not in ("error", "rerun"):
        raise ValueError(f"stale must be 'error' or 'rerun', got {stale!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = shard(points, rank, world)
    old = _stale_records(points, out, tasks)
    if old and stale == "error":
        named = "; ".join(f"{record_path(out, p).name}: {why}" for p, why in list(old.items())[:5])
        more = f"; and {len(old) - 5} more" if len(old) > 5 else ""
        raise StaleRecords(f"{len(old)} record(s) in {out} do not answer this grid as asked now: {named}{more}. "
                           "Run them again with --rerun-stale (stale='rerun'; the old records are replaced), "
                           "or write to another folder")
    counts = {"done": 0, "skipped": 0, "unavailable": 0, "stale": 0}
    bar = tqdm(mine, desc="grid", unit="point", disable=not progress)
    for p in bar:
        path = record_path(out, p)
        if path.is_file() and p not in old:
            counts["skipped"] += 1
            continue
        counts["stale"] += p in old
        bar.set_postfix_str(p.key()[:60])
        try:
            rec = run(p.agent, p.benchmark, p.deployment, time=p.time_s, compensation=p.compensation, tasks=tasks,
                      seed=p.seed, data_dir=data_dir, time_limit_s=time_limit_s)
            counts["done"] += 1
        except NotAvailable as exc:
            rec = {"benchmark": p.benchmark, "agent": p.agent, "deployment": p.deployment, "time_s": p.time_s,
                   "compensation": p.compensation, "seed": p.seed, "status": "unavailable", "reason": str(exc),
                   "weights_sha256": None}
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
