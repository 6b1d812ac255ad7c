"""The agent protocol: what any learner implements to run in pcmeta's envs, evaluation loop and benchmarks.

An agent is any object with these four methods (a :class:`typing.Protocol`: no base class to inherit)::

    agent.deploy(deployment, seed=0)   # place the meta-learned weights where `deployment` says (a fresh chip)
    agent.adapt(task)                  # learn from the task's support data / demonstration
    scores = agent.predict(task)       # answer the task's queries
    agent.reset()                      # back to the meta-learned state (before the next task)

- ``deployment`` is a :class:`pcmeta.hardware.Deployment`: substrate kind and config, time after programming
  (``deployment.time_s``), per-array placement rules. ``deployment.build(seed)`` gives the substrate to
  place weights on; an agent without weights on a substrate (e.g. a nearest-prototype learner) may ignore
  it. The evaluation loop calls ``deploy`` once before the first task, so an agent that wants a fresh chip
  per task builds it in ``reset``.
- ``task`` is a task dataclass of :mod:`pcmeta.tasks.episodes`, with the grader's answers removed:

  - :class:`~pcmeta.tasks.episodes.OmniglotTask`: ``support_x`` (N*K, 28, 28) float32 in [0, 1],
    ``support_y`` (N*K,) int64 in 0..N-1, ``query_x`` (Q, 28, 28). ``predict`` returns scores (Q, N)
    (higher = more likely; the argmax is the answer).
  - :class:`~pcmeta.tasks.episodes.ArmTask`: ``xyz`` (T, 3) m, the demonstrated target path, and
    ``start`` (2,) rad. ``predict`` returns the test trial's joint velocities (T, 2) in rad/s.

- The evaluation loop (:func:`pcmeta.agents.evaluation.evaluate`) calls, per task: ``reset()``,
  ``adapt(task)``, ``predict(task)``, and scores the answer; an agent may be asked to predict several
  times after one adaptation (e.g. one query at a time in a Gymnasium env).

Gym-style ``act(obs)`` is a thin adapter over the protocol: :class:`OmniglotPolicy` for
``pcmeta/OmniglotFewShot-v0`` (adapts when the support set changes, then answers each query, or with the
env's ``query_batch=True`` all of the task's queries in one ``predict`` call).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from pcmeta.tasks.episodes import ArmTask, OmniglotTask

Task = OmniglotTask | ArmTask


@runtime_checkable
class Agent(Protocol):
    """A learner that pcmeta can deploy, adapt, query and reset (see the module docstring)."""

    def deploy(self, deployment: Any, seed: int = 0) -> None:
        """Place the agent's meta-learned weights as ``deployment`` says (``deployment.build(seed)``)."""

    def adapt(self, task: Task) -> None:
        """Learn from the task's support data (Omniglot) or demonstration (arm)."""

    def predict(self, task: Task) -> np.ndarray:
        """Scores (Q, N) for an Omniglot task; joint velocities (T, 2) rad/s for an arm task."""

    def reset(self) -> None:
        """Return to the meta-learned state (undo ``adapt``)."""


def check_agent(agent: Any) -> None:
    """Raise TypeError naming the missing methods if ``agent`` does not implement :class:`Agent`."""
    missing = [m for m in ("deploy", "adapt", "predict", "reset") if not callable(getattr(agent, m, None))]
    if missing:
        raise TypeError(f"{type(agent).__name__} is not a pcmeta agent: it lacks {missing} "
                        "(see pcmeta.agents.protocol.Agent)")


class OmniglotPolicy:
    """``act(obs) -> label(s)`` for ``pcmeta/OmniglotFewShot-v0``, over any :class:`Agent`.

    The env shows the support set with every query; the agent is reset and adapted whenever the support set
    changes (a new task), then:

    - ``obs["query_image"]`` (the default env, one query per step): ``predict`` on a task with that one
      query; ``act`` returns its label, an int;
    - ``obs["query_images"]`` (the env's ``query_batch=True``): ``predict`` once on a task with all of them
      (so an agent may use the query batch together, e.g. transductive batch norm); ``act`` returns their
      labels, an int64 array (Q,) in the shown order.
    """

    def __init__(self, agent: Agent, n_way: int) -> None:
        check_agent(agent)
        self.agent, self.n_way = agent, int(n_way)
        self._key: bytes | None = None
        self._task: OmniglotTask | None = None
        self.adaptations = 0

    def act(self, obs: dict) -> int | np.ndarray:
        sx = np.asarray(obs["support_images"], np.float32)
        sy = np.asarray(obs["support_labels"], np.int64)
        batch = "query_images" in obs
        if batch:
            q = np.asarray(obs["query_images"], np.float32).reshape(-1, 28, 28)
        elif "query_image" in obs:
            q = np.asarray(obs["query_image"], np.float32).reshape(1, 28, 28)
        else:
            raise ValueError(f"obs must hold 'query_image' or 'query_images', got keys {sorted(obs)}")
        key = sx.tobytes() + sy.tobytes()
        if key != self._key:
            self._task = OmniglotTask(sx, sy, q, n_way=self.n_way)
            self.agent.reset()
            self.agent.adapt(self._task)
            self._key = key
            self.adaptations += 1
        task = OmniglotTask(self._task.support_x, self._task.support_y, q, n_way=self.n_way)
        labels = task.check_prediction(self.agent.predict(task)).argmax(-1).astype(np.int64)
        return labels if batch else int(labels[0])
