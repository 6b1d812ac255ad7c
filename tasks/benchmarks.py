"""pcmeta's benchmark definitions: fixed, versioned, seed-reproducible task sets with an exact protocol.

A :class:`Benchmark` is data (after Meta-World's ML1/ML10 and learn2learn's task sets): which tasks, how
many, what an agent may do, and what is measured. :data:`BENCHMARKS` holds them by name; the evaluation
loop that runs an agent on one is :mod:`pcmeta.agents.benchmark`. A definition never changes once
published: a change gets a new version suffix (``-v1``).

Omniglot few-shot (``omniglot-{N}w{K}s-v0`` on the paper split, ``omniglot-classic-{N}w{K}s-v0`` on the
classic split; :mod:`pcmeta.tasks.omniglot`): N-way K-shot tasks, ``n_query`` distinct query drawings per
class, classes without replacement. Meta-train tasks come from the split's ``train`` part, meta-validation
tasks from ``val``, meta-test tasks from ``test``; each set is the stream of
:func:`pcmeta.tasks.episodes.omniglot_tasks` with the set's fixed seed, so the first ``n`` meta-test
tasks of a benchmark are the same images in every process (and the tasks of ``pcmeta omniglot eval`` with
that seed). Metric: accuracy (fraction of queries right), higher is better.

Arm one-shot (``arm-oneshot-v0``; :mod:`pcmeta.tasks.trajectories`): the paper's trajectory family, one
demonstration of the target path, ONE weight update, then a test trial. Meta-test targets are
:func:`pcmeta.tasks.episodes.arm_tasks` with the set's seed. Metrics: MSE of the joint velocities
((rad/s)^2) and of the effector path (m^2); the headline is their mean (the meta-training loss), lower is
better.

Every definition also runs as a Gymnasium episode loop over the existing envs (``env_id``): the same tasks
loaded into ``pcmeta/OmniglotFewShot-v0`` or ``pcmeta/ArmTrajectory-v0``.

Imports nothing else of pcmeta at module level (task sets load the data when asked).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Seeds of the fixed task sets (the same for every benchmark: a set is identified by benchmark + set).
SET_SEEDS = {"train": 1000, "val": 2000, "test": 0}
SETS = tuple(SET_SEEDS)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark definition (see the module docstring).

    Attributes:
        name: versioned id, e.g. ``"omniglot-5w5s-v0"``.
        family: ``"omniglot"`` or ``"arm"``.
        description: one line.
        n_way, k_shot, n_query: Omniglot task shape (queries per class); arm: 0.
        split: Omniglot split (``"paper"`` or ``"classic"``); arm: ``""``.
        test_tasks: the number of meta-test tasks of the protocol (a run may use fewer; the record says how many).
        adapt_steps: adaptation steps the protocol allows on a task (gradient steps or weight updates);
            ``None``: the agent's own (few-shot classification allows any learner, its steps are reported).
        metric: the headline figure; ``higher_is_better`` its direction.
        env_id: the Gymnasium env that runs the same tasks.
    """

    name: str
    family: str
    description: str
    n_way: int = 0
    k_shot: int = 0
    n_query: int = 0
    split: str = ""
    test_tasks: int = 1000
    adapt_steps: int | None = None
    metric: str = "accuracy"
    higher_is_better: bool = True
    env_id: str = ""

    def tasks(self, n: int | None = None, part: str = "test", *, data_dir: Any = None, start: int = 0) -> list:
        """Tasks ``start .. start + n`` of the benchmark's fixed ``part`` set ("train", "val" or "test"; default
        ``n``: ``test_tasks``), with their answers (the evaluation loop hides them from the agent)."""
        from pcmeta.tasks.episodes import arm_tasks, omniglot_tasks  # noqa: PLC0415 (same part; loads data)

        if part not in SET_SEEDS:
            raise ValueError(f"part must be one of {SETS}, got {part!r}")
        n = self.test_tasks if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int (tasks), got {n!r}")
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        seed = SET_SEEDS[part]
        if self.family == "arm":
            return arm_tasks(start + n, seed=seed)[start:]
        return omniglot_tasks(start + n, self.n_way, self.k_shot, self.n_query, split=self.split, part=part,
                              seed=seed, data_dir=data_dir)[start:]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _omniglot(n_way: int, k_shot: int, split: str, n_query: int) -> Benchmark:
    prefix = "omniglot" if split == "paper" else "omniglot-classic"
    where = ("20 evaluation alphabets (meta-train: 30 background alphabets)" if split == "paper"
             else "423 held-out characters x 4 rotations (classic split)")
    return Benchmark(
        name=f"{prefix}-{n_way}w{k_shot}s-v0", family="omniglot",
        description=f"{n_way}-way {k_shot}-shot Omniglot, {n_query} quer{'y' if n_query == 1 else 'ies'} per class, "
                    f"{where}",
        n_way=n_way, k_shot=k_shot, n_query=n_query, split=split, test_tasks=1000, adapt_steps=None,
        metric="accuracy", higher_is_better=True, env_id="pcmeta/OmniglotFewShot-v0")


#: Every published benchmark, by name.
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    _omniglot(5, 1, "paper", 5), _omniglot(5, 5, "paper", 5), _omniglot(20, 1, "paper", 5),
    _omniglot(5, 1, "classic", 1), _omniglot(5, 5, "classic", 1), _omniglot(20, 1, "classic", 1),
    Benchmark(name="arm-oneshot-v0", family="arm",
              description="one demonstration of a target path, one weight update, then the test trial "
                          "(the paper's trajectory family, scorbot arm, 249 time steps per trial)",
              test_tasks=200, adapt_steps=1, metric="loss", higher_is_better=False,
              env_id="pcmeta/ArmTrajectory-v0"),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark ``name``; ValueError listing the names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"no benchmark {name!r}; benchmarks: {sorted(BENCHMARKS)}") from None
