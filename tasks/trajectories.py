"""Arm target trajectories, forward kinematics and the spiking input codes (SPEC.md section 2).

This module is the single source of the arm task's numbers. It imports nothing else of pcmeta; torch is
imported lazily (only when a torch tensor is passed or ``backend="torch"`` is asked for).

Public API
----------
- :func:`sample_targets` -- a batch of target trajectories (the paper's Brownian-velocity family).
- :func:`forward_kinematics` -- joint angles (rad) -> effector position (m); numpy or differentiable torch,
  the same formula (and the same numbers up to float rounding) for both.
- :func:`angles_from_velocities` -- the kinematics convention shared by the learner and the environment.
- :func:`clock_input` -- the 5-neuron clock, (T, 5).
- :func:`encode_coordinates` -- the paper's 16-bit binary code of x, y, z (LSB first, wrap-around), (..., T, 48).
- :func:`encode_coordinates_clean` -- a documented alternative code without wrap-around, for new training.
- :func:`lsg_input` -- the LSG's 53 inputs: [clock | code(x) | code(y) | code(z)].

Time and kinematics convention
------------------------------
One trajectory has ``T = 249`` steps. The spiking network runs at 1 ms per step, but each network step
advances the arm by ``DT_ARM = 0.01`` s (10 ms) of arm time. With joint velocities ``omega[t]`` (rad/s)
produced at steps ``t = 0 .. T-1`` and start angles ``q0`` (rad)::

    q[t] = q0 + 0.01 * sum_{s <= t} omega[s]          (= q0 + 0.01 * cumsum(omega)[t])
    xyz[t] = forward_kinematics(q[t])

so ``q[t]`` is the angle AFTER step ``t`` has been executed (the first step already moves the arm).
The environment ``pcmeta/ArmTrajectory-v0`` uses exactly this convention: env step ``t`` applies
``omega[t]`` for 10 ms and its reward compares the resulting effector position with ``xyz[t]``.
Angles produced by a network are not clipped (SPEC); target angles are clipped to the joint limits.

Robots
------
``"scorbot"`` (the paper's robot; only base q1 and shoulder q2 move; start (0, 0), the home pose)::

    x =  cos q1 (0.05 + 0.87 cos q2) - 0.033 sin q1
    y = -sin q1 (0.05 + 0.87 cos q2) - 0.033 cos q1
    z =  0.3585 + 0.87 sin q2                       (m); limits q1 in +-130 deg, q2 in +-70 deg

``"planar2"`` (two links of 0.5 m in the horizontal plane z = 0; start (0, pi/2))::

    x = 0.5 (cos p0 + cos(p0 + p1)),  y = 0.5 (sin p0 + sin(p0 + p1)),  z = 0

The planar arm has no joint limits: as in the authors' code its target angles are not clipped.

Target family (SPEC section 2, every constant)
----------------------------------------------
Per joint: ``omega_raw = cumsum(N(0, (delta * 0.1)^2))`` over T steps (delta = 0.65 Scorbot, 1.0 planar;
0.1 = sqrt(DT_ARM)); smoothed by cross-correlation with a *periodic* Hann window of length 120 normalised to
sum 1, after padding 119 zeros in front and the mirrored last 119 samples at the end, 'valid' mode, keeping
outputs [60, 60 + T); ``omega = clip(., -pi, pi)``; ``q = clip(q0 + 0.01 cumsum(omega), limits)``;
``xyz = forward_kinematics(q)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "T_STEPS", "DT_ARM", "N_CLOCK", "N_BITS", "ROBOTS", "SPEED_LIMIT", "WINDOW_LENGTH",
    "RobotSpec", "ArmTargets", "robot_spec", "sample_targets", "forward_kinematics",
    "angles_from_velocities", "path_velocities", "clock_input", "encode_coordinates",
    "encode_coordinates_clean", "decode_coordinates_clean", "lsg_input",
]

#: Steps of one trajectory (network steps; each is DT_ARM of arm time).
T_STEPS: int = 249
#: Arm time advanced by one network / environment step, in s.
DT_ARM: float = 0.01
#: Clock neurons.
N_CLOCK: int = 5
#: Bits per Cartesian coordinate in the paper's code.
N_BITS: int = 16
#: Joint speed limit in rad/s: target velocities are clipped to [-SPEED_LIMIT, SPEED_LIMIT].
SPEED_LIMIT: float = float(np.pi)
#: Length of the periodic Hann window that smooths the Brownian velocities (steps).
WINDOW_LENGTH: int = 120


@dataclass(frozen=True)
class RobotSpec:
    """Constants of one robot.

    Attributes:
        name: "scorbot" or "planar2".
        start: start joint angles (rad), shape (2,).
        lower, upper: joint limits (rad), shape (2,); ``None`` where the robot has none.
        delta: Brownian scale of the target family (rad/s per sqrt(s)).
        speed_limit: joint speed limit (rad/s).
    """

    name: str
    start: tuple[float, float]
    lower: tuple[float, float] | None
    upper: tuple[float, float] | None
    delta: float
    speed_limit: float = SPEED_LIMIT


ROBOTS: dict[str, RobotSpec] = {
    "scorbot": RobotSpec(
        "scorbot", (0.0, 0.0), (-np.deg2rad(130.0), -np.deg2rad(70.0)), (np.deg2rad(130.0), np.deg2rad(70.0)), 0.65
    ),
    "planar2": RobotSpec("planar2", (0.0, float(np.pi / 2)), None, None, 1.0),
}

# Scorbot constants (m), SPEC section 2.
_D1 = 0.3585
_A1 = 0.050
_A234 = 0.87
_D23 = -0.033
_L_PLANAR = 0.5


def robot_spec(robot: str) -> RobotSpec:
    """The :class:`RobotSpec` of ``robot`` ("scorbot" or "planar2"); ValueError otherwise."""
    try:
        return ROBOTS[robot]
    except KeyError:
        raise ValueError(f"robot must be one of {sorted(ROBOTS)}, got {robot!r}") from None


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch")


@dataclass
class ArmTargets:
    """A batch of n target trajectories (numpy arrays or torch tensors, per ``backend``).

    Attributes:
        robot: "scorbot" or "planar2".
        omega: (n, T, 2) target joint angular velocities, rad/s (clipped to +-pi): the learner's omega*.
        q: (n, T, 2) target joint angles, rad, clipped to the joint limits; ``q[:, t]`` is the angle after
            step t (see the module docstring).
        xyz: (n, T, 3) target effector positions, m (planar arm: z = 0).
        omega_path: (n, T, 2) rad/s, the velocities that trace ``q`` exactly:
            ``omega_path[:, t] = (q[:, t] - q[:, t-1]) / DT_ARM`` (``q[:, -1]`` = start). Equal to ``omega``
            except while a target joint rests at its limit (there it is 0). Executing ``omega_path`` in the
            environment (whose joints stop at their limits) reproduces ``xyz`` exactly; executing ``omega``
            does too unless a target joint comes back from a limit within the trajectory (about 0.5 % of
            Scorbot targets, measured over 20,000: the clipped target angle leaves the limit only when
            the unclipped sum returns, the stopped joint as soon as omega reverses).
        start: (2,) start angles, rad.
    """

    robot: str
    omega: Any
    q: Any
    xyz: Any
    omega_path: Any
    start: Any

    def __len__(self) -> int:
        return int(self.omega.shape[0])

    def __getitem__(self, i: int | slice) -> "ArmTargets":
        """Select targets along the batch axis (keeps the leading axis for an int: shape (1, T, .))."""
        if isinstance(i, (int, np.integer)):
            i = slice(int(i), int(i) + 1 if int(i) != -1 else None)
        return ArmTargets(self.robot, self.omega[i], self.q[i], self.xyz[i], self.omega_path[i], self.start)

    def numpy(self) -> "ArmTargets":
        """The same targets as float64 numpy arrays."""
        f = (lambda a: a.detach().cpu().numpy().astype(np.float64)) if _is_torch(self.omega) else np.asarray
        return ArmTargets(self.robot, f(self.omega), f(self.q), f(self.xyz), f(self.omega_path), f(self.start))

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (robot, omega, q, xyz, omega_path, start)."""
        return {"robot": self.robot, "omega": self.omega, "q": self.q, "xyz": self.xyz,
                "omega_path": self.omega_path, "start": self.start}


