"""Tasks as the :class:`pcmeta.agents.Agent` protocol sees them: one small, validated dataclass per family.

A task holds what a learner may use (support data, a demonstration) and, separately, the grader's answers
(``query_y``, ``omega``), which the evaluation loop strips with :meth:`~OmniglotTask.without_answers`
before an agent sees the task. Arrays are numpy; units are in the field docs.

- :class:`OmniglotTask`: N-way K-shot classification. ``predict`` returns scores (Q, N).
- :class:`ArmTask`: one-shot trajectory learning. ``predict`` returns joint velocities (T, 2) in rad/s.

Portable Omniglot tasks. An :class:`OmniglotTask`'s ``spec`` names its images rather than indexing one env's
pool, so a task set is plain JSON that means the same pixels in any env or process
(:func:`load_omniglot_task` rebuilds the task from it; ``pcmeta/OmniglotFewShot-v0``'s ``set_task`` loads it)::

    {"family": "omniglot", "version": 1, "split": "paper", "part": "test", "n_way": 2, "k_shot": 1, "n_query": 2,
     "classes": [{"alphabet": "Angelic", "character": "character07", "rotation": 0,
                  "support_drawings": [4], "query_drawings": [11, 17]},
                 {"alphabet": "Tengwar", "character": "character12", "rotation": 0,
                  "support_drawings": [20], "query_drawings": [1, 8]}],
     "query_order": [2, 0, 3, 1]}

- ``classes[c]`` has label ``c``; ``alphabet`` and ``character`` are the folder names of the official archives
  (``images_background/<alphabet>/<character>/``), ``rotation`` is in degrees counter-clockwise (0, 90, 180
  or 270; all drawings of the class alike).
- Drawings are the OFFICIAL drawing numbers 1..20: the ``NN`` of the file ``<id>_NN.png`` (the 0-based
  drawing index of :mod:`pcmeta.tasks.omniglot` plus one); distinct within a class.
- The task's queries are class-major (the ``n_query`` query drawings of class 0, then class 1, ...) shown in
  ``query_order``: query ``j`` is class-major query ``query_order[j]``, so ``query_y[j] = query_order[j] //
  n_query``. The images are preprocessed as the split's own preprocessing (``"paper"`` / ``"classic"``).
- ``split``/``part`` say which pool of :func:`pcmeta.tasks.omniglot.class_pool` the characters are from; an
  env of another split, part, N, K or Q refuses the task (:func:`check_omniglot_spec_fits`).

Imports nothing else of pcmeta at module level.
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
        spec: the portable description (the module docstring; :func:`check_omniglot_spec`) that rebuilds
            exactly this task, or None. It determines ``query_y``, so :meth:`without_answers` drops it.
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray | None = None
    n_way: int = 5
    meta: dict | None = None
    spec: dict | None = None

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
        if self.spec is not None:
            set_(self, "spec", self._checked_spec())

    def _checked_spec(self) -> dict:
        spec = check_omniglot_spec(self.spec)
        n, k, q = spec["n_way"], spec["k_shot"], spec["n_query"]
        if (n, n * k, n * q) != (self.n_way, self.support_x.shape[0], self.query_x.shape[0]):
            raise ValueError(f"spec describes a {n}-way {k}-shot task with {q} queries per class ({n * k} support, "
                             f"{n * q} query images) but the task is {self.n_way}-way with "
                             f"{self.support_x.shape[0]} support and {self.query_x.shape[0]} query images")
        return spec

    @property
    def k_shot(self) -> int:
        return self.support_x.shape[0] // self.n_way

    def without_answers(self) -> "OmniglotTask":
        """The task as an agent sees it (``query_y`` removed, and ``spec``, which determines it)."""
        return replace(self, query_y=None, spec=None)

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


# ------------------------------------------------------------------------------------------ portable specs
#: The version of the portable Omniglot task description this pcmeta writes and reads.
OMNIGLOT_SPEC_VERSION = 1
_SPEC_KEYS = ("family", "version", "split", "part", "n_way", "k_shot", "n_query", "classes", "query_order")
_CLASS_KEYS = ("alphabet", "character", "rotation", "support_drawings", "query_drawings")
_N_DRAWINGS = 20  # drawings per Omniglot character (pcmeta.tasks.omniglot.N_DRAWINGS)


def _int(x: Any, what: str, lo: int, hi: int | None = None) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < lo or (hi is not None and x > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"Omniglot task spec: {what} must be an int {rng}, got {x!r}")
    return int(x)


def _ints(x: Any, n: int, what: str, lo: int, hi: int) -> list[int]:
    if not isinstance(x, (list, tuple, np.ndarray)) or len(x) != n:
        raise ValueError(f"Omniglot task spec: {what} must be a list of {n} ints, got {x!r}")
    return [_int(v, f"{what} entries", lo, hi) for v in x]


def _spec_class(c: Any, i: int, k: int, q: int) -> dict:
    where = f"classes[{i}]"
    if not isinstance(c, dict) or set(_CLASS_KEYS) - set(c):
        raise ValueError(f"Omniglot task spec: {where} must be a dict with keys {list(_CLASS_KEYS)}, got {c!r}")
    for key in ("alphabet", "character"):
        if not isinstance(c[key], str) or not c[key] or "/" in c[key]:
            raise ValueError(f"Omniglot task spec: {where}.{key} must be a folder name (a non-empty str "
                             f"without '/'), got {c[key]!r}")
    rot = _int(c["rotation"], f"{where}.rotation (degrees)", 0, 270)
    if rot % 90:
        raise ValueError(f"Omniglot task spec: {where}.rotation must be 0, 90, 180 or 270 degrees, got {rot}")
    sd = _ints(c["support_drawings"], k, f"{where}.support_drawings (official numbers 1..20)", 1, _N_DRAWINGS)
    qd = _ints(c["query_drawings"], q, f"{where}.query_drawings (official numbers 1..20)", 1, _N_DRAWINGS)
    if len(set(sd + qd)) != k + q:
        raise ValueError(f"Omniglot task spec: {where} drawings must be distinct, got support {sd}, query {qd}")
    return {"alphabet": c["alphabet"], "character": c["character"], "rotation": rot,
            "support_drawings": sd, "query_drawings": qd}


def check_omniglot_spec(spec: Any) -> dict:
    """``spec`` (the portable task description of the module docstring) validated, as a new dict of plain
    ints, strs and lists; ValueError naming the first thing wrong."""
    if not isinstance(spec, dict):
        raise ValueError(f"an Omniglot task spec is a dict, got {type(spec).__name__}")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"Omniglot task spec lacks {missing} (expected keys {list(_SPEC_KEYS)})")
    if spec["family"] != "omniglot":
        raise ValueError(f"Omniglot task spec: family must be 'omniglot', got {spec['family']!r}")
    if spec["version"] != OMNIGLOT_SPEC_VERSION:
        raise ValueError(f"Omniglot task spec version {spec['version']!r} is not supported: this pcmeta reads "
                         f"version {OMNIGLOT_SPEC_VERSION}")
    for key in ("split", "part"):
        if not isinstance(spec[key], str):
            raise ValueError(f"Omniglot task spec: {key} must be a str, got {spec[key]!r}")
    n = _int(spec["n_way"], "n_way", 2)
    k = _int(spec["k_shot"], "k_shot", 1, _N_DRAWINGS - 1)
    q = _int(spec["n_query"], "n_query", 1, _N_DRAWINGS - k)
    classes = spec["classes"]
    if not isinstance(classes, (list, tuple)) or len(classes) != n:
        got = len(classes) if isinstance(classes, (list, tuple)) else repr(classes)
        raise ValueError(f"Omniglot task spec: classes must be a list of n_way = {n} classes, got {got}")
    order = _ints(spec["query_order"], n * q, "query_order", 0, n * q - 1)
    if len(set(order)) != n * q:
        raise ValueError(f"Omniglot task spec: query_order must be a permutation of 0..{n * q - 1}")
    return {"family": "omniglot", "version": OMNIGLOT_SPEC_VERSION, "split": spec["split"], "part": spec["part"],
            "n_way": n, "k_shot": k, "n_query": q, "classes": [_spec_class(c, i, k, q) for i, c in enumerate(classes)],
            "query_order": order}


def check_omniglot_spec_fits(spec: Any, *, split: str, part: str, n_way: int, k_shot: int, n_query: int,
                             what: str = "env") -> dict:
    """:func:`check_omniglot_spec`, and ValueError unless the task is from ``split``/``part`` and has
    ``n_way``/``k_shot``/``n_query``; the message names the fields that differ and what the ``what`` has."""
    spec = check_omniglot_spec(spec)
    have = {"split": split, "part": part, "n_way": int(n_way), "k_shot": int(k_shot), "n_query": int(n_query)}
    diff = [f for f in have if spec[f] != have[f]]
    if diff:
        def desc(d: dict) -> str:
            return (f"split {d['split']!r} part {d['part']!r} ({d['n_way']}-way {d['k_shot']}-shot, "
                    f"{d['n_query']} queries per class)")
        raise ValueError(f"task is from {desc(spec)} but this {what} draws from {desc(have)}: "
                         f"{', '.join(diff)} {'differs' if len(diff) == 1 else 'differ'}; make the {what} with "
                         + ", ".join(f"{f}={spec[f]!r}" for f in diff))
    return spec


def omniglot_spec(pool: Any, classes: Any, rotations: Any, drawings: Any, k_shot: int,
                  query_order: Any = None) -> dict:
    """The portable spec of one task given by indices into ``pool`` (a :class:`pcmeta.tasks.omniglot.ClassPool`):
    ``classes`` (N,) pool class indices, ``rotations`` (N,) degrees, ``drawings`` (N, K+Q) 0-based drawing
    indices (first ``k_shot`` support), ``query_order`` (N*Q,) (None: class-major, 0..N*Q-1)."""
    classes, drawings = np.asarray(classes, np.int64), np.asarray(drawings, np.int64)
    chars = classes // 4 if pool.rotation == "classes" else classes
    out = []
    for c, r, d in zip(chars.tolist(), np.asarray(rotations).tolist(), drawings.tolist()):
        alphabet, character = pool.characters[c].split("/")
        out.append({"alphabet": alphabet, "character": character, "rotation": int(r) % 360,
                    "support_drawings": [i + 1 for i in d[:k_shot]], "query_drawings": [i + 1 for i in d[k_shot:]]})
    n, q = len(out), drawings.shape[1] - k_shot
    order = list(range(n * q)) if query_order is None else [int(i) for i in query_order]
    return check_omniglot_spec({"family": "omniglot", "version": OMNIGLOT_SPEC_VERSION, "split": pool.split,
                                "part": pool.part, "n_way": n, "k_shot": int(k_shot), "n_query": q,
                                "classes": out, "query_order": order})


def omniglot_spec_indices(pool: Any, spec: Any) -> dict:
    """``spec`` as indices into ``pool`` (a :class:`pcmeta.tasks.omniglot.ClassPool`): the dict of
    ``pcmeta/OmniglotFewShot-v0``'s index tasks (``classes``, ``rotations`` in degrees, 0-based ``drawings``
    (N, K+Q), ``query_order``). ValueError if the spec is from another split/part than the pool or names a
    character the pool lacks."""
    spec = check_omniglot_spec(spec)
    if (spec["split"], spec["part"]) != (pool.split, pool.part):
        raise ValueError(f"task is from split {spec['split']!r} part {spec['part']!r} but the class pool is split "
                         f"{pool.split!r} part {pool.part!r}")
    index = {name: i for i, name in enumerate(pool.characters)}
    classes = []
    for i, c in enumerate(spec["classes"]):
        name = f"{c['alphabet']}/{c['character']}"
        if name not in index:
            raise ValueError(f"task class {i} names character {name!r}, which is not among the {len(index)} "
                             f"characters of split {pool.split!r} part {pool.part!r}")
        classes.append(index[name] * 4 + c["rotation"] // 90 if pool.rotation == "classes" else index[name])
    return {"classes": classes, "rotations": [c["rotation"] for c in spec["classes"]],
            "drawings": [[d - 1 for d in c["support_drawings"] + c["query_drawings"]] for c in spec["classes"]],
            "query_order": list(spec["query_order"])}


def load_omniglot_task(spec: Any, data_dir: Any = None) -> OmniglotTask:
    """The :class:`OmniglotTask` (answers included) that ``spec`` describes, built from the Omniglot data
    in ``data_dir`` (default ``$PCMETA_DATA_DIR``, else the user cache): the same pixels, labels and query
    order in any process. ValueError for a malformed spec or a character not in the spec's split/part."""
    return load_omniglot_tasks([spec], data_dir)[0]


