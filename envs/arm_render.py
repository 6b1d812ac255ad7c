"""Rendering of ``pcmeta/ArmTrajectory-v0``: camera, rgb_array frames with overlay, human-mode debug lines.

What is drawn and when is specified in :mod:`pcmeta.envs.arm` (section "Rendering"); this module holds the
code: :class:`ArmRenderMixin`, the rendering half of :class:`pcmeta.envs.arm.ArmTrajectoryEnv` (it reads
the env's PyBullet client, robot, frame size, target path and effector trail), and
:func:`human_render_available`, which decides whether "human" is declared.
"""
from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np

__all__ = ["ArmRenderMixin", "human_render_available"]

# camera (target xyz, distance m, yaw deg, pitch deg) per robot
_CAMERA = {
    "scorbot": ((0.15, 0.0, 0.25), 3.1, 50.0, -25.0),
    "planar2": ((0.0, 0.0, 0.0), 2.6, 30.0, -60.0),
}
_TARGET_RGB = (220, 30, 30)
_TRAIL_RGB = (20, 80, 230)


def human_render_available() -> bool:
    """Whether ``render_mode="human"`` (PyBullet's GUI window) can open here: True on macOS and Windows,
    elsewhere (Linux, BSD: an X11 window) when ``$DISPLAY`` is set (X11, or XWayland under Wayland)."""
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        return True
    return bool(os.environ.get("DISPLAY"))


def _render_modes() -> list[str]:
    return ["rgb_array", "human"] if human_render_available() else ["rgb_array"]


class ArmRenderMixin:
    """Camera, rgb_array frames (TinyRenderer plus the target path, target point and effector trail drawn
    by projection) and the human GUI's debug lines of :class:`pcmeta.envs.arm.ArmTrajectoryEnv`."""

    def _init_render(self) -> None:
        """No camera yet (made at the first frame) and no debug lines."""
        self._floor = None
        self._view = self._proj = None
        self._debug_items: list[int] = []

    def camera_matrices(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(view, projection)``: PyBullet's 4x4 camera matrices (16 floats each, column-major) of the
        rgb_array frames, for ``pybullet.getCameraImage(width, height, view, projection, ...)``. The first
        call also adds the visual-only floor (and the Scorbot's pedestal) to the scene."""
        return self._camera()

    def _camera(self):
        if self._view is None:
            p = self._p
            target, dist, yaw, pitch = _CAMERA[self.robot]
            self._view = p.computeViewMatrixFromYawPitchRoll(target, dist, yaw, pitch, 0.0, 2,
                                                             physicsClientId=self._cid)
            self._proj = p.computeProjectionMatrixFOV(45.0, self.width / self.height, 0.05, 10.0,
                                                      physicsClientId=self._cid)
            V = np.asarray(self._view, dtype=np.float64).reshape(4, 4).T  # column-major -> matrix
            P = np.asarray(self._proj, dtype=np.float64).reshape(4, 4).T
            self._pv = P @ V
            self._add_floor()
        return self._view, self._proj

    def _add_floor(self) -> None:
        """Visual-only scenery (no collision shape, no effect on the dynamics): a floor below the lowest
        reachable point and, for the Scorbot, a pedestal (table) carrying the arm's base."""
        p, cid = self._p, self._cid
        z = -0.52 if self.robot == "scorbot" else -0.07  # Scorbot effector reaches z = -0.46 m
        vs = p.createVisualShape(p.GEOM_BOX, halfExtents=[1.4, 1.4, 0.005], rgbaColor=[0.86, 0.86, 0.84, 1.0],
                                 physicsClientId=cid)
        self._floor = p.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=vs,
                                        basePosition=[0.0, 0.0, z - 0.005], physicsClientId=cid)
        if self.robot == "scorbot":
            vp = p.createVisualShape(p.GEOM_CYLINDER, radius=0.09, length=-z, rgbaColor=[0.55, 0.55, 0.58, 1.0],
                                     physicsClientId=cid)
            p.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=vp,
                              basePosition=[0.0, 0.0, z / 2], physicsClientId=cid)

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) (column, row) of world points ``xyz`` (..., 3) m in the rgb_array frame."""
        self._camera()
        pts = np.asarray(xyz, dtype=np.float64)
        h = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], axis=-1) @ self._pv.T
        ndc = h[..., :2] / h[..., 3:4]
        col = (ndc[..., 0] + 1.0) * 0.5 * self.width
        row = (1.0 - ndc[..., 1]) * 0.5 * self.height
        return np.stack([col, row], axis=-1)

    def render(self):
        """rgb_array: a (height, width, 3) uint8 frame; human: None (the GUI shows the scene)."""
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; make the env with render_mode="rgb_array"')
            return None
        if self.render_mode == "human":
            return None
        p = self._p
        view, proj = self._camera()
        _, _, rgba, _, _ = p.getCameraImage(
            self.width, self.height, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0,
            lightDirection=[0.4, -0.6, 1.0], flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self._cid)
        frame = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[:, :, :3]
        if self._task is None:
            return np.ascontiguousarray(frame)
        return self._overlay(frame)

    def _overlay(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image, ImageDraw

        img = Image.fromarray(np.ascontiguousarray(frame))
        draw = ImageDraw.Draw(img)
        path = self.project(self._target_xyz)
        if self._t >= 1:  # the trail is drawn wider and under the target path, so both show where they overlap
            trail = self.project(self._trail[: self._t + 1])
            draw.line([tuple(xy) for xy in trail.tolist()], fill=_TRAIL_RGB, width=5)
        draw.line([tuple(xy) for xy in path.tolist()], fill=_TARGET_RGB, width=2)
        c, r = path[min(self._t, self.T - 1)]
        draw.ellipse([c - 4, r - 4, c + 4, r + 4], fill=_TARGET_RGB)
        # legend
        draw.line([(6, 8), (20, 8)], fill=_TARGET_RGB, width=3)
        draw.text((24, 2), "target", fill=(0, 0, 0))
        draw.line([(6, 20), (20, 20)], fill=_TRAIL_RGB, width=3)
        draw.text((24, 14), "effector", fill=(0, 0, 0))
        draw.text((self.width - 70, 2), f"t = {self._t * self.dt:4.2f} s", fill=(0, 0, 0))
        return np.asarray(img)

    def _draw_debug_path(self) -> None:
        p, cid = self._p, self._cid
        for item in self._debug_items:
            p.removeUserDebugItem(item, physicsClientId=cid)
        self._debug_items = []
        xyz = self._target_xyz
        for a, b in zip(xyz[:-1:4], xyz[4::4]):
            self._debug_items.append(p.addUserDebugLine(a.tolist(), b.tolist(), [0.86, 0.12, 0.12], 2.0,
                                                        physicsClientId=cid))

    def _draw_debug_step(self) -> None:
        a, b = self._trail[self._t - 1], self._trail[self._t]
        self._debug_items.append(self._p.addUserDebugLine(a.tolist(), b.tolist(), [0.08, 0.31, 0.9], 2.0,
                                                          physicsClientId=self._cid))
