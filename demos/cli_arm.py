"""CLI of the arm environment: ``pcmeta arm replay`` and ``pcmeta bench env``.

``pcmeta arm replay --seed 3 --out replay.gif`` executes a target's own joint velocities (an oracle) in
``pcmeta/ArmTrajectory-v0``, writes the rendered episode (GIF, or MP4 for a ``.mp4`` suffix) and a PNG plot
of the target vs the executed x, y, z over time.

``pcmeta bench env`` measures env steps/s (no rendering) and rgb_array frames/s beside raw PyBullet
``stepSimulation`` in the same run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pcmeta.demos.options import int_range, nonneg_int, positive_int, write_result


def register(groups) -> None:
    p = groups["arm"].add_parser(
        "replay", help="execute a target's own joint velocities in the arm env; write a GIF/MP4 and a PNG plot",
        description="Oracle replay: reset pcmeta/ArmTrajectory-v0 with --seed, execute the target's joint "
                    "velocities, report the tracking MSE, write the rendered episode and a plot of target "
                    "vs executed x, y, z.")
    p.add_argument("--seed", type=nonneg_int, default=3,
                   help="reset seed, >= 0: selects the target trajectory (default 3)")
    p.add_argument("--robot", choices=["scorbot", "planar2"], default="scorbot")
    p.add_argument("--out", default="replay.gif", help="animation path, .gif or .mp4 (default replay.gif)")
    p.add_argument("--plot", default=None, help="PNG plot path (default: --out with the suffix .png)")
    p.add_argument("--velocities", choices=["path", "omega"], default="path",
                   help="'path': omega_path, the velocities that trace the (joint-limit-clipped) target "
                        "angles exactly (default); 'omega': the target's smoothed velocities omega*")
    p.add_argument("--every", type=positive_int, default=3,
                   help="render every N-th env step, >= 1 (default 3: 33 fps, real time)")
    p.add_argument("--size", type=_parse_size, default=(320, 240), metavar="WxH",
                   help="frame size WxH in pixels, each in 16..4096 (default 320x240)")
    p.add_argument("--no-video", action="store_true", help="only the plot and the MSE")
    p.set_defaults(func=_replay)

    b = groups["bench"].add_parser(
        "env", help="arm env steps/s and rgb_array frames/s beside raw PyBullet stepSimulation",
        description="Measures pcmeta/ArmTrajectory-v0 env steps/s without rendering (through gymnasium.make "
                    "and unwrapped), rgb_array frames/s at 320x240, and raw PyBullet stepSimulation/s of the "
                    "same robot in the same run.")
    b.add_argument("--robot", choices=["scorbot", "planar2"], default="scorbot")
    b.add_argument("--steps", type=int_range(1000), default=20000, help="env steps to time, >= 1000 (default 20000)")
    b.add_argument("--frames", type=int_range(10), default=200, help="frames to render, >= 10 (default 200)")
    b.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    b.add_argument("--seed", type=nonneg_int, default=0, help="seed of the actions and resets, >= 0 (default 0)")
    b.set_defaults(func=_bench_env)


# --------------------------------------------------------------------------- replay
#: a frame's width or height in pixels
_SIZE = int_range(16, 4096)


def _parse_size(text: str) -> tuple[int, int]:
    """``--size WxH`` (an argparse type): each side an integer in 16..4096."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 320x240, got {text!r}") from None
    for v in (w, h):
        _SIZE(str(v))
    return w, h