def load_omniglot_tasks(specs: Any, data_dir: Any = None) -> list[OmniglotTask]:
    """:func:`load_omniglot_task` for each of ``specs`` (each split/part's images loaded once)."""
    from pcmeta.tasks.omniglot import TaskSampler, class_pool  # noqa: PLC0415 (same part; loads the data)

    pools: dict = {}
    out = []
    for spec in specs:
        spec = check_omniglot_spec(spec)
        key = (spec["split"], spec["part"])
        if key not in pools:
            pools[key] = class_pool(*key, data_dir)
        pool = pools[key]
        idx = omniglot_spec_indices(pool, spec)
        sampler = TaskSampler(pool, spec["n_way"], spec["k_shot"], spec["n_query"], seed=0)
        b = sampler.build(idx["classes"], idx["rotations"], idx["drawings"])
        order = np.asarray(idx["query_order"], np.int64)
        out.append(OmniglotTask(b.support_x[0], b.support_y[0], b.query_x[0][order], b.query_y[0][order],
                                spec["n_way"], _meta(pool, b, 0), spec))
    return out


def _meta(pool: Any, b: Any, t: int) -> dict:
    chars = b.classes[t] // 4 if pool.rotation == "classes" else b.classes[t]
    return {"split": pool.split, "part": pool.part, "characters": [pool.characters[c] for c in chars],
            "rotations": b.rotations[t].tolist(), "drawings": b.drawings[t].tolist()}


