"""One evaluation loop for every agent: deploy, then per task reset -> adapt -> predict -> score.

>>> from pcmeta.agents.evaluation import evaluate
>>> res = evaluate(agent, tasks, deployment=Deployment.preset("pcm", family="omniglot"), seed=0)
>>> res.mean, res.ci95, res.values            # accuracy (fraction) per task, its mean and 95 % CI

Metrics are plug-ins: a metric is a function ``(task, answer) -> dict[str, float]`` (:data:`METRICS` holds
the task families' defaults: accuracy for Omniglot; MSE of the joint velocities and of the effector path for
the arm). The loop validates every answer (shape, finiteness) with the task's ``check_prediction``; with
``on_error="record"`` a failing task (an exception or a bad answer) is recorded with its reason and the run
goes on, else the error propagates. A per-task time limit (``time_limit_s``) makes a slow agent fail that
task; meters (``meters``) add figures measured around each phase (e.g. substrate cost per adaptation).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from pcmeta.tasks.episodes import ArmTask, OmniglotTask

from .protocol import Agent, Task, check_agent

Metric = Callable[[Task, np.ndarray], Mapping[str, float]]


def accuracy(task: OmniglotTask, scores: np.ndarray) -> dict[str, float]:
    """Fraction of queries whose highest score is the true label."""
    return {"accuracy": float(np.mean(scores.argmax(-1) == task.query_y))}


def arm_errors(task: ArmTask, omega: np.ndarray) -> dict[str, float]:
    """MSE of the joint velocities ((rad/s)^2) and of the analytic effector path (m^2), and their mean (the
    meta-training loss ``0.5 mse_omega + 0.5 mse_xyz``), for the predicted test-trial velocities."""
    from pcmeta.tasks import trajectories as traj

    q = traj.angles_from_velocities(omega, task.start)
    xyz = traj.forward_kinematics(q, task.robot)
    mse_omega = float(np.mean((omega - task.omega) ** 2))
    mse_xyz = float(np.mean((xyz - task.xyz) ** 2))
    return {"mse_omega": mse_omega, "mse_xyz": mse_xyz, "loss": 0.5 * mse_omega + 0.5 * mse_xyz}


#: The default metric of each task family, and the name of its headline figure.
METRICS: dict[type, tuple[Metric, str]] = {OmniglotTask: (accuracy, "accuracy"), ArmTask: (arm_errors, "loss")}


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (1.96 standard errors; NaN for fewer than two values)."""
    a = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64).ravel()
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size < 2:
        return float(a.mean()), float("nan")
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(a.size))


@dataclass
class EvalResult:
    """Per-task figures of one evaluation run.

    ``per_task``: one dict per task (the metric's figures, or ``{"error": reason}`` for a failed task);
    ``metric``: the headline figure's name; ``wall_s``: seconds of the whole run.
    """

    metric: str
    per_task: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def values(self) -> np.ndarray:
        """The headline figure of every task that did not fail."""
        return np.array([r[self.metric] for r in self.per_task if "error" not in r], dtype=np.float64)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.per_task if "error" in r]

    @property
    def mean(self) -> float:
        return mean_ci95(self.values)[0]

    @property
    def ci95(self) -> float:
        return mean_ci95(self.values)[1]

    def summary(self, key: str | None = None) -> tuple[float, float]:
        """(mean, 95 % CI) of figure ``key`` (default: the headline one) over the tasks that did not fail."""
        k = key or self.metric
        return mean_ci95(r[k] for r in self.per_task if "error" not in r)


#: A meter: ``meter(phase, agent) -> dict`` called after each phase of a task ("reset", "adapt", "predict");
#: what it returns is added to the task's figures (e.g. the substrate cost of the adaptation).
Meter = Callable[[str, Any], Mapping[str, float] | None]


class TaskTimeout(Exception):
    """A task ran past the evaluation's per-task time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the block with :class:`TaskTimeout` after ``seconds`` (SIGALRM; main thread on POSIX only,
    elsewhere the caller's check after the task is the limit)."""
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise TaskTimeout(f"interrupted at the per-task time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_task(agent: Agent, task: Task, metric: Metric, meters: tuple[Meter, ...] = (),
              time_limit_s: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    with _time_limit(time_limit_s):
        agent.reset()
        for m in meters:
            row.update(m("reset", agent) or {})
        shown = task.without_answers()
        agent.adapt(shown)
        for m in meters:
            row.update(m("adapt", agent) or {})
        answer = agent.predict(shown)
        for m in meters:
            row.update(m("predict", agent) or {})
    took = time.perf_counter() - t0
    if time_limit_s is not None and took > time_limit_s:
        raise TaskTimeout(f"took {took:.3g} s, over the per-task time limit of {time_limit_s:g} s")
    answer = task.check_prediction(answer)
    return {**dict(metric(task, answer)), **row, "task_s": took}


def evaluate(agent: Agent, tasks: Iterable[Task], deployment: Any = None, *, seed: int = 0,
             metric: Metric | None = None, on_error: str = "raise", progress: bool = False,
             time_limit_s: float | None = None, meters: Iterable[Meter] = ()) -> EvalResult:
    """Deploy ``agent`` (when ``deployment`` is given), then reset, adapt, predict and score every task.

    Args:
        agent: any object implementing :class:`pcmeta.agents.Agent`.
        tasks: task dataclasses with their answers (:mod:`pcmeta.tasks.episodes`).
        deployment: a :class:`pcmeta.hardware.Deployment` (None: the agent stays where it is).
        seed: the chip seed passed to ``deploy``.
        metric: ``(task, answer) -> dict``; default: the family's (:data:`METRICS`).
        on_error: "raise" (default) or "record" (a failing task becomes ``{"error": reason}``).
        progress: show a tqdm bar.
        time_limit_s: wall-clock seconds allowed per task (reset + adapt + predict); a task past it fails with
            :class:`TaskTimeout` (interrupted at the limit on the main thread of a POSIX system, else checked
            when it ends). None: no limit.
        meters: :data:`Meter` s called after each phase of a task; their figures join the task's row.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if time_limit_s is not None and not (isinstance(time_limit_s, (int, float)) and 0 < time_limit_s < math.inf):
        raise ValueError(f"time_limit_s must be None or a positive finite number of seconds, got {time_limit_s!r}")
    meters = tuple(meters)
    check_agent(agent)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("evaluate() needs at least one task")
    default, name = METRICS[type(tasks[0])]
    metric = metric or default
    if deployment is not None:
        agent.deploy(deployment, seed=seed)
    from tqdm.auto import tqdm

    res, t0 = EvalResult(name), time.perf_counter()
    for task in tqdm(tasks, disable=not progress, desc="tasks", unit="task"):
        try:
            res.per_task.append(_one_task(agent, task, metric, meters, time_limit_s))
        except Exception as exc:  # noqa: BLE001 -- recorded with its reason when asked to
            if on_error == "raise":
                raise
            res.per_task.append({"error": f"{type(exc).__name__}: {exc}"})
    res.wall_s = time.perf_counter() - t0
    return res
