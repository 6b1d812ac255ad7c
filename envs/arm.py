"""``pcmeta/ArmTrajectory-v0``: a robot arm that must trace a target trajectory (PyBullet, SPEC.md section 2).

The environment
---------------
One episode is one target trajectory of :data:`~pcmeta.tasks.trajectories.T_STEPS` = 249 steps from
:mod:`pcmeta.tasks.trajectories` (the paper's Brownian-velocity family); it ends with ``truncated=True``
after the last step (``terminated`` is always False). One env step is 10 ms of arm time
(``DT_ARM = 0.01`` s): the action (joint angular velocities) is applied with PyBullet velocity control for
one physics step of exactly 10 ms.

Kinematics convention (the same as the learner's, see :mod:`pcmeta.tasks.trajectories`): after env step
``t`` (t = 0..248) with actions ``omega[0..t]`` the joint angles are
``q[t] = start + 0.01 * sum_{s<=t} omega[s]`` (joints stop at their limits, below), and the step's reward
is ``-|effector - xyz_target[t]|^2`` (m^2). Executing a target's ``omega_path`` (equal to its ``omega``
except while a target joint rests at a limit) reproduces the target's Cartesian path: measured mean squared
error at most 4e-11 m^2 over 200 Scorbot targets (planar arm: ~1e-8 m^2). Because the joints stop at their
limits, a policy that pushes past a limit ends at the limit, whereas the learner's unclipped analytic
angles (SPEC: produced angles are not clipped) would go on.

Action: ``Box(-pi, pi, (2,), float32)``, joint angular velocities in rad/s (base/shoulder for the Scorbot,
p0/p1 for the planar arm). The bound pi rad/s is the joint speed limit (the targets' own velocity clip).
Documented clipping: components beyond +-pi rad/s are clipped to +-pi (``info["action_clipped"]`` says
when); and a joint stops at its position limit (Scorbot: q1 +-130 deg, q2 +-70 deg; the planar arm has
none): the commanded velocity of a joint is limited so that the next angle does not pass its limit
(``info["at_limit"]`` says when). An action of the wrong shape or with NaN/inf raises ValueError.

Observation: ``Box(float32, (11,))`` in this order: joint angles q (2, rad), joint velocities (2, rad/s),
effector position (3, m), the target position for the coming step, ``xyz_target[t]`` before step t (3, m;
after the last step the last target point), phase = steps done / 249 (1, in [0, 1]).
Effector position and joint state are read from PyBullet after each physics step.

Reward: minus the squared distance (m^2) between the effector and the target point of the step.

``info`` at reset: ``{"target": task, "robot": robot}`` where ``task`` is the episode's target (a dict of
numpy arrays, below). At each step: ``{"t": step index, "target_xyz": (3,) m, "distance_sq": m^2,
"action_clipped": bool, "at_limit": bool}``.

Tasks (learning-to-learn API): a task is one target trajectory, a dict with ``robot`` (str), ``start``
(2,) rad, ``omega`` (T, 2) rad/s, ``q`` (T, 2) rad, ``xyz`` (T, 3) m and ``omega_path`` (T, 2) rad/s.
``sample_tasks(n)`` draws n of them (from the env's seeded generator); ``set_task(task)`` fixes the target
for the following resets (``set_task(None)``: a new random target each reset, drawn from ``np_random``,
so ``reset(seed=s)`` reproduces the episode).

Physics: one PyBullet client in DIRECT mode per env (GUI for ``render_mode="human"``), closed by
:meth:`ArmTrajectoryEnv.close`; fixed time step 0.01 s, one sub-step, gravity on, motor force 1000 N m.
Velocity control (not resetting joint states) is used because it is accurate enough: the motor constraint
reaches the commanded velocity within the step, so the semi-implicit Euler step gives exactly
``q + 0.01 * omega`` (measured tracking error ~1e-11 m^2; more sub-steps only cost time).

Episode end and time limit: ``terminated`` is always False; ``truncated`` is True on the 249th step
(2.49 s of arm time), after which :meth:`~ArmTrajectoryEnv.step` raises until :meth:`~ArmTrajectoryEnv.reset`.
The id is registered with ``max_episode_steps=249`` (:data:`MAX_EPISODE_STEPS`), so the TimeLimit wrapper of
``gymnasium.make`` truncates at the same step as the env itself (``gymnasium.make(id, max_episode_steps=n)``
with n < 249 cuts episodes shorter).

Rendering: ``render_mode="rgb_array"`` uses PyBullet's TinyRenderer (headless, CPU) at ``width x height``
(default 320 x 240) and draws on the frame, by projecting with the camera's view/projection matrices, the
target path (red), the current target point (red dot), and the effector trail (blue).
``render_mode="human"`` opens PyBullet's GUI (needs a display) with the target path and trail drawn as
debug lines. ``metadata["render_modes"]`` lists "human" only where a display exists
(:func:`human_render_available`: macOS and Windows always, other systems when ``$DISPLAY`` is set, since
PyBullet's GUI there is an X11 window), evaluated at import for the class and again for each new env, so
``gymnasium.utils.env_checker.check_env`` (which makes the env once per declared mode) passes headless.
Asking ``ArmTrajectoryEnv`` for "human" without a display raises RuntimeError; ``gymnasium.make(id,
render_mode="human")`` there follows Gymnasium's rule for an undeclared mode and wraps an rgb_array env in
``HumanRendering`` (a pygame window, which also needs a display).

Videos: :func:`pcmeta.envs.record_video` writes an episode's rgb_array frames to GIF or MP4 with pcmeta's
own dependencies (Gymnasium's ``RecordVideo`` needs ``moviepy``, which pcmeta does not install).

Public handles for code that drives PyBullet beside the env (e.g. benchmarks): :data:`MOTOR_FORCE`,
:attr:`ArmTrajectoryEnv.physics_client`, :attr:`~ArmTrajectoryEnv.body_id`,
:attr:`~ArmTrajectoryEnv.effector_link`, :attr:`~ArmTrajectoryEnv.effector_position`,
:meth:`~ArmTrajectoryEnv.camera_matrices` and :meth:`~ArmTrajectoryEnv.project`.

Version history
---------------
- v0: initial version: Scorbot and planar 2-link arms in PyBullet, 249-step Brownian-velocity targets,
  11-dim observation, reward minus the squared distance (m^2), rgb_array (TinyRenderer with overlay) and
  human (GUI) rendering, ``sample_tasks``/``set_task``.
- v0, revised (pcmeta 0.1, issue #16; episodes, observations and rewards unchanged): registered with
  ``max_episode_steps=249``; "human" declared in ``metadata["render_modes"]`` only where a display exists;
  public :data:`MOTOR_FORCE`, :attr:`~ArmTrajectoryEnv.physics_client`, :attr:`~ArmTrajectoryEnv.body_id`,
  :attr:`~ArmTrajectoryEnv.effector_link`, :attr:`~ArmTrajectoryEnv.effector_position`,
  :meth:`~ArmTrajectoryEnv.camera_matrices`; video recording through :func:`pcmeta.envs.record_video`.
"""
from __future__ import annotations

