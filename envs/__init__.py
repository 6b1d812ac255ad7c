"""Gymnasium environments of pcmeta. Importing this module registers their ids:

- ``pcmeta/OmniglotFewShot-v0`` (:class:`pcmeta.envs.omniglot.OmniglotFewShotEnv`), ``max_episode_steps``
  = :data:`pcmeta.envs.omniglot.MAX_EPISODE_STEPS` (123,348: above every episode, which ends by
  termination after N * n_query queries, so the TimeLimit wrapper never cuts one);
- ``pcmeta/ArmTrajectory-v0`` (:class:`pcmeta.envs.arm.ArmTrajectoryEnv`), ``max_episode_steps`` = 249,
  the trajectory length T, the step at which the env itself truncates.

``gymnasium.make("pcmeta.envs:pcmeta/ArmTrajectory-v0")`` imports this module first, so it works
without a prior import. Entry points are strings: registering loads neither PyBullet nor the data.

Videos: :func:`record_video` (one episode under a policy) and :func:`write_video` (frames you rendered)
write GIF or MP4 with pcmeta's own dependencies (Pillow, imageio, imageio-ffmpeg); Gymnasium's
``RecordVideo`` wrapper works too but needs ``pip install moviepy``, which pcmeta does not declare.
"""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

from pcmeta.envs.video import record_video, write_video

__all__ = ["record_video", "write_video", "ENV_IDS", "MAX_EPISODE_STEPS"]

#: Registered ids and their entry points.
ENV_IDS = {
    "pcmeta/OmniglotFewShot-v0": "pcmeta.envs.omniglot:OmniglotFewShotEnv",
    "pcmeta/ArmTrajectory-v0": "pcmeta.envs.arm:ArmTrajectoryEnv",
}
#: The registered ``max_episode_steps`` of each id (kept equal to the env modules' own constants,
#: which the tests check; written out here so that registering imports neither env module).
MAX_EPISODE_STEPS = {
    "pcmeta/OmniglotFewShot-v0": 4 * (964 + 659) * (20 - 1),  # pcmeta.envs.omniglot.MAX_EPISODE_STEPS
    "pcmeta/ArmTrajectory-v0": 249,  # pcmeta.envs.arm.MAX_EPISODE_STEPS = pcmeta.tasks.trajectories.T_STEPS
}

for _id, _entry in ENV_IDS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=MAX_EPISODE_STEPS[_id])
