"""Tasks as the :class:`pcmeta.agents.Agent` protocol sees them: one small, validated dataclass per family.

A task holds what a learner may use (support data, a demonstration) and, separately, the grader's answers
(``query_y``, ``omega``), which the evaluation loop strips with :meth:`~OmniglotTask.without_answers`
before an agent sees the task. Arrays are numpy; units are in the field docs.

- :class:`OmniglotTask`: N-way K-shot classification. ``predict`` returns scores (Q, N).
- :class:`ArmTask`: one-shot trajectory learning. ``predict`` returns joint velocities (T, 2) in rad/s.

Imports nothing else of pcmeta.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

IMAGE_SHAPE = (28, 28)


def _array(x: Any, dtype, what: str, shape_doc: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{what} must have shape {shape_doc}, got {a.shape}")
    if np.issubdtype(dtype, np.floating):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{what} must be real numbers, got dtype {a.dtype}")
        a = a.astype(dtype, copy=False)
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or inf; expected finite values")
    else:
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{what} must be integers, got dtype {a.dtype}")
        a = a.astype(dtype, copy=False)
    return a


def _images(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 4 and a.shape[1] == 1:  # (n, 1, 28, 28), the layout of the env and the sampler
        a = a[:, 0]
    a = _array(a, np.float32, what, "(n, 28, 28)", 3)
    if a.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{what} must have shape (n, 28, 28), got {a.shape}")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"{what} must lie in [0, 1], got values in [{a.min():g}, {a.max():g}]")
    return a


@dataclass(frozen=True, eq=False)
class OmniglotTask:
    """One N-way K-shot task.

    Attributes:
        support_x: (N*K, 28, 28) float32 images in [0, 1] (``(N*K, 1, 28, 28)`` is accepted and squeezed).
        support_y: (N*K,) int64 labels in 0..N-1, every label present.
        query_x: (Q, 28, 28) float32 images in [0, 1].
        query_y: (Q,) int64 labels, or None: the grader's answers, never shown to an agent.
        n_way: N.
        meta: a JSON-able description of where the task came from (split, part, characters, ...).
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray | None = None
    n_way: int = 5
    meta: dict | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.n_way, (int, np.integer)) or self.n_way < 2:
            raise ValueError(f"n_way must be an int >= 2, got {self.n_way!r}")
        set_(self, "n_way", int(self.n_way))
        set_(self, "support_x", _images(self.support_x, "support_x"))
        set_(self, "query_x", _images(self.query_x, "query_x"))
        sy = _array(self.support_y, np.int64, "support_y", "(N*K,)", 1)
        if sy.shape[0] != self.support_x.shape[0]:
            raise ValueError(f"support_y has {sy.shape[0]} labels for {self.support_x.shape[0]} support images")
        if sy.size and (sy.min() < 0 or sy.max() >= self.n_way or np.unique(sy).size != self.n_way):
            raise ValueError(f"support_y must hold every label 0..{self.n_way - 1}, got {np.unique(sy).tolist()}")
        set_(self, "support_y", sy)
        if self.query_y is not None:
            qy = _array(self.query_y, np.int64, "query_y", "(Q,)", 1)
            if qy.shape[0] != self.query_x.shape[0]:
                raise ValueError(f"query_y has {qy.shape[0]} labels for {self.query_x.shape[0]} query images")
            if qy.size and (qy.min() < 0 or qy.max() >= self.n_way):
                raise ValueError(f"query_y must lie in 0..{self.n_way - 1}")
            set_(self, "query_y", qy)

    @property
    def k_shot(self) -> int:
        return self.support_x.shape[0] // self.n_way

    def without_answers(self) -> "OmniglotTask":
        """The task as an agent sees it (``query_y`` removed)."""
        return replace(self, query_y=None)

    def check_prediction(self, scores: Any) -> np.ndarray:
        """``scores`` as a finite float64 (Q, N) array, or ValueError saying what was expected."""
        return check_scores(scores, (self.query_x.shape[0], self.n_way), "predict() scores (Q, N)")


