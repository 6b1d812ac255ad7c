"""Run an agent on a benchmark: one record per (benchmark, agent, deployment, time, compensation, seed).

>>> from pcmeta.agents.benchmark import run
>>> rec = run(my_agent, "omniglot-5w5s-v0", deployment="pcm", time="1d", tasks=300, seed=0)
>>> rec["value"], rec["ci95"], rec["cost"]["adapt"]["energy_J"]

The loop is :func:`pcmeta.agents.evaluation.evaluate` (reset, adapt, predict, score per task; a failing task
is recorded with its reason and the run goes on), on the benchmark's fixed meta-test tasks
(:mod:`pcmeta.tasks.benchmarks`), with NeuroBench-style metric plug-ins (:data:`Meter` s):

- the task metric (accuracy as a fraction, or the arm's loss) with its 95 % CI over tasks;
- ``cost``: what the substrate counted during each adaptation (``adapt``) and each answer (``predict``), per
  task on average: MVMs, device programming events, estimated energy (J) and latency (s)
  (:mod:`pcmeta.hardware.energy`); zero on software;
- ``footprint``: weights placed, PCM devices (a differential pair per weight on a chip) and tiles;
- ``activity``: an agent's own figures from its optional ``benchmark_metrics()`` (the spiking learner:
  activation sparsity and synaptic operations of the test trial), averaged over tasks.

Agents: any object implementing :class:`pcmeta.agents.Agent`, a shipped entry's name
(:data:`pcmeta.agents.baselines.SHIPPED`) or an import path ``"package.module:factory"`` (:func:`load_agent`).
A shipped entry's record carries ``weights_sha256``, the SHA-256 of the weights file it ran with (None for
entries without one and for other agents), so that a grid tells a stale record from a current one.
"""
from __future__ import annotations

import importlib
import inspect
import math
import sys
import weakref
from typing import Any

import numpy as np

from pcmeta.hardware import Deployment, SoftwareArray
from pcmeta.hardware.times import parse_time
from pcmeta.tasks.benchmarks import Benchmark, get_benchmark

from .baselines import SHIPPED
from .evaluation import evaluate, mean_ci95
from .protocol import check_agent

#: Keys every record has (see :func:`run`).
RECORD_KEYS = ("benchmark", "agent", "deployment", "time_s", "compensation", "seed", "metric", "value", "ci95",
               "n_tasks", "n_failed", "cost", "footprint", "activity", "weights_sha256", "version", "command")
_COST_KEYS = ("mvms", "programming_events", "energy_J", "latency_s")


# ------------------------------------------------------------------------------------------- agents
def load_agent(spec: Any, benchmark: Benchmark) -> tuple[Any, str]:
    """(agent, its name) from an agent object, a shipped entry's name or ``"package.module:factory"``.

    A factory is called with the :class:`Benchmark` if it takes an argument, else with none."""
    if not isinstance(spec, str):
        check_agent(spec)
        return spec, type(spec).__name__
    if spec in SHIPPED:
        entry = SHIPPED[spec]
        if benchmark.family not in entry.families:
            raise ValueError(f"shipped agent {spec!r} runs on {entry.families} benchmarks, not {benchmark.name}")
        return entry.agent(benchmark), spec
    if ":" not in spec:
        raise ValueError(f"agent must be a shipped name ({sorted(SHIPPED)}) or an import path "
                         f"'package.module:factory', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load agent {spec!r}: {exc}") from None
    takes_arg = bool(inspect.signature(factory).parameters) if callable(factory) else False
    agent = factory(benchmark) if takes_arg else factory() if callable(factory) else factory
    check_agent(agent)
    return agent, spec


def weights_sha256_of(spec: Any, benchmark: Benchmark) -> str | None:
    """The SHA-256 of the weights file a shipped entry ``spec`` loads for ``benchmark``; None for any other agent."""
    return SHIPPED[spec].weights_sha256(benchmark) if isinstance(spec, str) and spec in SHIPPED else None


# -------------------------------------------------------------------------------------- deployments
def resolve_deployment(deployment: Any, benchmark: Benchmark, time: Any = None,
                       compensation: str | None = None) -> Deployment:
    """A :class:`Deployment` (or a preset's name for the benchmark's family) at ``time`` (after programming;
    None: the preset's), with drift compensation ``compensation`` ("global", "per_column", "none"; None: the
    preset's; only for PCM deployments)."""
    dep = deployment if isinstance(deployment, Deployment) else Deployment.preset(str(deployment), benchmark.family)
    if time is not None:
        dep = dep.with_(time_s=parse_time(time), query_time_s=None)
    if compensation is not None:
        if dep.substrate != "pcm":
            raise ValueError(f"compensation applies to PCM deployments; {dep.name!r} is {dep.substrate!r}")
        dep = dep.with_(config={"drift_compensation": compensation})
    return dep


def compensation_of(dep: Deployment) -> str | None:
    """The drift compensation a deployment applies (None off-chip)."""
    return dep.config.get("drift_compensation", "none") if dep.substrate == "pcm" else None


class _Recorded(Deployment):
    """A deployment that remembers (weakly) every substrate it builds, for the cost meters."""

    def build(self, seed: int = 0):
        sub = super().build(seed)
        self.__dict__.setdefault("_built", []).append(weakref.ref(sub))
        return sub

    def live(self) -> list:
        """The built substrates still in use (references to freed ones are dropped: one chip per task adds up)."""
        pairs = [(r, r()) for r in self.__dict__.get("_built", [])]
        pairs = [(r, sub) for r, sub in pairs if sub is not None]
        self.__dict__["_built"] = [r for r, _ in pairs]
        return [sub for _, sub in pairs]