# ------------------------------------------------------------------------------------------ task sets
def omniglot_tasks(n: int, n_way: int = 5, k_shot: int = 5, n_query: int = 5, *, split: str = "paper",
                   part: str = "test", seed: int = 0, data_dir: Any = None, batch: int = 50) -> list[OmniglotTask]:
    """``n`` Omniglot tasks with their answers, drawn as ``pcmeta omniglot eval`` draws them (a
    :class:`~pcmeta.tasks.omniglot.TaskSampler` seeded ``seed``, batches of ``batch`` = 50), so the same
    arguments give the same tasks as that command. Each task's ``spec`` is its portable description (queries
    class-major: ``query_order`` 0..N*Q-1), which :func:`load_omniglot_task` turns back into the same task;
    ``meta`` names its characters, rotations and 0-based drawing indices."""
    from pcmeta.tasks.omniglot import TaskSampler, class_pool  # noqa: PLC0415 (same part; loads the data)

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    pool = class_pool(split, part, data_dir)
    sampler = TaskSampler(pool, n_way, k_shot, n_query, seed=seed)
    out: list[OmniglotTask] = []
    while len(out) < n:
        b = sampler.sample(min(batch, n - len(out)))
        for t in range(len(b.support_x)):
            spec = omniglot_spec(pool, b.classes[t], b.rotations[t], b.drawings[t], k_shot)
            out.append(OmniglotTask(b.support_x[t], b.support_y[t], b.query_x[t], b.query_y[t], n_way,
                                    _meta(pool, b, t), spec))
    return out


def arm_tasks(n: int, *, seed: int = 0, robot: str = "scorbot") -> list[ArmTask]:
    """``n`` arm tasks drawn as ``pcmeta arm eval --seed`` draws its targets (same seed, same targets)."""
    from pcmeta.tasks import trajectories as traj  # noqa: PLC0415 (same part)

    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    targets = traj.sample_targets(n, robot=robot, rng=np.random.default_rng(seed)).numpy()
    return [ArmTask.from_targets(targets, i, meta={"seed": seed, "index": i}) for i in range(n)]