import contextlib
import os
import sys
from importlib import resources
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pcmeta.envs.arm_render import ArmRenderMixin, _render_modes, human_render_available
from pcmeta.tasks import trajectories as tr

__all__ = ["ArmTrajectoryEnv", "MAX_EPISODE_STEPS", "MOTOR_FORCE", "human_render_available", "urdf_path",
           "quiet_fds", "import_pybullet"]

_EFFECTOR_LINK = {"scorbot": 4, "planar2": 2}
#: Maximum torque (N m) of the two joints' velocity motors: far above what the links need, so the
#: commanded velocity is met exactly within each 10 ms step.
MOTOR_FORCE = 1000.0
#: Steps per episode (one per 10 ms target point): the registered ``max_episode_steps``.
MAX_EPISODE_STEPS = tr.T_STEPS


def urdf_path(robot: str) -> str:
    """Path of the shipped URDF of ``robot`` ("scorbot" or "planar2")."""
    tr.robot_spec(robot)
    return str(resources.files("pcmeta.envs").joinpath("assets", f"{robot}.urdf"))


@contextlib.contextmanager
def quiet_fds(stdout: bool = True, stderr: bool = False):
    """Silence the C-level stdout (and optionally stderr) of PyBullet (``argv[...]``, build-time lines)."""
    fds = [fd for fd, on in ((1, stdout), (2, stderr)) if on]
    saved = []
    try:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:  # pragma: no cover - exotic streams
                pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in fds:
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:  # no usable file descriptors (rare embedded contexts): just run loudly
        for fd, old in saved:
            os.dup2(old, fd)
            os.close(old)
        saved = []
    try:
        yield
    finally:
        for fd, old in saved:
            os.dup2(old, fd)
            os.close(old)


