"""``pcmeta/OmniglotFewShot-v0``: one episode is one N-way K-shot Omniglot classification task.

Observation (a ``Dict``; images are ink intensities without unit, 28 x 28 pixels):

- ``support_images``: (N*K, 1, 28, 28) float32 in [0, 1], K drawings of each of the N classes
  (class-major: K images of label 0, then label 1, ...);
- ``support_labels``: (N*K,) int64 in 0..N-1;
- ``query_image``: (1, 28, 28) float32 in [0, 1], the image to classify now.

The support set is the same at every step of an episode; the query changes. One step is one query (no
physical time).

Action: ``Discrete(N)``, the predicted label of the current query (a Python or numpy int; anything else
raises ValueError). Reward 1.0 if correct, else 0.0.

Batched queries (constructor option ``query_batch=True``; default False, the one-query-per-step episode
described above and below): one step answers ALL the task's N * n_query queries at once, so a learner may
use the query batch together (e.g. transductive batch normalisation, as MAML's evaluation protocol does).
The observation holds ``query_images``: (N * n_query, 1, 28, 28) float32 in [0, 1], in the episode's
shuffled query order (``query_order``), instead of ``query_image`` (the support keys are the same). Action:
``MultiDiscrete([N] * (N * n_query))``, one label per query in that order (an integer array or a list/tuple
of ints of that length; anything else raises ValueError). Reward: the fraction of queries labelled
correctly, a float in [0, 1]. The episode terminates after that one step (``episode_length`` is 1). ``info``
at the step: ``labels`` (the true labels, (N * n_query,) int64, in the shown order), ``correct`` ((N *
n_query,) bool), ``accuracy`` (= the reward), ``queries_done`` (N * n_query) and ``task``.

Termination: the episode terminates (``terminated=True``) with the answer to its last query, after
N * n_query steps (:attr:`OmniglotFewShotEnv.episode_length`; the query order is shuffled); a step after
that raises RuntimeError until ``reset``. Truncation: ``truncated`` is always False, the env never cuts an
episode short. The id is registered with ``max_episode_steps`` = :data:`MAX_EPISODE_STEPS` = 123,348
(every Omniglot character in each of its 4 rotations, 19 queries each), a bound above every episode
length any configuration allows (the longest: the classic train part, 4,400 classes x 19 = 83,600), so
the TimeLimit wrapper of ``gymnasium.make`` never fires and agrees with the env's own
``truncated=False``; a configuration with N * n_query >= that bound is refused.

``info`` at reset: ``task`` (the task description) and ``queries`` (N * n_query). At each step: ``label``
(the true label of the query just answered), ``correct``, ``accuracy`` (running fraction correct),
``queries_done`` and ``task``.

Tasks: ``info["task"]`` (at reset and every step) is the episode's portable task spec, the JSON-able dict
of :mod:`pcmeta.tasks.episodes` (split, part, N, K, Q, each class's alphabet, character, rotation and
official drawing numbers, and the query order), so an episode can be replayed in any env or process;
``env.unwrapped.sample_tasks(n)`` returns ``n`` such specs. ``env.unwrapped.set_task(task)`` (or
``reset(options={"task": task})``, the same as ``set_task(task)`` before the reset) fixes the task for the
following resets (``set_task(None)`` goes back to a fresh random task per reset). ``task`` is one of:

- a portable spec (or a :class:`pcmeta.tasks.episodes.OmniglotTask`, whose ``spec`` is used): the episode
  shows exactly that task's images (``support_x`` class-major, the queries in the task's order). A spec
  from another split or part, or with another N, K or Q than the env, raises ValueError naming the field
  (e.g. ``task is from split 'paper' part 'test' (...) but this env draws from split 'paper' part 'train'
  (...): part differs; make the env with part='test'``); a character not in the env's part raises too.
- an index dict (``classes``: pool class indices, ``rotations`` in degrees, ``drawings``: 0-based drawing
  indices, first K support, and ``query_order``): indices into this env's class pool, meaningful only
  for an env of the same split and part; its lengths are checked against N, K and Q first.

Rendering: ``render_mode="rgb_array"`` (the only mode; ``render_fps`` 4) draws the support set (one row
per class) and the current query (with ``query_batch``: all queries, n_query per row, in the shown order),
upscaled 2x; :func:`pcmeta.envs.record_video` writes an episode as
GIF or MP4 without extra packages.

Version history
---------------
- v0: initial version: N-way K-shot tasks from the ``paper`` and ``classic`` splits, one query per step,
  reward 1 for a correct label, ``sample_tasks``/``set_task``, rgb_array rendering.
- v0, revised (pcmeta 0.1, issue #16; episodes, observations and rewards unchanged): registered with
  ``max_episode_steps`` = :data:`MAX_EPISODE_STEPS` (never reached); ``episode_length`` property; video
  recording through :func:`pcmeta.envs.record_video`.
- v0, revised: query_batch (default episodes, observations and rewards unchanged): the constructor option
  ``query_batch`` (default False); when True one step answers all of a task's queries (observation
  ``query_images``, action ``MultiDiscrete([N] * (N * n_query))``, reward the fraction correct, the episode
  terminates after that step), so that a learner normalising over the query batch (classic MAML's
  transductive batch norm) plays the env as its own evaluation does.
- v0, revised: portable tasks (issue #19; episodes, observations and rewards unchanged): ``info["task"]``
  and ``sample_tasks`` give the portable spec instead of the index dict; ``set_task`` and
  ``reset(options={"task": ...})`` accept a spec, an ``OmniglotTask`` or the index dict, and refuse a task
  of another split, part, N, K or Q with a message naming the field.
"""
from __future__ import annotations