def replay(seed: int = 3, robot: str = "scorbot", out: str | None = "replay.gif", plot: str | None = None,
           velocities: str = "path", every: int = 3, size: tuple[int, int] = (320, 240),
           progress: bool = True) -> dict[str, Any]:
    """Oracle replay (see module docstring). Returns a dict with mse_m2, steps, frames, out, plot paths.

    ``out`` None: no animation. ``plot`` None: ``out`` (or ``replay.gif``) with the suffix ``.png``.
    """
    import numpy as np
    from tqdm import tqdm

    from pcmeta.envs.arm import ArmTrajectoryEnv

    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if out is not None and Path(out).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--out must end in .gif or .mp4, got {out!r}")
    key = {"path": "omega_path", "omega": "omega"}.get(velocities)
    if key is None:
        raise ValueError(f"velocities must be 'path' or 'omega', got {velocities!r}")
    plot_path = Path(plot) if plot else Path(out or "replay.gif").with_suffix(".png")
    if plot_path.suffix.lower() != ".png":
        raise ValueError(f"--plot must end in .png, got {str(plot_path)!r}")

    env = ArmTrajectoryEnv(robot=robot, render_mode="rgb_array" if out else None, width=size[0], height=size[1])
    try:
        obs, info = env.reset(seed=seed)
        target = info["target"]
        vel = target[key]
        T = len(vel)
        executed = np.zeros((T, 3))
        dist_sq = np.zeros(T)
        frames = [env.render()] if out else []
        for t in tqdm(range(T), desc="replay", unit="step", disable=not progress, leave=False):
            obs, reward, terminated, truncated, step_info = env.step(vel[t])
            executed[t] = env.unwrapped.effector_position  # float64, from PyBullet
            dist_sq[t] = -reward
            if out and ((t + 1) % every == 0 or truncated):
                frames.append(env.render())
    finally:
        env.close()
    mse = float(dist_sq.mean())
    dt = 0.01
    if out:
        from pcmeta.envs import write_video

        write_video(frames, out, fps=1.0 / (every * dt))
    _plot_replay(target["xyz"], executed, dist_sq, plot_path, seed=seed, robot=robot, key=key, mse=mse, dt=dt)
    return {"mse_m2": mse, "max_sq_m2": float(dist_sq.max()), "steps": T, "frames": len(frames),
            "out": out, "plot": str(plot_path), "velocities": key, "seed": seed, "robot": robot}