def import_pybullet():
    """``import pybullet`` without its build-time banner."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    with quiet_fds(stdout=True, stderr=True):
        import pybullet
    return pybullet


class ArmTrajectoryEnv(ArmRenderMixin, gym.Env):
    """Trace a target trajectory with a Scorbot-like or planar 2-link arm.

    The module docstring (:mod:`pcmeta.envs.arm`) is this env's specification (observation, action,
    reward, termination and truncation, units) and holds its version history.

    Args:
        robot: "scorbot" (the paper's robot) or "planar2".
        render_mode: None, "rgb_array" (TinyRenderer) or "human" (PyBullet GUI; needs a display, see
            :func:`human_render_available`).
        width, height: rgb_array frame size in pixels.
        task: optional fixed task (see :meth:`set_task`).

    ``metadata["render_modes"]`` is ``["rgb_array", "human"]`` where a display exists, else
    ``["rgb_array"]`` (class attribute: at import; each instance: at its construction).
    ``render_fps`` is 100 (one frame per 10 ms step).
    """

    metadata = {"render_modes": _render_modes(), "render_fps": int(round(1.0 / tr.DT_ARM))}

    def __init__(
        self,
        robot: str = "scorbot",
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        task: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec_robot = tr.robot_spec(robot)
        self.robot = robot
        # the display may have come or gone since import: this env declares what works now
        self.metadata = {**type(self).metadata, "render_modes": _render_modes()}
        if render_mode == "human" and not human_render_available():
            raise RuntimeError('render_mode="human" needs a display ($DISPLAY); use render_mode="rgb_array" '
                               "headless (and pcmeta.envs.record_video for a video)")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if int(width) < 16 or int(height) < 16:
            raise ValueError(f"width and height must be >= 16 pixels, got {width} x {height}")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.T = tr.T_STEPS
        self.dt = tr.DT_ARM
        vmax = np.float32(self.spec_robot.speed_limit)
        self.speed_limit = float(vmax)
        self.action_space = spaces.Box(-vmax, vmax, shape=(2,), dtype=np.float32)
        start = np.asarray(self.spec_robot.start, dtype=np.float64)
        self._start = start
        if self.spec_robot.lower is not None:
            self._lower = np.asarray(self.spec_robot.lower, dtype=np.float64)
            self._upper = np.asarray(self.spec_robot.upper, dtype=np.float64)
            qlo, qhi = self._lower, self._upper
        else:  # no joint limits: the angle can move at most T * dt * speed limit from the start
            self._lower = self._upper = None
            reach = self.T * self.dt * self.speed_limit
            qlo, qhi = start - reach, start + reach
        big = 1.5  # m: both workspaces lie inside [-1.5, 1.5]^3
        lo = np.concatenate([qlo, [-vmax] * 2, [-big] * 6, [0.0]]).astype(np.float32)
        hi = np.concatenate([qhi, [vmax] * 2, [big] * 6, [1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(lo, hi, dtype=np.float32)
        self._obs_lo, self._obs_hi = lo, hi

        self._p = import_pybullet()
        p = self._p
        self._cid = -1
        with quiet_fds(stdout=True):
            if render_mode == "human":
                self._cid = p.connect(p.GUI)
            else:
                self._cid = p.connect(p.DIRECT)
        if self._cid < 0:
            raise RuntimeError("could not connect to a PyBullet physics server")
        cid = self._cid
        p.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
        p.setPhysicsEngineParameter(fixedTimeStep=self.dt, numSubSteps=0, physicsClientId=cid)
        self._body = p.loadURDF(urdf_path(robot), useFixedBase=True, physicsClientId=cid)
        self._eff = _EFFECTOR_LINK[robot]
        for j in range(p.getNumJoints(self._body, physicsClientId=cid)):
            p.changeDynamics(self._body, j, linearDamping=0.0, angularDamping=0.0, physicsClientId=cid)
        self._joints = [0, 1]
        self._forces = [MOTOR_FORCE, MOTOR_FORCE]
        # cached pybullet functions / constants (the step loop is call-bound)
        self._VEL = p.VELOCITY_CONTROL
        self._init_render()

        self._fixed_task: dict[str, Any] | None = None
        if task is not None:
            self.set_task(task)
        self._task: dict[str, Any] | None = None
        self._t = 0
        self._q = start.copy()
        self._qd = np.zeros(2)
        self._pos = tr.forward_kinematics(start, robot)
        self._trail = np.zeros((self.T + 1, 3))
        self._target_xyz: np.ndarray | None = None

    # ------------------------------------------------------------------ tasks
    def sample_tasks(self, n: int) -> list[dict[str, Any]]:
        """Draw ``n`` target trajectories (tasks) from the env's generator ``np_random`` (see module docstring)."""
        targets = tr.sample_targets(int(n), self.robot, rng=self.np_random)
        return [self._task_from(targets, i) for i in range(len(targets))]

    def set_task(self, task: dict[str, Any] | tr.ArmTargets | None) -> None:
        """Fix the target for the following resets; ``None`` returns to a random target per reset.

        ``task``: a dict as returned by :meth:`sample_tasks` (or ``info["target"]``), or an
        :class:`~pcmeta.tasks.trajectories.ArmTargets` holding exactly one trajectory. Takes effect at the
        next :meth:`reset`.
        """
        if task is None:
            self._fixed_task = None
            return
        if isinstance(task, tr.ArmTargets):
            if len(task) != 1:
                raise ValueError(f"an ArmTargets task must hold exactly 1 trajectory, got {len(task)}")
            task = self._task_from(task.numpy(), 0)
        if not isinstance(task, dict):
            raise ValueError(f"task must be a dict (see sample_tasks) or ArmTargets, got {type(task).__name__}")
        if task.get("robot", self.robot) != self.robot:
            raise ValueError(f"task is for robot {task.get('robot')!r}, this env's robot is {self.robot!r}")
        shapes = {"omega": (self.T, 2), "q": (self.T, 2), "xyz": (self.T, 3)}
        clean: dict[str, Any] = {"robot": self.robot, "start": self._start.copy()}
        for key, shape in shapes.items():
            if key not in task:
                raise ValueError(f"task lacks {key!r}; expected keys omega {shapes['omega']}, q, xyz {shapes['xyz']}")
            arr = np.asarray(task[key], dtype=np.float64)
            if arr.shape != shape or not np.isfinite(arr).all():
                raise ValueError(f"task[{key!r}] must be a finite array of shape {shape}, got shape {arr.shape}")
            clean[key] = arr.copy()
        op = task.get("omega_path")
        clean["omega_path"] = (np.asarray(op, dtype=np.float64).copy() if op is not None
                               else tr.path_velocities(clean["q"], self._start))
        self._fixed_task = clean

    @staticmethod
    def _task_from(targets: tr.ArmTargets, i: int) -> dict[str, Any]:
        return {
            "robot": targets.robot,
            "start": np.array(targets.start, dtype=np.float64),
            "omega": np.array(targets.omega[i]),
            "q": np.array(targets.q[i]),
            "xyz": np.array(targets.xyz[i]),
            "omega_path": np.array(targets.omega_path[i]),
        }

    @property
    def task(self) -> dict[str, Any] | None:
        """The current episode's target (a task dict), None before the first reset."""
        return self._task

    # ------------------------------------------------------------------ public state and handles
    @property
    def effector_position(self) -> np.ndarray:
        """The effector's position (3,) in m, float64, as PyBullet reports it after the last step (the
        observation's ``obs[4:7]`` holds the same in float32); a copy."""
        return self._pos.copy()

    @property
    def physics_client(self) -> int:
        """This env's PyBullet client id (pass as ``physicsClientId=``); -1 after :meth:`close`."""
        return self._cid

    @property
    def body_id(self) -> int:
        """PyBullet body id of the arm in :attr:`physics_client` (joints 0 and 1 are the actuated ones)."""
        return self._body

    @property
    def effector_link(self) -> int:
        """PyBullet link index of the effector (its ``getLinkState(...)[4]`` is :attr:`effector_position`)."""
        return self._eff

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at the robot's start pose; returns ``(obs, {"target": task, "robot": robot})``.

        ``options={"task": task}`` is the same as ``set_task(task)`` before the reset.
        """
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._fixed_task is not None:
            task = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._fixed_task.items()}
        else:
            task = self.sample_tasks(1)[0]
        self._task = task
        self._target_xyz = task["xyz"]
        p, cid, body = self._p, self._cid, self._body
        for j in self._joints:
            p.resetJointState(body, j, float(self._start[j]), 0.0, physicsClientId=cid)
        p.setJointMotorControlArray(body, self._joints, self._VEL, targetVelocities=[0.0, 0.0],
                                    forces=self._forces, physicsClientId=cid)
        self._t = 0
        self._read_state()
        self._trail[0] = self._pos
        if self.render_mode == "human":
            self._draw_debug_path()
        return self._obs(), {"target": task, "robot": self.robot}

    def step(self, action):
        """Apply joint velocities ``action`` (2,) rad/s for 10 ms; see the module docstring for clipping."""
        if self._task is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.T:
            raise RuntimeError(f"the episode is over after {self.T} steps (truncated); call reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,) (joint angular velocities in rad/s), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action must be finite (joint angular velocities in rad/s, shape (2,)), got {a}")
        vmax = self.speed_limit
        clipped = bool(abs(a[0]) > vmax or abs(a[1]) > vmax)
        if clipped:
            a = np.clip(a, -vmax, vmax)
        at_limit = False
        if self._lower is not None:  # joints stop at their position limits
            lo = (self._lower - self._q) / self.dt
            hi = (self._upper - self._q) / self.dt
            b = np.minimum(np.maximum(a, lo), hi)
            at_limit = bool((b != a).any())
            a = b
        p, cid = self._p, self._cid
        p.setJointMotorControlArray(self._body, self._joints, self._VEL, targetVelocities=a.tolist(),
                                    forces=self._forces, physicsClientId=cid)
        p.stepSimulation(physicsClientId=cid)
        self._read_state()
        t = self._t
        target = self._target_xyz[t]
        d = self._pos - target
        dist_sq = float(d @ d)
        self._t = t + 1
        self._trail[self._t] = self._pos
        if self.render_mode == "human":
            self._draw_debug_step()
        info = {"t": t, "target_xyz": target.copy(), "distance_sq": dist_sq,
                "action_clipped": clipped, "at_limit": at_limit}
        return self._obs(), -dist_sq, False, self._t >= self.T, info

    def _read_state(self) -> None:
        p, cid, body = self._p, self._cid, self._body
        js = p.getJointStates(body, self._joints, physicsClientId=cid)
        self._q = np.array((js[0][0], js[1][0]))
        self._qd = np.array((js[0][1], js[1][1]))
        self._pos = np.array(p.getLinkState(body, self._eff, computeForwardKinematics=True,
                                            physicsClientId=cid)[4])

    def _obs(self) -> np.ndarray:
        tgt = self._target_xyz[min(self._t, self.T - 1)]
        obs = np.empty(11, dtype=np.float32)
        obs[0:2] = self._q
        obs[2:4] = self._qd
        obs[4:7] = self._pos
        obs[7:10] = tgt
        obs[10] = self._t / self.T
        # solver round-off can put a joint 1e-9 beyond its limit or speed: keep obs inside the declared Box
        np.clip(obs, self._obs_lo, self._obs_hi, out=obs)
        return obs

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Disconnect this env's PyBullet client (safe to call twice)."""
        cid = getattr(self, "_cid", -1)
        if cid is not None and cid >= 0:
            try:
                if self._p.isConnected(physicsClientId=cid):
                    self._p.disconnect(physicsClientId=cid)
            finally:
                self._cid = -1
        super().close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:
            pass
