"""Write rgb_array frames of pcmeta's environments to GIF or MP4, with what pcmeta already installs.

Gymnasium's :class:`gymnasium.wrappers.RecordVideo` needs ``moviepy``, which pcmeta does not declare
(``pip install moviepy`` if you want that wrapper). These two functions need nothing beyond pcmeta's own
dependencies: Pillow for GIF, imageio with imageio-ffmpeg (its wheel ships the ffmpeg binary) for MP4.

- :func:`record_video` runs one episode of an env made with ``render_mode="rgb_array"`` under a policy and
  writes its frames;
- :func:`write_video` writes a list of frames you rendered yourself.

Example::

    import gymnasium as gym
    import pcmeta.envs
    env = gym.make("pcmeta/ArmTrajectory-v0", render_mode="rgb_array")
    info = pcmeta.envs.record_video(env, lambda obs: env.action_space.sample(), "arm.gif", seed=0)
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["record_video", "write_video", "VIDEO_SUFFIXES", "GIF_MAX_FPS"]

#: The file types written, by suffix (case-insensitive).
VIDEO_SUFFIXES = (".gif", ".mp4")
#: Highest GIF frame rate that plays at its true speed: GIF delays are in 1/100 s, and browsers show
#: delays under 20 ms (above 50 frames/s) as 100 ms.
GIF_MAX_FPS = 50.0


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in .gif or .mp4, got {str(path)!r}")
    return p


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write ``frames`` to ``path`` (.gif or .mp4) at ``fps`` frames per second; returns the path.

    Args:
        frames: (height, width, 3) uint8 RGB arrays, all of the same shape (at least one).
        path: the file to write, ``.gif`` (Pillow, one shared adaptive palette so colours stay steady
            from frame to frame, loops forever) or ``.mp4`` (H.264 through imageio-ffmpeg). Its folder is
            created if missing.
        fps: frames per second of the file (> 0). A GIF above :data:`GIF_MAX_FPS` plays slower than
            real time in most viewers: a warning says so (record every n-th frame instead).

    Raises:
        ValueError: for another suffix, no frames, frames that are not (H, W, 3) uint8 of one shape, or
            ``fps <= 0``.
    """
    p = _check_path(path)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    shape = frames[0].shape
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or f.shape != shape:
            raise ValueError(f"frames must be (height, width, 3) uint8 arrays of one shape {shape}; "
                             f"frame {i} is {f.shape} {f.dtype}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".gif":
        if fps > GIF_MAX_FPS:
            warnings.warn(f"a GIF at {fps:g} frames/s plays slower than real time in most viewers "
                          f"(delays under 20 ms are shown as 100 ms); keep fps <= {GIF_MAX_FPS:g}",
                          stacklevel=2)
        from PIL import Image

        imgs = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        pal = imgs[len(imgs) // 2].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
        imgs = [im.quantize(palette=pal, dither=Image.Dither.NONE) for im in imgs]
        imgs[0].save(p, save_all=True, append_images=imgs[1:], duration=int(round(1000.0 / fps)), loop=0)
    else:
        import imageio.v2 as imageio

        # macro_block_size 8: frame sizes that are multiples of 8 (pcmeta's defaults) are kept as they are
        with imageio.get_writer(p, fps=fps, codec="libx264", quality=8, macro_block_size=8) as w:
            for f in frames:
                w.append_data(f)
    return p


def record_video(env: Any, policy: Callable[[Any], Any] | None, path: str | Path, *, seed: int | None = None,
                 options: dict[str, Any] | None = None, every: int | None = None, fps: float | None = None,
                 max_steps: int | None = None) -> dict[str, Any]:
    """Run one episode of ``env`` under ``policy`` and write its rendered frames to ``path`` (.gif/.mp4).

    Args:
        env: a Gymnasium env (wrapped or not) made with ``render_mode="rgb_array"``; it is reset, stepped
            until ``terminated`` or ``truncated`` (or ``max_steps``), and left open.
        policy: ``action = policy(obs)``; None samples ``env.action_space`` (seeded from ``seed``).
        path: the file to write (see :func:`write_video`).
        seed, options: passed to ``env.reset``.
        every: keep the frame after reset and every ``every``-th step (and always the last step's).
            Default: 1 for MP4; for GIF the smallest value that keeps the frame rate at most
            :data:`GIF_MAX_FPS` (the arm, 100 steps/s: every 2nd step).
        fps: frames per second of the file; default the env's ``metadata["render_fps"] / every``, so the
            video plays in the env's real time.
        max_steps: stop after this many steps even if the episode goes on (None: no limit).

    Returns:
        ``{"path", "steps", "frames", "fps", "every", "return", "terminated", "truncated"}``.
    """
    p = _check_path(path)
    if getattr(env, "render_mode", None) != "rgb_array":
        raise ValueError(f"record_video needs an env made with render_mode='rgb_array', "
                         f"got render_mode={getattr(env, 'render_mode', None)!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    env_fps = float(env.metadata.get("render_fps") or 30)
    if every is None:
        every = max(1, math.ceil(env_fps / GIF_MAX_FPS)) if p.suffix.lower() == ".gif" else 1
    if int(every) != every or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    every = int(every)
    if fps is None:
        fps = env_fps / every
    if policy is None:
        env.action_space.seed(seed)
        policy = lambda obs: env.action_space.sample()  # noqa: E731
    obs, _ = env.reset(seed=seed, options=options)
    frames = [env.render()]
    steps, ret, terminated, truncated = 0, 0.0, False, False
    while not (terminated or truncated) and (max_steps is None or steps < max_steps):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        steps += 1
        ret += float(reward)
        last = terminated or truncated or (max_steps is not None and steps >= max_steps)
        if steps % every == 0 or last:
            frames.append(env.render())
    write_video(frames, p, fps)
    return {"path": str(p), "steps": steps, "frames": len(frames), "fps": float(fps), "every": every,
            "return": ret, "terminated": bool(terminated), "truncated": bool(truncated)}