def hann_periodic(length: int = WINDOW_LENGTH) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / length)``, n = 0..length-1, normalised to sum 1."""
    n = np.arange(length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    return w / w.sum()


def smooth_velocities(raw: np.ndarray, window_length: int = WINDOW_LENGTH) -> np.ndarray:
    """Hann smoothing of SPEC section 2 along axis 1 of ``raw`` (n, T, d) -> (n, T, d).

    Pads ``window_length - 1`` zeros in front and the last ``window_length - 1`` samples reversed at the end,
    cross-correlates with :func:`hann_periodic` ('valid') and keeps outputs [L//2, L//2 + T).
    """
    raw = np.asarray(raw, dtype=np.float64)
    n, T, d = raw.shape
    L = int(window_length)
    if T < L - 1:
        raise ValueError(f"trajectory length {T} must be >= window_length - 1 = {L - 1}")
    w = hann_periodic(L)
    pad = np.concatenate([np.zeros((n, L - 1, d)), raw, raw[:, T - (L - 1):][:, ::-1]], axis=1)
    # windows[:, i, :, k] = pad[:, i + k, :]; only the outputs kept by the crop are computed.
    win = np.lib.stride_tricks.sliding_window_view(pad, L, axis=1)[:, L // 2: L // 2 + T]
    return win @ w


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def sample_targets(
    n: int,
    robot: str = "scorbot",
    rng: np.random.Generator | int | None = None,
    backend: str = "numpy",
    T: int = T_STEPS,
    dtype: Any = None,
    device: Any = None,
) -> ArmTargets:
    """Draw ``n`` target trajectories of the paper's family (module docstring; SPEC section 2).

    Args:
        n: number of targets (>= 1).
        robot: "scorbot" (delta 0.65, start (0, 0), clipped to +-130 / +-70 deg) or "planar2" (delta 1.0,
            start (0, pi/2), no limits).
        rng: numpy Generator, or an int seed; the same seed gives the same targets in both backends.
        backend: "numpy" (float64 arrays) or "torch" (tensors, default float32, on ``device``).
        T: steps per trajectory (default 249).
        dtype, device: torch dtype / device for ``backend="torch"``.

    Returns:
        :class:`ArmTargets` with omega (n, T, 2) rad/s, q (n, T, 2) rad, xyz (n, T, 3) m, omega_path
        (n, T, 2) rad/s, start (2,) rad. Generation is vectorised (no Python loop over time steps).
    """
    spec = robot_spec(robot)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    gen = _as_generator(rng)
    sigma = spec.delta * np.sqrt(DT_ARM)
    raw = np.cumsum(gen.normal(0.0, sigma, size=(int(n), int(T), 2)), axis=1)
    omega = np.clip(smooth_velocities(raw), -spec.speed_limit, spec.speed_limit)
    start = np.asarray(spec.start, dtype=np.float64)
    q = angles_from_velocities(omega, start)
    if spec.lower is not None:
        q = np.clip(q, np.asarray(spec.lower), np.asarray(spec.upper))
    xyz = forward_kinematics(q, robot)
    omega_path = path_velocities(q, start)
    if backend == "numpy":
        return ArmTargets(robot, omega, q, xyz, omega_path, start)
    import torch

    dt = dtype if dtype is not None else torch.float32
    t = lambda a: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
    return ArmTargets(robot, t(omega), t(q), t(xyz), t(omega_path), t(start))


def angles_from_velocities(omega: Any, start: Any) -> Any:
    """Joint angles (rad) from velocities: ``q[..., t, :] = start + DT_ARM * sum_{s<=t} omega[..., s, :]``.

    ``omega`` (..., T, 2) rad/s, numpy or torch (differentiable); ``start`` (2,) rad. Not clipped.
    """
    if _is_torch(omega):
        import torch

        st = torch.as_tensor(start, dtype=omega.dtype, device=omega.device)
        return st + DT_ARM * torch.cumsum(omega, dim=-2)
    return np.asarray(start, dtype=np.float64) + DT_ARM * np.cumsum(omega, axis=-2)


def path_velocities(q: Any, start: Any) -> Any:
    """Inverse of :func:`angles_from_velocities`: ``(q[t] - q[t-1]) / DT_ARM`` with ``q[-1] = start``."""
    if _is_torch(q):
        import torch

        st = torch.as_tensor(start, dtype=q.dtype, device=q.device).expand_as(q[..., :1, :])
        return torch.diff(q, dim=-2, prepend=st) / DT_ARM
    q = np.asarray(q)
    st = np.broadcast_to(np.asarray(start, dtype=q.dtype), q[..., :1, :].shape)
    return np.diff(q, axis=-2, prepend=st) / DT_ARM


def forward_kinematics(q: Any, robot: str = "scorbot") -> Any:
    """Effector position (m) from joint angles ``q`` (..., 2) in rad -> (..., 3).

    numpy in, numpy out; torch in, torch out (differentiable, same formula). See the module docstring for
    the two robots' equations. The planar arm's z is 0.
    """
    robot_spec(robot)
    if _is_torch(q):
        import torch as xp

        stack = lambda cols: xp.stack(cols, dim=-1)  # noqa: E731
        zeros = xp.zeros_like
    else:
        xp = np
        q = np.asarray(q, dtype=np.float64) if not np.issubdtype(np.asarray(q).dtype, np.floating) else np.asarray(q)
        stack = lambda cols: np.stack(cols, axis=-1)  # noqa: E731
        zeros = np.zeros_like
    if q.shape[-1] != 2:
        raise ValueError(f"q must have shape (..., 2) (two joint angles in rad), got {tuple(q.shape)}")
    a, b = q[..., 0], q[..., 1]
    if robot == "scorbot":
        reach = _A1 + _A234 * xp.cos(b)
        ca, sa = xp.cos(a), xp.sin(a)
        return stack([ca * reach + _D23 * sa, -sa * reach + _D23 * ca, _D1 + _A234 * xp.sin(b)])
    ab = a + b
    return stack([_L_PLANAR * (xp.cos(a) + xp.cos(ab)), _L_PLANAR * (xp.sin(a) + xp.sin(ab)), zeros(a)])


def clock_input(T: int = T_STEPS, n: int = N_CLOCK, period: int = 10, group: int = 50) -> np.ndarray:
    """The clock input, (T, n) float32 of 0/1 spikes.

    Neuron k spikes at t = group*k, group*k + period, ..., group*k + group - period (defaults: 50k, 50k+10,
    ..., 50k+40 for k = 0..4, t = 0..248), i.e. each neuron is active in its own 50-step block.
    """
    x = np.zeros((int(T), int(n)), dtype=np.float32)
    t = np.arange(int(T))
    k = t // group
    on = (t % period == 0) & (k < n)
    x[t[on], k[on]] = 1.0
    return x


def encode_coordinates(xyz: Any, bits: int = N_BITS) -> Any:
    """The paper's binary code of Cartesian coordinates (SPEC section 2), (..., 3) m -> (..., 3 * bits).

    Each coordinate c becomes ``v = int((c + 1) * 2**(bits-1))`` (computed in float32 as the authors'
    pipeline did, truncated toward zero), and bit k of v (k = 0..bits-1, least significant first) is
    input line k. The layout is [bits of x | bits of y | bits of z]. There is no clipping: for c >= 1 the
    bit 2**bits is dropped, so the code wraps around (z above 1 m looks like z - 2 m would); the released
    LSG weights were trained on exactly this. numpy in -> float32 numpy out; torch in -> float32 torch out
    (not differentiable). For a code without wrap-around see :func:`encode_coordinates_clean`.
    """
    if xyz.shape[-1] != 3:
        raise ValueError(f"xyz must have shape (..., 3) in m, got {tuple(xyz.shape)}")
    if _is_torch(xyz):
        import torch

        v = ((xyz.detach().to(torch.float32) + 1.0) * float(2 ** (bits - 1))).to(torch.int64)
        mask = (1 << torch.arange(bits, device=xyz.device, dtype=torch.int64))
        code = ((v[..., None] & mask) != 0).to(torch.float32)
        return code.reshape(*xyz.shape[:-1], 3 * bits)
    x32 = np.asarray(xyz, dtype=np.float32)
    v = ((x32 + np.float32(1.0)) * np.float32(2 ** (bits - 1))).astype(np.int64)
    code = (v[..., None] & (np.int64(1) << np.arange(bits, dtype=np.int64))) != 0
    return code.astype(np.float32).reshape(*x32.shape[:-1], 3 * bits)


#: Coordinate range (m) of the clean code; contains both robots' workspaces (Scorbot z up to 1.23 m).
CLEAN_RANGE: tuple[float, float] = (-1.5, 1.5)


def encode_coordinates_clean(
    xyz: Any, bits: int = N_BITS, lo: float = CLEAN_RANGE[0], hi: float = CLEAN_RANGE[1], gray: bool = True
) -> Any:
    """A code for new training without the paper's wrap-around, (..., 3) m -> (..., 3 * bits) float32.

    Each coordinate is mapped to ``v = floor((c - lo) / (hi - lo) * 2**bits)`` over a range that contains
    the whole workspace (default [-1.5, 1.5) m: resolution 3 m / 65536 = 46 um), least significant bit
    first, as the paper's code. With ``gray=True`` (default) v is Gray-coded (``v ^ (v >> 1)``), so
    neighbouring positions differ in one input line and a smooth path never flips many lines at once.
    Values outside [lo, hi) raise ValueError (nothing is clipped silently).
    """
    if xyz.shape[-1] != 3:
        raise ValueError(f"xyz must have shape (..., 3) in m, got {tuple(xyz.shape)}")
    x = xyz.detach().cpu().double().numpy() if _is_torch(xyz) else np.asarray(xyz, dtype=np.float64)
    if x.size and (x.min() < lo or x.max() >= hi or not np.isfinite(x).all()):
        raise ValueError(f"coordinates must lie in [{lo}, {hi}) m for the clean code, got [{x.min()}, {x.max()}]")
    v = np.floor((x - lo) / (hi - lo) * 2**bits).astype(np.int64)
    if gray:
        v = v ^ (v >> 1)
    code = ((v[..., None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.float32)
    code = code.reshape(*x.shape[:-1], 3 * bits)
    if _is_torch(xyz):
        import torch

        return torch.from_numpy(code).to(xyz.device)
    return code


def decode_coordinates_clean(
    code: Any, bits: int = N_BITS, lo: float = CLEAN_RANGE[0], hi: float = CLEAN_RANGE[1], gray: bool = True
) -> np.ndarray:
    """Inverse of :func:`encode_coordinates_clean` (to the lower edge of each bin), (..., 3*bits) -> (..., 3) m."""
    c = code.detach().cpu().numpy() if _is_torch(code) else np.asarray(code)
    c = c.reshape(*c.shape[:-1], 3, bits).astype(np.int64)
    v = (c << np.arange(bits, dtype=np.int64)).sum(-1)
    if gray:
        shift = v >> 1
        while shift.any():
            v = v ^ shift
            shift = shift >> 1
    return lo + v.astype(np.float64) * (hi - lo) / 2**bits


def lsg_input(xyz: Any, clean: bool = False) -> Any:
    """The LSG's input, (..., T, 3) m -> (..., T, 5 + 48) float32: [clock | code x | code y | code z].

    ``clean=False`` uses the paper's code (needed for the released weights); ``clean=True`` the
    alternative of :func:`encode_coordinates_clean`. numpy or torch, matching ``xyz``.
    """
    T = xyz.shape[-2]
    code = encode_coordinates_clean(xyz) if clean else encode_coordinates(xyz)
    clock = clock_input(T)
    if _is_torch(xyz):
        import torch

        clk = torch.from_numpy(clock).to(code.device).expand(*code.shape[:-1], N_CLOCK)
        return torch.cat([clk, code], dim=-1)
    clk = np.broadcast_to(clock, (*code.shape[:-1], N_CLOCK))
    return np.concatenate([clk, code], axis=-1)
