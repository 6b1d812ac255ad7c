"""The one-shot spiking learner as a pcmeta agent (:class:`pcmeta.agents.protocol.Agent`) for the arm task.

``deploy(deployment, seed)`` -> per task: ``reset()``, ``adapt(task)`` (the demonstration trial: the learning
network runs on its clock while the LSG sees the task's target path and emits learning signals, then ONE e-prop
update is written to the learning network's weights on the chip), ``predict(task)`` (the test trial with the
updated weights: joint velocities (T, 2) in rad/s). The network is open-loop (driven by the clock only), so
each trial is the network's whole output sequence; :meth:`EpropAgent.execute` runs it in an environment.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from pcmeta.hardware import SoftwareSubstrate, Substrate, SynapticArray
from pcmeta.hardware.deployment import Deployment
from pcmeta.tasks import trajectories as traj
from pcmeta.tasks.episodes import ArmTask

from .brian2_engine import Brian2OneShot
from .chips import check_engine, chip_seed
from .episode import one_shot_episode
from .learner import EpropLearner, LearnerPlacement
from .weights import load_weights

__all__ = ["EpropAgent"]

ENGINES = ("torch", "brian2")


@dataclass
class _Adapted:
    """The state after :meth:`EpropAgent.adapt`: the chip, the learning network's arrays on it, what the
    demonstration produced, and the simulated seconds still to pass before the test trial."""

    substrate: Substrate
    placement: LearnerPlacement
    arrays: dict[str, SynapticArray]
    learner: EpropLearner | None
    demo: dict[str, np.ndarray]
    wait_s: float


class EpropAgent:
    """The spiking one-shot learner (natural e-prop with a learning-signal generator) as a pcmeta agent.

    Where the learning network's weights live: :meth:`deploy` a :class:`pcmeta.hardware.Deployment` (each task
    then gets a fresh chip ``deployment.build(chip_seed(seed, k))`` = ``seed * 100003 + k``, k = 1, 2, ...,
    programmed at time 0 with the deployment's clip and placement rules; the demonstration runs
    ``deployment.time_s`` later, the test trial at ``deployment.query_time``: the chips of
    :func:`~pcmeta.agents.eprop.evaluate`), or, without a deployment, ``substrate`` (one substrate for every
    task, no time passes; default exact software).

    Args:
        params: weight dict (:data:`~pcmeta.agents.eprop.config.PARAM_KEYS`), numpy or torch.
        substrate: a pcmeta.hardware Substrate for the learning network until a deployment is given (default:
            exact SoftwareSubstrate).
        engine: "torch" (float32, one substrate MVM per step) or "brian2" (float64, weights read per trial).
        brian2_target: brian2 code-generation target.
        update: False skips the demonstration and its update: the test trial runs with the meta-learned weights
            (the benchmarks' "no adaptation" baseline).
    """

    def __init__(self, params: Mapping[str, Any], substrate: Substrate | None = None, *, engine: str = "torch",
                 brian2_target: str = "numpy", update: bool = True):
        if engine not in ENGINES:
            raise ValueError(f"engine must be 'torch' or 'brian2', got {engine!r}")
        self.engine = engine
        self.update = bool(update)
        #: spiking activity of the last test trial (torch engine): see :meth:`benchmark_metrics`
        self.activity: dict[str, float] = {}
        dtype = torch.float64 if engine == "brian2" else torch.float32
        self.params = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, dtype=dtype)
                       for k, v in params.items()}
        self.substrate = SoftwareSubstrate() if substrate is None else substrate
        self.deployment: Deployment | None = None
        self.seed = 0
        self.chips = 0
        self._adapted: _Adapted | None = None
        #: the brian2 networks (engine "brian2"), built once
        self.brian2 = Brian2OneShot(self.params, target=brian2_target) if engine == "brian2" else None

    @classmethod
    def from_weights(cls, name: str | os.PathLike | None = None, engine: str = "torch", **kw: Any) -> "EpropAgent":
        """An agent with the weights ``name``: None / "pcmeta" (pcmeta's shipped arm weights), "authors" (the
        authors' released weights, from ``$PCMETA_REFERENCE_DIR``), a shipped name or a path to an ``.npz``
        (:func:`pcmeta.agents.shipped.resolve_weights`); ``kw`` as in the constructor. FileNotFoundError that
        says where to put the file when it is missing."""
        dtype = torch.float64 if engine == "brian2" else torch.float32
        return cls(load_weights(name, dtype=dtype), engine=engine, **kw)

    # ------------------------------------------------------------------------------------ Agent protocol
    def deploy(self, deployment: Deployment, seed: int = 0) -> None:
        """Use ``deployment`` for the following tasks: task k (k = 1, 2, ...) runs on a fresh chip
        ``deployment.build(chip_seed(seed, k))`` (the chips of :func:`~pcmeta.agents.eprop.evaluate`)."""
        if not isinstance(deployment, Deployment):
            raise TypeError(f"deploy needs a pcmeta.hardware.Deployment, got {type(deployment).__name__}")
        check_engine(deployment, self.engine)
        self.reset()
        self.deployment, self.seed, self.chips = deployment, int(seed), 0

    def adapt(self, task: ArmTask | Mapping[str, Any]) -> None:
        """The demonstration trial on ``task`` (its target path ``xyz``) and ONE e-prop update written to the
        learning network's weights on a fresh chip (or the agent's substrate); starts from the meta-learned
        weights whatever was adapted before."""
        task = _as_task(task)
        self.reset()
        sub = self._new_substrate()
        placement = self._placement()
        clock, x_lsg = traj.clock_input(task.steps), traj.lsg_input(task.xyz[None])
        learner = None
        if self.engine == "torch":
            learner = EpropLearner.from_placement(sub, placement)
            arrays = learner.arrays
        else:
            arrays = placement.place(sub)
        wait_s = 0.0 if self.deployment is None else self.deployment.query_time - self.deployment.time_s
        self._adapted = _Adapted(sub, placement, arrays, learner, {}, wait_s)
        settle = 0.0 if self.deployment is None else self.deployment.time_s
        if settle:
            sub.elapse(settle)
        self._adapted.demo = self._demonstrate(clock, x_lsg) if self.update else {}

    def predict(self, task: ArmTask | Mapping[str, Any]) -> np.ndarray:
        """The test trial with the adapted weights: joint velocities (T, 2) in rad/s (float64)."""
        task = _as_task(task)
        a = self._adapted
        if a is None:
            raise RuntimeError("predict needs an adapted agent: call adapt(task) first")
        if a.wait_s > 0:
            a.substrate.elapse(a.wait_s)
            a.wait_s = 0.0
        clock = traj.clock_input(task.steps)
        if a.learner is not None:
            with torch.no_grad():
                rec = a.learner.trial(torch.as_tensor(clock, dtype=a.placement.dtype))
            spikes = float(rec.z.sum())
            fan_out = a.arrays["W_rec"].shape[1] + a.learner.W_out.shape[1]  # recurrent + readout synapses
            self.activity = {"activation_sparsity": 1.0 - float(rec.z.mean()), "spikes": spikes,
                             "synaptic_ops": spikes * fan_out}
            return rec.y[0].double().numpy()
        W = Brian2OneShot.read_weights(a.placement, a.arrays)
        return self.brian2.test(clock.astype(np.float64), *W)["omega"]

    def reset(self) -> None:
        """Back to the meta-learned weights: the adapted arrays are taken off their substrate."""
        if self._adapted is not None:
            self._adapted.placement.remove(self._adapted.substrate)
            self._adapted = None

    def benchmark_metrics(self) -> dict[str, float]:
        """Spiking activity of the last test trial (torch engine): ``activation_sparsity`` (fraction of
        neuron-steps without a spike), ``spikes`` and ``synaptic_ops`` (spikes x fan-out: one accumulate per
        outgoing synapse, recurrent and readout)."""
        return dict(self.activity)

    @property
    def demo(self) -> dict[str, np.ndarray] | None:
        """What the current adaptation's demonstration produced: omega_demo (T, 2) rad/s, dW_in (5, 250) and
        dW_rec (250, 250) (float64); None when not adapted."""
        return None if self._adapted is None else self._adapted.demo

    # ------------------------------------------------------------------------------------ internals
    def _new_substrate(self) -> Substrate:
        if self.deployment is not None:
            self.chips += 1
            return self.deployment.build(chip_seed(self.seed, self.chips))
        return self.substrate

    def _placement(self) -> LearnerPlacement:
        """How this task's learning network is placed (a deployment applies its own clip and rules)."""
        if self.engine == "brian2":
            return self.brian2.placement()
        p = self.params
        return LearnerPlacement(p["W_in_trainee"], p["W_rec_trainee"], p["W_out_trainee"], dtype=p["W_in_lsg"].dtype,
                                prefix=f"learner{id(self) % 10**6}")

    def _demonstrate(self, clock: np.ndarray, x_lsg: np.ndarray) -> dict[str, np.ndarray]:
        """Demonstration trial + the update written to the arrays; returns omega_demo (T, 2), dW_in, dW_rec."""
        a = self._adapted
        if a.learner is not None:
            dt = a.placement.dtype
            with torch.no_grad():
                ep = one_shot_episode(self.params, torch.as_tensor(clock, dtype=dt), torch.as_tensor(x_lsg, dtype=dt),
                                      learner=a.learner, test=False)
                a.learner.update(ep["dW_in"][0], ep["dW_rec"][0])
            return {k: ep[src][0].double().numpy() for k, src in
                    (("omega_demo", "omega_before"), ("dW_in", "dW_in"), ("dW_rec", "dW_rec"))}
        W0 = Brian2OneShot.read_weights(a.placement, a.arrays)
        d = self.brian2.demonstration(x_lsg[0].astype(np.float64), clock.astype(np.float64), *W0)
        a.arrays["W_in"].update(d["dW_in"])
        a.arrays["W_rec"].update(d["dW_rec"])
        return {"omega_demo": d["omega_before"], "dW_in": d["dW_in"], "dW_rec": d["dW_rec"]}

    # ------------------------------------------------------------------------------------ demos' wrappers
    def learn(self, task: ArmTask | Mapping[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`adapt` + :meth:`predict` + :meth:`reset` for one task (an :class:`ArmTask` or the env's task
        dict with ``xyz`` (T, 3) m and ``start``). Returns the network outputs omega_demo, omega_test (T, 2) in
        rad/s and the update dW_in, dW_rec."""
        try:
            self.adapt(task)
            out = {**self.demo, "omega_test": self.predict(task)}
        finally:
            self.reset()
        return out

    @staticmethod
    def execute(env: Any, task: ArmTask | Mapping[str, Any], omega: np.ndarray, *, frames: list | None = None,
                every: int = 1) -> np.ndarray:
        """Run one env episode on ``task`` applying ``omega`` (T, 2) rad/s; returns the executed path (T, 3) m
        (the effector position after each step from the environment's physics: observation entries 4:7).

        ``frames``: a list to which ``env.render()`` is appended after the reset, after every ``every``-th
        step and after the last step (``env`` made with ``render_mode="rgb_array"``)."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        env.unwrapped.set_task(task.as_env_task() if isinstance(task, ArmTask) else dict(task))
        env.reset()
        if frames is not None:
            frames.append(env.render())
        path, T = [], omega.shape[0]
        for t in range(T):
            obs, _, _, _, _ = env.step(np.asarray(omega[t], dtype=np.float32))
            path.append(np.asarray(obs[4:7], dtype=np.float64))
            if frames is not None and ((t + 1) % every == 0 or t == T - 1):
                frames.append(env.render())
        return np.asarray(path)

    def one_shot(self, env: Any, task: ArmTask | Mapping[str, Any] | None = None, *,
                 render_every: int | None = None) -> dict[str, Any]:
        """Learn a task in one shot and execute both trials in ``env``.

        ``task`` (an env task dict or an :class:`ArmTask` with its ``omega``) defaults to a new one from
        ``env.unwrapped.sample_tasks(1)``. Returns omega_demo/test (T, 2), xyz_demo/test (T, 3, executed by
        the env), the task, the MSEs against the target (mse_omega_demo/test in (rad/s)^2, mse_xyz_demo/test
        in m^2, the executed paths), ``learn_s`` (wall seconds of demonstration, update and test trial) and,
        with ``render_every``, the rendered frames_demo / frames_test (see :meth:`execute`).
        """
        if task is None:
            task = env.unwrapped.sample_tasks(1)[0]
        target = task.as_env_task() if isinstance(task, ArmTask) else task
        t0 = time.perf_counter()
        out: dict[str, Any] = {"task": task, **self.learn(task)}
        out["learn_s"] = time.perf_counter() - t0
        for tag in ("demo", "test"):
            om = out[f"omega_{tag}"]
            frames = None if render_every is None else out.setdefault(f"frames_{tag}", [])
            out[f"xyz_{tag}"] = self.execute(env, target, om, frames=frames, every=render_every or 1)
            out[f"mse_omega_{tag}"] = float(np.mean((om - np.asarray(target["omega"])) ** 2))
            out[f"mse_xyz_{tag}"] = float(np.mean((out[f"xyz_{tag}"] - np.asarray(target["xyz"])) ** 2))
        return out


def _as_task(task: ArmTask | Mapping[str, Any]) -> ArmTask:
    """An :class:`ArmTask` as the agent may see it (target path and start only), from a task or an env dict."""
    if isinstance(task, ArmTask):
        return task.without_answers()
    if not isinstance(task, Mapping) or "xyz" not in task:
        raise ValueError(f"a task must be an ArmTask or a dict with 'xyz' (T, 3) in m, got {type(task).__name__}")
    return ArmTask(xyz=task["xyz"], start=task.get("start", np.zeros(2)), robot=task.get("robot", "scorbot"))