def _totals(sub: Any) -> dict[str, float]:
    rep = sub.report()
    out = {"mvms": float(rep.get("mvms", 0)), "programming_events": float(rep.get("programming_events", 0))}
    for key in ("energy_J", "latency_s"):
        out[key] = float(rep[key]["total"]) if isinstance(rep.get(key), dict) else 0.0
    weights = sum(int(np.prod(a.shape)) for a in sub.arrays.values())
    on_chip = sum(int(np.prod(a.shape)) for a in sub.arrays.values() if not isinstance(a, SoftwareArray))
    out.update(weights=float(weights), devices=float(2 * on_chip), tiles=float(rep.get("tiles", 0)))
    return out


class CostMeter:
    """Substrate counters per phase: ``adapt_*`` and ``predict_*`` (MVMs, programming events, J, s) and the
    footprint at prediction time (weights, devices, tiles), from the substrates a deployment built."""

    def __init__(self, deployment: _Recorded) -> None:
        self.deployment = deployment
        self._last: dict[int, dict[str, float]] = {}

    def _delta(self) -> tuple[dict[str, float], dict[str, float]]:
        now = {id(s): (_totals(s)) for s in self.deployment.live()}
        delta = {k: sum(v[k] - self._last.get(i, {}).get(k, 0.0) for i, v in now.items()) for k in _COST_KEYS}
        foot = {k: sum(v[k] for v in now.values()) for k in ("weights", "devices", "tiles")}
        self._last = now
        return delta, foot

    def __call__(self, phase: str, agent: Any) -> dict[str, float]:
        delta, foot = self._delta()
        if phase == "reset":
            return {}
        out = {f"{phase}_{k}": v for k, v in delta.items()}
        if phase == "predict":
            out.update({f"footprint_{k}": v for k, v in foot.items()})
        return out


def agent_activity(phase: str, agent: Any) -> dict[str, float]:
    """The agent's own figures (its optional ``benchmark_metrics()``) after each prediction."""
    fn = getattr(agent, "benchmark_metrics", None)
    if phase != "predict" or not callable(fn):
        return {}
    return {f"activity_{k}": float(v) for k, v in dict(fn()).items()}


# ----------------------------------------------------------------------------------------------- run
def _mean_of(rows: list[dict], prefix: str) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r if k.startswith(prefix)})
    return {k[len(prefix):]: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def run(agent: Any, benchmark: str | Benchmark, deployment: Any = "software", *, time: Any = None,
        compensation: str | None = None, tasks: int | None = None, seed: int = 0, data_dir: Any = None,
        time_limit_s: float | None = None, progress: bool = False, agent_name: str | None = None) -> dict:
    """One benchmark record (module docstring): ``agent`` on ``tasks`` meta-test tasks of ``benchmark`` with
    its weights where ``deployment`` says (a :class:`Deployment` or a preset's name), ``time`` after
    programming, chip seed ``seed``. Failing tasks (exceptions, wrong shapes, NaN, past ``time_limit_s``)
    are recorded with their reasons (``failures``) and left out of the metric."""
    from pcmeta import __version__  # noqa: PLC0415

    bench = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
    dep = resolve_deployment(deployment, bench, time, compensation)
    sha = weights_sha256_of(agent, bench)
    agent, name = load_agent(agent, bench)
    task_list = bench.tasks(tasks, data_dir=data_dir)
    recorded = _Recorded(**{f: getattr(dep, f) for f in dep.__dataclass_fields__})
    res = evaluate(agent, task_list, recorded, seed=seed, on_error="record", progress=progress,
                   time_limit_s=time_limit_s, meters=(CostMeter(recorded), agent_activity))
    ok = [r for r in res.per_task if "error" not in r]
    value, ci = res.summary()
    secondary = {k: list(mean_ci95(r[k] for r in ok)) for k in ("mse_omega", "mse_xyz") if ok and k in ok[0]}
    rec = {
        "benchmark": bench.name, "agent": agent_name or name, "deployment": dep.name, "time_s": dep.time_s,
        "compensation": compensation_of(dep), "seed": int(seed), "metric": res.metric,
        "value": _finite_or_none(value), "ci95": _finite_or_none(ci), "n_tasks": len(task_list),
        "n_failed": len(res.failures), "failures": _failure_summary(res.failures),
        "cost": {"adapt": _mean_of(ok, "adapt_"), "predict": _mean_of(ok, "predict_")},
        "footprint": _mean_of(ok, "footprint_"), "activity": _mean_of(ok, "activity_"),
        "secondary": secondary, "values": [r[res.metric] for r in ok],
        "task_s": float(np.mean([r["task_s"] for r in ok])) if ok else 0.0,
        "wall_s": res.wall_s, "deployment_config": dep.to_dict(), "weights_sha256": sha, "version": __version__,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "python",
    }
    return rec


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _failure_summary(failures: list[dict]) -> dict[str, int]:
    """Failure reasons and how many tasks had each (reasons cut at 300 characters)."""
    out: dict[str, int] = {}
    for f in failures:
        reason = str(f["error"])[:300]
        out[reason] = out.get(reason, 0) + 1
    return out