import copy

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pcmeta.tasks.episodes import OmniglotTask, check_omniglot_spec_fits, omniglot_spec, omniglot_spec_indices
from pcmeta.tasks.omniglot import EXPECTED_COUNTS, IMAGE_SIZE, N_DRAWINGS, TaskSampler, class_pool

__all__ = ["OmniglotFewShotEnv", "MAX_EPISODE_STEPS"]

#: The registered ``max_episode_steps``: all 1623 Omniglot characters in 4 rotations, 19 queries each
#: (K >= 1 support drawing of 20). Above every episode length (N * n_query) a pool allows, so the TimeLimit
#: wrapper never cuts an episode: episodes end by termination.
MAX_EPISODE_STEPS = 4 * sum(n for _, n in EXPECTED_COUNTS.values()) * (N_DRAWINGS - 1)  # 123,348


class OmniglotFewShotEnv(gym.Env):
    """N-way K-shot few-shot classification as a Gymnasium environment.

    The module docstring (:mod:`pcmeta.envs.omniglot`) is this env's specification (observation, action,
    reward, termination and truncation) and holds its version history.

    Args:
        n_way: classes per task (N).
        k_shot: support drawings per class (K).
        n_query: query drawings per class; K + n_query <= 20.
        split: ``"paper"`` or ``"classic"`` (see :func:`pcmeta.tasks.omniglot.class_pool`).
        part: ``"train"``, ``"val"`` or ``"test"`` (default test: the meta-test classes).
        data_dir: the Omniglot folder (default ``$PCMETA_DATA_DIR`` or the user cache).
        render_mode: None or ``"rgb_array"``.
        query_batch: if True, one step shows and answers all N * n_query queries (observation
            ``query_images``, action ``MultiDiscrete([N] * (N * n_query))``, reward the fraction correct;
            the episode is that one step). Default False: one query per step.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, n_way: int = 5, k_shot: int = 1, n_query: int = 1, split: str = "paper",
                 part: str = "test", data_dir: str | None = None, render_mode: str | None = None,
                 query_batch: bool = False) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if not isinstance(query_batch, (bool, np.bool_)):
            raise ValueError(f"query_batch must be a bool, got {query_batch!r}")
        self.render_mode = render_mode
        self.query_batch = bool(query_batch)
        self.pool = class_pool(split, part, data_dir)
        self._sampler = TaskSampler(self.pool, n_way, k_shot, n_query, np.random.default_rng(0))
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        if self.n_way * self.n_query >= MAX_EPISODE_STEPS:  # unreachable with the Omniglot pools
            raise ValueError(f"n_way * n_query = {self.n_way * self.n_query} queries per episode must be < "
                             f"{MAX_EPISODE_STEPS} (the registered max_episode_steps)")
        nk = self.n_way * self.k_shot
        img = (1, IMAGE_SIZE, IMAGE_SIZE)
        nq = self.n_way * self.n_query
        self.observation_space = spaces.Dict({
            "support_images": spaces.Box(0.0, 1.0, (nk, *img), np.float32),
            "support_labels": spaces.MultiDiscrete(np.full(nk, self.n_way, np.int64)),
            **({"query_images": spaces.Box(0.0, 1.0, (nq, *img), np.float32)} if self.query_batch else
               {"query_image": spaces.Box(0.0, 1.0, img, np.float32)}),
        })
        self.action_space = (spaces.MultiDiscrete(np.full(nq, self.n_way, np.int64)) if self.query_batch
                             else spaces.Discrete(self.n_way))
        self._fixed_task: dict | None = None
        self._task: dict | None = None
        self._spec: dict | None = None
        self._i = 0
        self._correct = 0

    @property
    def episode_length(self) -> int:
        """Steps per episode: N * n_query queries, one per step; the last one terminates the episode
        (with ``query_batch``: 1, the step that answers them all)."""
        return 1 if self.query_batch else self.n_way * self.n_query

    # ------------------------------------------------------------------ tasks
    def _draw_task(self, rng: np.random.Generator) -> dict:
        self._sampler.rng = rng
        b = self._sampler.sample(1)
        order = rng.permutation(self.n_way * self.n_query)
        return {"classes": b.classes[0].tolist(), "rotations": b.rotations[0].tolist(),
                "drawings": b.drawings[0].tolist(), "query_order": order.tolist()}

    def _spec_of(self, task: dict) -> dict:
        """The portable spec of an index task of this env's pool."""
        return omniglot_spec(self.pool, task["classes"], task["rotations"], task["drawings"], self.k_shot,
                             task["query_order"])

    def sample_tasks(self, n: int) -> list[dict]:
        """``n`` random portable task specs (drawn from the env's generator, so seeded by ``reset(seed=)``)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self._spec_of(self._draw_task(self.np_random)) for _ in range(n)]

    def set_task(self, task: dict | OmniglotTask | None) -> None:
        """Fix ``task`` (a portable spec, an :class:`~pcmeta.tasks.episodes.OmniglotTask` or an index dict; see
        the module docstring) for the following resets; None unfixes. ValueError if it does not fit the env."""
        self._fixed_task = None if task is None else self._index_task(task)

    def _index_task(self, task: dict | OmniglotTask) -> dict:
        """``task`` as a validated index dict of this env's pool."""
        if isinstance(task, OmniglotTask):
            if task.spec is None:
                raise ValueError("this OmniglotTask has no spec (tasks of omniglot_tasks or load_omniglot_task have "
                                 "one; without_answers() drops it), so the env cannot tell which images it shows")
            task = task.spec
        if not isinstance(task, dict):
            raise ValueError(f"task must be a portable spec dict, an OmniglotTask or an index dict, got "
                             f"{type(task).__name__}")
        if "version" in task or "family" in task:  # a portable spec
            spec = check_omniglot_spec_fits(task, split=self.pool.split, part=self.pool.part, n_way=self.n_way,
                                            k_shot=self.k_shot, n_query=self.n_query)
            return omniglot_spec_indices(self.pool, spec)
        missing = {"classes", "rotations", "drawings", "query_order"} - set(task)
        if missing:
            raise ValueError(f"task description lacks {sorted(missing)}")
        self._check_index_lengths(task)
        order = np.asarray(task["query_order"])
        if sorted(order.tolist()) != list(range(self.n_way * self.n_query)):
            raise ValueError(f"query_order must be a permutation of 0..{self.n_way * self.n_query - 1}")
        self._sampler.build(task["classes"], task["rotations"], task["drawings"])  # validates
        return {k: [list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for v in task[k]]
                for k in ("classes", "rotations", "drawings", "query_order")}

    def _check_index_lengths(self, task: dict) -> None:
        N, K, Q = self.n_way, self.k_shot, self.n_query
        env = f"this env is {N}-way {K}-shot with {Q} queries per class"
        n = len(task["classes"])
        if n != N:
            raise ValueError(f"task has {n} classes but {env}; make the env with n_way={n}")
        if len(task["rotations"]) != N:
            raise ValueError(f"task has {len(task['rotations'])} rotations for its {N} classes")
        lens = sorted({len(d) for d in task["drawings"]})
        if len(task["drawings"]) != N or lens != [K + Q]:
            raise ValueError(f"task has drawings of lengths {lens} for {len(task['drawings'])} classes but {env}: "
                             f"each of the {N} classes needs k_shot + n_query = {K + Q} drawings")
        if len(task["query_order"]) != N * Q:
            raise ValueError(f"task has {len(task['query_order'])} entries in query_order but {env}: "
                             f"n_way * n_query = {N * Q} queries")

    def _task_copy(self) -> dict:
        return copy.deepcopy(self._spec)

    # ------------------------------------------------------------------ episode
    def _obs(self) -> dict:
        obs = {"support_images": self._sx.copy(), "support_labels": self._sy.copy()}
        if self.query_batch:
            obs["query_images"] = self._qx[self._order].copy()
        else:
            obs["query_image"] = self._qx[self._order[min(self._i, len(self._order) - 1)]].copy()
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode; ``options={"task": task}`` is the same as ``set_task(task)`` before the reset."""
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        task = self._fixed_task if self._fixed_task is not None else self._draw_task(self.np_random)
        b = self._sampler.build(task["classes"], task["rotations"], task["drawings"])
        self._task, self._spec = task, self._spec_of(task)
        self._sx, self._sy = b.support_x[0], b.support_y[0]
        self._qx, self._qy = b.query_x[0], b.query_y[0]
        self._order = np.asarray(task["query_order"], np.int64)
        self._i, self._correct = 0, 0
        return self._obs(), {"task": self._task_copy(), "queries": len(self._order)}

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        if self._task is None:
            raise RuntimeError("call reset() before step()")
        if self._i >= len(self._order):
            raise RuntimeError("the episode has terminated; call reset()")
        if self.query_batch:
            return self._step_batch(action)
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if not isinstance(action, (int, np.integer)) or isinstance(action, bool) or not self.action_space.contains(int(action)):
            raise ValueError(f"action must be an int label in Discrete({self.n_way}) (0..{self.n_way - 1}), "
                             f"got {action!r}")
        label = int(self._qy[self._order[self._i]])
        correct = int(action) == label
        self._correct += int(correct)
        self._i += 1
        terminated = self._i >= len(self._order)
        info = {"label": label, "correct": correct, "accuracy": self._correct / self._i,
                "queries_done": self._i, "task": self._task_copy()}
        return self._obs(), 1.0 if correct else 0.0, terminated, False, info

    def _step_batch(self, action) -> tuple[dict, float, bool, bool, dict]:
        """All queries answered at once (``query_batch``): reward the fraction correct; terminates."""
        nq = len(self._order)
        a = np.asarray(action) if isinstance(action, (np.ndarray, list, tuple)) else None
        if (a is None or a.shape != (nq,) or not np.issubdtype(a.dtype, np.integer)
                or (a.size and (a.min() < 0 or a.max() >= self.n_way))):
            raise ValueError(f"action must be {nq} int labels in MultiDiscrete([{self.n_way}] * {nq}) "
                             f"(each 0..{self.n_way - 1}, one per query in the shown order), got {action!r}")
        labels = self._qy[self._order].astype(np.int64)
        correct = a.astype(np.int64) == labels
        self._correct, self._i = int(correct.sum()), nq
        accuracy = self._correct / nq
        info = {"labels": labels, "correct": correct, "accuracy": accuracy, "queries_done": nq,
                "task": self._task_copy()}
        return self._obs(), float(accuracy), True, False, info

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray | None:
        """An RGB image (H, W, 3) uint8: the support set, one row per class, and the current query (with
        ``query_batch``: all queries, n_query per row, in the shown order)."""
        if self.render_mode is None:
            gym.logger.warn("render() without render_mode; pass render_mode='rgb_array' to the constructor")
            return None
        if self._task is None:
            raise RuntimeError("call reset() before render()")
        s, pad = IMAGE_SIZE, 2
        N, K = self.n_way, self.k_shot
        qcols = self.n_query if self.query_batch else 1
        H = N * (s + pad) + pad
        W = (K + qcols) * (s + pad) + 3 * pad + pad
        canvas = np.full((H, W, 3), 200, np.uint8)
        for c in range(N):
            for k in range(K):
                img = (self._sx[c * K + k, 0] * 255).astype(np.uint8)
                y, x = pad + c * (s + pad), pad + k * (s + pad)
                canvas[y:y + s, x:x + s] = img[..., None]
        qx0 = pad + K * (s + pad) + 2 * pad
        canvas[:, qx0 - 2 * pad:qx0 - pad] = (200, 40, 40)  # separator
        if self.query_batch:
            for j, q in enumerate(self._order):
                y, x = pad + (j // qcols) * (s + pad), qx0 + (j % qcols) * (s + pad)
                canvas[y:y + s, x:x + s] = (self._qx[q, 0] * 255).astype(np.uint8)[..., None]
        else:
            q = self._order[min(self._i, len(self._order) - 1)]
            yq = pad + (H - 2 * pad - s) // 2
            canvas[yq:yq + s, qx0:qx0 + s] = (self._qx[q, 0] * 255).astype(np.uint8)[..., None]
        return np.kron(canvas, np.ones((2, 2, 1), np.uint8))

    def close(self) -> None:
        self._task = None
