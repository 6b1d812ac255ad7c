"""A learner written only against pcmeta's public agent protocol, as an outside user would write one.

Nearest prototype on raw pixels (no meta-learning): each class's prototype is the mean of its support
images; a query's score for a class is minus its squared distance to the prototype. Its weights do not live
on a substrate, so ``deploy`` only records the deployment.
"""
from __future__ import annotations

import numpy as np


class PrototypeLearner:
    def __init__(self) -> None:
        self.prototypes: np.ndarray | None = None
        self.deployment = None

    def deploy(self, deployment, seed: int = 0) -> None:
        self.deployment = deployment

    def adapt(self, task) -> None:
        x = task.support_x.reshape(len(task.support_x), -1)
        self.prototypes = np.stack([x[task.support_y == c].mean(0) for c in range(task.n_way)])

    def predict(self, task) -> np.ndarray:
        if self.prototypes is None:
            raise RuntimeError("predict() before adapt()")
        q = task.query_x.reshape(len(task.query_x), -1)
        return -((q[:, None, :] - self.prototypes[None]) ** 2).sum(-1)

    def reset(self) -> None:
        self.prototypes = None
