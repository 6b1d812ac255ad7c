"""``pcmeta arm demo``: one-shot learning of one new arm movement, executed in the arm env and rendered.

The agent (:meth:`pcmeta.agents.eprop.EpropAgent.one_shot`) learns the target in one shot on the deployment
and executes the demonstration and the test trial in ``pcmeta/ArmTrajectory-v0``; this module prints the
MSEs, puts the two trials' frames side by side into a GIF/MP4 (:func:`pcmeta.envs.write_video`) and plots
the paths.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pcmeta.demos.arm_options import arm_deployment, describe
from pcmeta.demos.options import write_result

#: arm time per env step (s)
DT = 0.01
LABELS = ("demonstration (before)", "test (after ONE update)")


def _paths(args: argparse.Namespace) -> tuple[bool, Path]:
    """(write a video?, plot path), checked."""
    video = not args.no_video
    if video and Path(args.out).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--out must end in .gif or .mp4, got {args.out!r}")
    plot_path = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    if plot_path.suffix.lower() != ".png":
        raise ValueError(f"--plot must end in .png, got {str(plot_path)!r}")
    return video, plot_path


def _one_shot(args: argparse.Namespace, dep, video: bool) -> dict[str, Any]:
    """The agent on ``dep`` learns the target of env seed --seed and executes both trials in the env."""
    from pcmeta.agents.eprop import EpropAgent
    from pcmeta.envs.arm import ArmTrajectoryEnv

    agent = EpropAgent.from_weights(args.weights, engine=args.engine, brian2_target=args.brian2_target)
    agent.deploy(dep, seed=args.seed)
    env = ArmTrajectoryEnv(render_mode="rgb_array" if video else None)
    try:
        _, info = env.reset(seed=args.seed)
        return agent.one_shot(env, info["target"], render_every=args.every if video else None)
    finally:
        env.close()


def _side_by_side(frames):
    import numpy as np
    from PIL import Image, ImageDraw

    out = []
    for f, label in zip(frames, LABELS):
        img = Image.fromarray(np.ascontiguousarray(f))
        ImageDraw.Draw(img).text((6, img.height - 14), label, fill=(0, 0, 0))
        out.append(np.asarray(img))
    gap = np.full((out[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([out[0], gap, out[1]], axis=1)


def _plot(res: dict[str, Any], path: Path, title: str) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    task = res["task"]
    T = len(task["xyz"])
    ts = (np.arange(T) + 1) * DT
    fig = Figure(figsize=(8.0, 9.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True)
    for i, name in enumerate("xyz"):
        ax = axes[i]
        ax.plot(ts, task["xyz"][:, i], color="#dc1e1e", lw=2.5, label="target")
        ax.plot(ts, res["xyz_demo"][:, i], color="#888888", lw=1.2, label="demonstration (before update)")
        ax.plot(ts, res["xyz_test"][:, i], color="#1450e6", lw=1.2, ls="--", label=LABELS[1])
        ax.set_ylabel(f"{name} (m)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    axes[0].set_title(title)
    for j in range(2):
        ax = axes[3 + j]
        ax.plot(ts, task["omega"][:, j], color="#dc1e1e", lw=2.5)
        ax.plot(ts, res["omega_demo"][:, j], color="#888888", lw=1.0)
        ax.plot(ts, res["omega_test"][:, j], color="#1450e6", lw=1.2, ls="--")
        ax.set_ylabel(f"omega q{j + 1} (rad/s)")
        ax.grid(alpha=0.3)
    axes[4].set_xlabel("arm time (s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _print_figures(args: argparse.Namespace, dep, figs: dict[str, Any]) -> None:
    print(f"one-shot arm demo: target seed {args.seed}, deployment {describe(dep)}, engine {args.engine}")
    print(f"{'':<26}{'MSE omega (rad/s)^2':>20}{'MSE xyz (m^2, executed)':>26}")
    for label, tag in zip(LABELS, ("demo", "test")):
        print(f"{label:<26}{figs[f'mse_omega_{tag}']:>20.4f}{figs[f'mse_xyz_{tag}']:>26.4f}")


def run(args: argparse.Namespace) -> int:
    """The handler of ``pcmeta arm demo``."""
    import torch

    from pcmeta.envs import write_video

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    video, plot_path = _paths(args)
    dep = arm_deployment(args, "pcm")
    res = _one_shot(args, dep, video)
    figs: dict[str, Any] = {"seed": args.seed, "engine": args.engine, "deployment": dep.to_dict()}
    for key in ("mse_omega_demo", "mse_xyz_demo", "mse_omega_test", "mse_xyz_test", "learn_s"):
        figs[key] = res[key]
    _print_figures(args, dep, figs)
    if video:
        frames = [_side_by_side(pair) for pair in zip(res["frames_demo"], res["frames_test"])]
        write_video(frames, args.out, fps=1.0 / (args.every * DT))
        print(f"wrote {args.out} ({len(frames)} frames: left the demonstration, right the test trial)")
    _plot(res, plot_path, f"one-shot learning, target seed {args.seed}, {dep.name}, {args.engine}: "
                          f"MSE xyz {figs['mse_xyz_demo']:.3g} -> {figs['mse_xyz_test']:.3g} m$^2$")
    print(f"wrote {plot_path}")
    figs["wall_s"] = time.perf_counter() - t_start
    print(f"wall time {figs['wall_s']:.1f} s (learning: demonstration + update + test {figs['learn_s']:.2f} s)")
    write_result(args, figs)
    return 0
