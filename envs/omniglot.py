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

Tasks: ``env.unwrapped.sample_tasks(n)`` returns task descriptions (dicts of plain lists: ``classes``,
``rotations`` in degrees, ``drawings`` and ``query_order``); ``env.unwrapped.set_task(task)`` fixes the
task for the following resets (``set_task(None)`` goes back to a fresh random task per reset).

Rendering: ``render_mode="rgb_array"`` (the only mode; ``render_fps`` 4) draws the support set (one row
per class) and the current query, upscaled 2x; :func:`pcmeta.envs.record_video` writes an episode as
GIF or MP4 without extra packages.

Version history
---------------
- v0: initial version: N-way K-shot tasks from the ``paper`` and ``classic`` splits, one query per step,
  reward 1 for a correct label, ``sample_tasks``/``set_task``, rgb_array rendering.
- v0, revised (pcmeta 0.1, issue #16; episodes, observations and rewards unchanged): registered with
  ``max_episode_steps`` = :data:`MAX_EPISODE_STEPS` (never reached); ``episode_length`` property; video
  recording through :func:`pcmeta.envs.record_video`.
"""
from __future__ import annotations


import gymnasium as gym
import numpy as np
from gymnasium import spaces

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
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, n_way: int = 5, k_shot: int = 1, n_query: int = 1, split: str = "paper",
                 part: str = "test", data_dir: str | None = None, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        self.pool = class_pool(split, part, data_dir)
        self._sampler = TaskSampler(self.pool, n_way, k_shot, n_query, np.random.default_rng(0))
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        if self.n_way * self.n_query >= MAX_EPISODE_STEPS:  # unreachable with the Omniglot pools
            raise ValueError(f"n_way * n_query = {self.n_way * self.n_query} queries per episode must be < "
                             f"{MAX_EPISODE_STEPS} (the registered max_episode_steps)")
        nk = self.n_way * self.k_shot
        img = (1, IMAGE_SIZE, IMAGE_SIZE)
        self.observation_space = spaces.Dict({
            "support_images": spaces.Box(0.0, 1.0, (nk, *img), np.float32),
            "support_labels": spaces.MultiDiscrete(np.full(nk, self.n_way, np.int64)),
            "query_image": spaces.Box(0.0, 1.0, img, np.float32),
        })
        self.action_space = spaces.Discrete(self.n_way)
        self._fixed_task: dict | None = None
        self._task: dict | None = None
        self._i = 0
        self._correct = 0

    @property
    def episode_length(self) -> int:
        """Steps per episode: N * n_query queries; the last one terminates the episode."""
        return self.n_way * self.n_query

    # ------------------------------------------------------------------ tasks
    def _draw_task(self, rng: np.random.Generator) -> dict:
        self._sampler.rng = rng
        b = self._sampler.sample(1)
        order = rng.permutation(self.n_way * self.n_query)
        return {"classes": b.classes[0].tolist(), "rotations": b.rotations[0].tolist(),
                "drawings": b.drawings[0].tolist(), "query_order": order.tolist()}

    def sample_tasks(self, n: int) -> list[dict]:
        """``n`` random task descriptions (drawn from the env's generator, so seeded by ``reset(seed=)``)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self._draw_task(self.np_random) for _ in range(n)]

    def set_task(self, task: dict | None) -> None:
        """Fix ``task`` (a description from :meth:`sample_tasks`) for the following resets; None unfixes."""
        if task is not None:
            missing = {"classes", "rotations", "drawings", "query_order"} - set(task)
            if missing:
                raise ValueError(f"task description lacks {sorted(missing)}")
            order = np.asarray(task["query_order"])
            if sorted(order.tolist()) != list(range(self.n_way * self.n_query)):
                raise ValueError(f"query_order must be a permutation of 0..{self.n_way * self.n_query - 1}")
            self._sampler.build(task["classes"], task["rotations"], task["drawings"])  # validates
        self._fixed_task = None if task is None else {k: list(task[k]) for k in
                                                       ("classes", "rotations", "drawings", "query_order")}

    def _task_copy(self) -> dict:
        import copy

        return copy.deepcopy(self._task)

    # ------------------------------------------------------------------ episode
    def _obs(self) -> dict:
        q = self._order[min(self._i, len(self._order) - 1)]
        return {"support_images": self._sx.copy(), "support_labels": self._sy.copy(),
                "query_image": self._qx[q].copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        task = self._fixed_task if self._fixed_task is not None else self._draw_task(self.np_random)
        b = self._sampler.build(task["classes"], task["rotations"], task["drawings"])
        self._task = task
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

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray | None:
        """An RGB image (H, W, 3) uint8: the support set, one row per class, and the current query."""
        if self.render_mode is None:
            gym.logger.warn("render() without render_mode; pass render_mode='rgb_array' to the constructor")
            return None
        if self._task is None:
            raise RuntimeError("call reset() before render()")
        s, pad = IMAGE_SIZE, 2
        N, K = self.n_way, self.k_shot
        H = N * (s + pad) + pad
        W = (K + 1) * (s + pad) + 3 * pad + pad
        canvas = np.full((H, W, 3), 200, np.uint8)
        for c in range(N):
            for k in range(K):
                img = (self._sx[c * K + k, 0] * 255).astype(np.uint8)
                y, x = pad + c * (s + pad), pad + k * (s + pad)
                canvas[y:y + s, x:x + s] = img[..., None]
        qx0 = pad + K * (s + pad) + 2 * pad
        canvas[:, qx0 - 2 * pad:qx0 - pad] = (200, 40, 40)  # separator
        q = self._order[min(self._i, len(self._order) - 1)]
        yq = pad + (H - 2 * pad - s) // 2
        canvas[yq:yq + s, qx0:qx0 + s] = (self._qx[q, 0] * 255).astype(np.uint8)[..., None]
        return np.kron(canvas, np.ones((2, 2, 1), np.uint8))

    def close(self) -> None:
        self._task = None
