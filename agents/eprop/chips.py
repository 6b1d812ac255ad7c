"""How the spiking learner meets a :class:`pcmeta.hardware.Deployment`: one fresh chip per task and the
deployments that need no chip at all.

Task k (k = 1, 2, ...) of a run seeded ``seed`` runs on ``deployment.build(chip_seed(seed, k))``, for
:func:`~pcmeta.agents.eprop.evaluate`, :func:`~pcmeta.agents.eprop.evaluate_brian2` and
:class:`~pcmeta.agents.eprop.EpropAgent` alike, so the three give the same chips.
"""
from __future__ import annotations

from pcmeta.hardware.deployment import Deployment

__all__ = ["CHIP_SEED_STRIDE", "chip_seed", "exact_float", "check_engine"]

#: Task k of a run seeded ``seed`` gets the chip seed ``seed * CHIP_SEED_STRIDE + k``.
CHIP_SEED_STRIDE = 100003


def chip_seed(seed: int, k: int) -> int:
    """The chip seed of task ``k`` (1, 2, ...) of a run seeded ``seed``."""
    return int(seed) * CHIP_SEED_STRIDE + int(k)


def exact_float(deployment: Deployment | None) -> bool:
    """True when the deployment is plain exact float software (None, or substrate "software" with no options,
    no clip and no placement rules): the learner then runs on its float weights, batched, without a substrate."""
    return deployment is None or (deployment.substrate == "software" and not deployment.config
                                  and deployment.clip is None and not deployment.placements)


def check_engine(deployment: Deployment | None, engine: str) -> None:
    """ValueError for a deployment the engine cannot simulate faithfully: the authors' arm model draws read
    noise on every MVM, which the brian2 engine (weights read once per trial) would not do."""
    if deployment is not None and deployment.substrate == "authors-arm" and engine != "torch":
        raise ValueError(f"deployment {deployment.name!r} (the authors' arm model) draws read noise on every MVM: "
                         f"use the torch engine, not {engine!r}")