@dataclass(frozen=True, eq=False)
class ArmTask:
    """One arm movement to learn from one demonstration.

    Attributes:
        xyz: (T, 3) float64, m: the demonstrated target effector path, one point per 1-ms step (what the
            learning-signal generator sees).
        start: (2,) float64, rad: the joint angles at the start of every trial.
        omega: (T, 2) float64, rad/s: the target joint velocities, or None: the grader's answer, never shown
            to an agent (the trajectory family's :class:`pcmeta.tasks.trajectories.ArmTargets` ``omega``).
        q: (T, 2) float64, rad: the target joint angles (clipped to the joint limits), or None; an answer too.
        robot: the arm ("scorbot" or "planar2").
        meta: a JSON-able description (seed, index, ...).

    An agent's ``predict`` returns the test trial's joint velocities (T, 2) in rad/s.
    """

    xyz: np.ndarray
    start: np.ndarray
    omega: np.ndarray | None = None
    q: np.ndarray | None = None
    robot: str = "scorbot"
    meta: dict | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        xyz = _array(self.xyz, np.float64, "xyz", "(T, 3) in m", 2)
        if xyz.shape[1] != 3 or xyz.shape[0] < 1:
            raise ValueError(f"xyz must have shape (T, 3) in m, got {xyz.shape}")
        set_(self, "xyz", xyz)
        start = _array(self.start, np.float64, "start", "(2,) in rad", 1)
        if start.shape != (2,):
            raise ValueError(f"start must have shape (2,) in rad, got {start.shape}")
        set_(self, "start", start)
        if self.omega is not None:
            om = _array(self.omega, np.float64, "omega", "(T, 2) in rad/s", 2)
            if om.shape != (xyz.shape[0], 2):
                raise ValueError(f"omega must have shape ({xyz.shape[0]}, 2) in rad/s, got {om.shape}")
            set_(self, "omega", om)
        if self.q is not None:
            q = _array(self.q, np.float64, "q", "(T, 2) in rad", 2)
            if q.shape != (xyz.shape[0], 2):
                raise ValueError(f"q must have shape ({xyz.shape[0]}, 2) in rad, got {q.shape}")
            set_(self, "q", q)

    @property
    def steps(self) -> int:
        return self.xyz.shape[0]

    def without_answers(self) -> "ArmTask":
        """The task as an agent sees it (``omega`` and ``q`` removed)."""
        return replace(self, omega=None, q=None)

    def check_prediction(self, omega: Any) -> np.ndarray:
        """``omega`` as a finite float64 (T, 2) array in rad/s, or ValueError saying what was expected."""
        return check_scores(omega, (self.steps, 2), "predict() joint velocities (T, 2) in rad/s")

    @classmethod
    def from_targets(cls, targets: Any, i: int = 0, meta: dict | None = None) -> "ArmTask":
        """Task ``i`` of a :class:`pcmeta.tasks.trajectories.ArmTargets` batch (numpy or torch)."""
        t = targets.numpy()
        return cls(xyz=t.xyz[i], start=t.start, omega=t.omega[i], q=t.q[i], robot=t.robot, meta=meta)

    def as_env_task(self) -> dict:
        """The task dict of ``pcmeta/ArmTrajectory-v0``'s ``set_task`` (needs ``omega``)."""
        from pcmeta.tasks.trajectories import angles_from_velocities  # noqa: PLC0415 (same part)

        if self.omega is None:
            raise ValueError("as_env_task needs the task's omega (the grader's copy of the task)")
        q = self.q if self.q is not None else angles_from_velocities(self.omega, self.start)
        return {"omega": self.omega, "q": q, "xyz": self.xyz, "start": self.start, "robot": self.robot}


def check_scores(x: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    """An agent's answer as a finite float64 array of ``shape``, else ValueError naming what was expected."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: expected a real array of shape {shape}, got {type(x).__name__} ({exc})") from None
    if a.shape != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or inf")
    return a


# ------------------------------------------------------------------------------------------ task sets
def omniglot_tasks(n: int, n_way: int = 5, k_shot: int = 5, n_query: int = 5, *, split: str = "paper",
                   part: str = "test", seed: int = 0, data_dir: Any = None, batch: int = 50) -> list[OmniglotTask]:
    """``n`` Omniglot tasks with their answers, drawn as ``pcmeta omniglot eval`` draws them (a
    :class:`~pcmeta.tasks.omniglot.TaskSampler` seeded ``seed``, batches of ``batch`` = 50), so the same
    arguments give the same tasks as that command. ``meta`` names each task's characters, rotations and drawings."""
    from pcmeta.tasks.omniglot import TaskSampler, class_pool  # noqa: PLC0415 (same part; loads the data)

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    pool = class_pool(split, part, data_dir)
    sampler = TaskSampler(pool, n_way, k_shot, n_query, seed=seed)
    out: list[OmniglotTask] = []
    while len(out) < n:
        b = sampler.sample(min(batch, n - len(out)))
        for t in range(len(b.support_x)):
            chars = b.classes[t] // 4 if pool.rotation == "classes" else b.classes[t]
            meta = {"split": split, "part": part, "characters": [pool.characters[c] for c in chars],
                    "rotations": b.rotations[t].tolist(), "drawings": b.drawings[t].tolist()}
            out.append(OmniglotTask(b.support_x[t], b.support_y[t], b.query_x[t], b.query_y[t], n_way, meta))
    return out


def arm_tasks(n: int, *, seed: int = 0, robot: str = "scorbot") -> list[ArmTask]:
    """``n`` arm tasks drawn as ``pcmeta arm eval --seed`` draws its targets (same seed, same targets)."""
    from pcmeta.tasks import trajectories as traj  # noqa: PLC0415 (same part)

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    targets = traj.sample_targets(n, robot=robot, rng=np.random.default_rng(seed)).numpy()
    return [ArmTask.from_targets(targets, i, meta={"seed": seed, "index": i}) for i in range(n)]
