"""A benchmark as a Gymnasium episode loop: the same tasks, the same metric, for an RL-style policy.

>>> from pcmeta.agents.benchmark_env import env_scores
>>> res = env_scores(policy, "omniglot-5w5s-v0", tasks=100)     # policy.act(obs) -> action
>>> res.mean, res.ci95                                           # the benchmark's metric per task

Each of the benchmark's meta-test tasks is loaded into its env (``Benchmark.env_id``) and played as one
episode (Omniglot: one episode per task, its queries answered step by step, or all in one step with
``query_batch=True``; the task's accuracy is the fraction answered right). For the arm benchmark the
episode is the test trial: the policy's actions are the joint velocities, scored by the benchmark's arm
metric (:func:`pcmeta.agents.evaluation.arm_errors` of the executed actions, the same figures as
:func:`pcmeta.agents.benchmark.run`). A pcmeta :class:`~pcmeta.agents.Agent` plays through an adapter
(:class:`~pcmeta.agents.OmniglotPolicy`; for the arm: the agent adapts on the task as shown in the
episode's ``info`` and plays its prediction), so a few-shot learner and an RL policy get the same score.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pcmeta.tasks.benchmarks import Benchmark, get_benchmark
from pcmeta.tasks.episodes import ArmTask

from .evaluation import EvalResult, arm_errors
from .protocol import OmniglotPolicy, check_agent


class ArmAgentPolicy:
    """``act(obs)`` over an arm :class:`~pcmeta.agents.Agent`: at each episode's first step it adapts on the
    task the episode shows (its path and start) and then plays the predicted velocities step by step."""

    def __init__(self, agent: Any) -> None:
        check_agent(agent)
        self.agent = agent
        self._omega: np.ndarray | None = None
        self._t = 0

    def begin(self, task: ArmTask) -> None:
        shown = task.without_answers()
        self.agent.reset()
        self.agent.adapt(shown)
        self._omega = shown.check_prediction(self.agent.predict(shown))
        self._t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self._omega is None:
            raise RuntimeError("ArmAgentPolicy.act before begin(task)")
        a = self._omega[self._t]
        self._t += 1
        return a.astype(np.float32)


def _omniglot_episodes(policy: Any, bench: Benchmark, tasks: list, data_dir: Any, query_batch: bool) -> list:
    import gymnasium as gym

    import pcmeta.envs  # noqa: F401  (registers the ids)

    env = gym.make(bench.env_id, n_way=bench.n_way, k_shot=bench.k_shot, n_query=bench.n_query, split=bench.split,
                   part="test", data_dir=data_dir, query_batch=query_batch)
    act = OmniglotPolicy(policy, bench.n_way).act if not callable(getattr(policy, "act", None)) else policy.act
    rows = []
    try:
        for task in tasks:
            obs, info = env.reset(options={"task": task.spec})
            done = False
            while not done:
                obs, _, term, trunc, info = env.step(act(obs))
                done = term or trunc
            rows.append({"accuracy": float(info["accuracy"])})
    finally:
        env.close()
    return rows


def _arm_episodes(policy: Any, bench: Benchmark, tasks: list) -> list:
    import gymnasium as gym

    import pcmeta.envs  # noqa: F401

    if not callable(getattr(policy, "act", None)):
        policy = ArmAgentPolicy(policy)
    env = gym.make(bench.env_id)
    rows = []
    try:
        for task in tasks:
            obs, info = env.reset(options={"task": task.as_env_task()})
            if isinstance(policy, ArmAgentPolicy):
                policy.begin(task)
            actions, done = [], False
            while not done:
                a = np.asarray(policy.act(obs), np.float64)
                obs, r, term, trunc, info = env.step(a.astype(np.float32))
                actions.append(np.clip(a, -np.pi, np.pi))
                done = term or trunc
            rows.append(arm_errors(task, np.stack(actions)))
    finally:
        env.close()
    return rows


def env_scores(policy: Any, benchmark: str | Benchmark, tasks: int | None = None, *, data_dir: Any = None,
               deployment: Any = None, seed: int = 0, query_batch: bool = False) -> EvalResult:
    """The benchmark's metric per task, played as env episodes by ``policy`` (``act(obs)``) or an agent
    (deployed first on ``deployment`` with chip seed ``seed`` when given)."""
    import time

    bench = benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)
    task_list = bench.tasks(tasks, data_dir=data_dir)
    if deployment is not None:
        check_agent(policy)
        policy.deploy(deployment, seed=seed)
    t0 = time.perf_counter()
    if bench.family == "omniglot":
        rows = _omniglot_episodes(policy, bench, task_list, data_dir, query_batch)
    else:
        rows = _arm_episodes(policy, bench, task_list)
    return EvalResult(bench.metric, rows, time.perf_counter() - t0)
