"""Gymnasium environments of pcmeta. Importing this module registers their ids:

- ``pcmeta/OmniglotFewShot-v0`` (:class:`pcmeta.envs.omniglot.OmniglotFewShotEnv`)
- ``pcmeta/ArmTrajectory-v0`` (:class:`pcmeta.envs.arm.ArmTrajectoryEnv`)

``gymnasium.make("pcmeta.envs:pcmeta/ArmTrajectory-v0")`` imports this module first, so it works
without a prior import. Entry points are strings: registering loads neither PyBullet nor the data.
"""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

_ENVS = {
    "pcmeta/OmniglotFewShot-v0": "pcmeta.envs.omniglot:OmniglotFewShotEnv",
    "pcmeta/ArmTrajectory-v0": "pcmeta.envs.arm:ArmTrajectoryEnv",
}

for _id, _entry in _ENVS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry)