def _plot_replay(target_xyz, executed, dist_sq, path: Path, *, seed, robot, key, mse, dt) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    T = len(executed)
    time_s = (np.arange(T) + 1) * dt  # the position after step t is reached at (t + 1) * 10 ms
    fig = Figure(figsize=(7.5, 8.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True)
    for i, name in enumerate("xyz"):
        ax = axes[i]
        ax.plot(time_s, target_xyz[:, i], color="#dc1e1e", lw=2.5, label="target")
        ax.plot(time_s, executed[:, i], color="#1450e6", lw=1.2, ls="--", label="executed (PyBullet)")
        ax.set_ylabel(f"{name} (m)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    axes[0].set_title(f"{robot}, target seed {seed}: oracle replay of {key}; MSE {mse:.2e} m$^2$")
    axes[3].semilogy(time_s, np.maximum(dist_sq, 1e-20), color="k", lw=1)
    axes[3].set_ylabel("squared error (m$^2$)")
    axes[3].set_xlabel("arm time (s)")
    axes[3].grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _replay(args) -> int:
    res = replay(seed=args.seed, robot=args.robot, out=None if args.no_video else args.out, plot=args.plot,
                 velocities=args.velocities, every=args.every, size=args.size)
    print(f"oracle replay ({res['robot']}, target seed {res['seed']}, {res['velocities']}): "
          f"{res['steps']} steps of 10 ms, tracking MSE {res['mse_m2']:.3e} m^2 "
          f"(max squared error {res['max_sq_m2']:.3e} m^2)")
    if res["out"]:
        print(f"wrote {res['out']} ({res['frames']} frames)")
    print(f"wrote {res['plot']}")
    return 0


# --------------------------------------------------------------------------- bench
def _env_steps_per_s(env, actions, seed: int) -> float:
    """Steps/s of ``env`` under ``actions`` (after 500 warm-up steps), resetting at the end of episodes."""
    env.reset(seed=seed)
    for a in actions[:500]:  # warm-up
        if env.step(a)[3]:
            env.reset()
    t0 = time.perf_counter()
    for a in actions:
        if env.step(a)[3]:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def _raw_pybullet_steps_per_s(robot: str, steps: int) -> tuple[float, int]:
    """(stepSimulation/s of the bare robot in a fresh PyBullet client, PyBullet's API version)."""
    from pcmeta.envs.arm import MOTOR_FORCE, import_pybullet, quiet_fds, urdf_path

    p = import_pybullet()
    with quiet_fds():
        cid = p.connect(p.DIRECT)
    try:
        p.setGravity(0, 0, -9.81, physicsClientId=cid)
        p.setPhysicsEngineParameter(fixedTimeStep=0.01, numSubSteps=0, physicsClientId=cid)
        body = p.loadURDF(urdf_path(robot), useFixedBase=True, physicsClientId=cid)
        p.setJointMotorControlArray(body, [0, 1], p.VELOCITY_CONTROL, targetVelocities=[0.3, 0.2],
                                    forces=[MOTOR_FORCE] * 2, physicsClientId=cid)
        step = p.stepSimulation
        for _ in range(500):
            step(physicsClientId=cid)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(physicsClientId=cid)
        return steps / (time.perf_counter() - t0), p.getAPIVersion()
    finally:
        p.disconnect(physicsClientId=cid)


def _render_fps(robot: str, frames: int, seed: int) -> tuple[float, float]:
    """(rgb_array render() frames/s with pcmeta's overlay, bare TinyRenderer getCameraImage/s of the same
    scene through the env's public camera and client), at 320x240."""
    import gymnasium as gym

    from pcmeta.envs.arm import import_pybullet

    p = import_pybullet()
    renv = gym.make("pcmeta/ArmTrajectory-v0", robot=robot, render_mode="rgb_array")
    try:
        obs, info = renv.reset(seed=seed)
        vel = info["target"]["omega_path"]
        renv.render()
        t_render = 0.0
        for k in range(frames):
            renv.step(vel[k % 249])
            if k % 249 == 248:
                renv.reset()
            t0 = time.perf_counter()
            frame = renv.render()
            t_render += time.perf_counter() - t0
        assert frame.shape == (240, 320, 3)
        u = renv.unwrapped
        view, proj = u.camera_matrices()
        t0 = time.perf_counter()
        for _ in range(frames):
            p.getCameraImage(320, 240, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
                             flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=u.physics_client)
        return frames / t_render, frames / (time.perf_counter() - t0)
    finally:
        renv.close()


def bench_env(robot: str = "scorbot", steps: int = 20000, frames: int = 200, seed: int = 0) -> dict[str, Any]:
    """Measure env steps/s (make and unwrapped), raw PyBullet stepSimulation/s and rgb_array frames/s."""
    import os
    import platform

    import gymnasium as gym
    import numpy as np

    import pcmeta.envs  # noqa: F401  (registers the ids)
    from pcmeta.envs.arm import ArmTrajectoryEnv

    if steps < 1000 or frames < 10:
        raise ValueError(f"--steps must be >= 1000 and --frames >= 10, got {steps} and {frames}")
    actions = np.random.default_rng(seed).uniform(-np.pi, np.pi, size=(steps, 2)).astype(np.float32)
    env = gym.make("pcmeta/ArmTrajectory-v0", robot=robot)
    env_sps = _env_steps_per_s(env, actions, seed)
    env.close()
    raw_env = ArmTrajectoryEnv(robot=robot)
    env_sps_unwrapped = _env_steps_per_s(raw_env, actions, seed)
    raw_env.close()
    raw_sps, api = _raw_pybullet_steps_per_s(robot, steps)
    render_fps, raw_render_fps = _render_fps(robot, frames, seed)
    return {
        "env_steps_per_s": env_sps,
        "env_steps_per_s_unwrapped": env_sps_unwrapped,
        "raw_pybullet_steps_per_s": raw_sps,
        "render_fps": render_fps,
        "raw_tinyrenderer_fps": raw_render_fps,
        "robot": robot, "width": 320, "height": 240, "steps": steps, "frames": frames,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "pybullet_api": api,
    }


def _bench_env(args) -> int:
    res = bench_env(robot=args.robot, steps=args.steps, frames=args.frames, seed=args.seed)
    print(f"pcmeta/ArmTrajectory-v0 ({res['robot']}), {res['steps']} steps, {res['frames']} frames at 320x240")
    print(f"  env steps/s (gymnasium.make, no rendering): {res['env_steps_per_s']:10.0f}   (target >= 5000)")
    print(f"  env steps/s (unwrapped, no rendering):      {res['env_steps_per_s_unwrapped']:10.0f}")
    print(f"  raw PyBullet stepSimulation/s:              {res['raw_pybullet_steps_per_s']:10.0f}")
    print(f"  rgb_array frames/s (render() incl. overlay):{res['render_fps']:10.1f}   (target >= 30)")
    print(f"  raw TinyRenderer getCameraImage/s:          {res['raw_tinyrenderer_fps']:10.1f}")
    write_result(args, res)
    return 0
