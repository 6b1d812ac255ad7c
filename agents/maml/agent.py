"""MAMLAgent: a MAML model as a :class:`pcmeta.agents.Agent` (deploy, adapt, predict, reset), with a gym-style
``act(obs)`` for ``pcmeta/OmniglotFewShot-v0``."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from pcmeta.hardware.deployment import DeployedSubstrate

from .deployed import DeployedCNN
from .inner import adapt_params
from .model import MAML


def _images(x: np.ndarray) -> torch.Tensor:
    """(n, 28, 28) or (n, 1, 28, 28) float images -> a (n, 1, 28, 28) float32 tensor."""
    t = torch.as_tensor(np.asarray(x, np.float32))
    return t if t.dim() == 4 else t.unsqueeze(1)


class MAMLAgent:
    """A meta-trained :class:`MAML` model behind the agent protocol.

    Adaptation is the model's own (``cfg.adapt``, ``cfg.test_steps`` steps of ``cfg.inner_lr``; ``steps`` and
    ``lr`` override them):

    - ``adapt="head"`` (the paper CNN): the readout is adapted on the substrate, ``arr.update(-lr * grad)``
      with the gradient of the support cross-entropy computed digitally from features read through the
      crossbars (on PCM: quantized programming pulses).
    - ``adapt="all"`` (classic MAML): every parameter is adapted in software by the model's inner loop
      (:func:`~pcmeta.agents.maml.inner.adapt_params`, the one :meth:`MAML.evaluate` uses) on the weights as
      the substrate holds them, and the change is written back with ``arr.update``. Only software deployments
      are supported (ValueError on a chip).

    ``predict`` classifies through the substrate (crossbar MVMs on im2col patches). Batch-norm uses the query
    batch's own statistics when there are several query images (the paper's protocol, as in
    :func:`~pcmeta.agents.maml.evaluate`), the support pass's statistics (after adaptation) for a single query
    image. ``reset`` re-places the adapted arrays at their meta-learned values (on a chip they are programmed
    afresh then: the readout a task starts from has not drifted, while the conv layers are ``time_s`` old).

    Without :meth:`deploy` the agent is deployed on ``substrate`` (default: exact float ``SoftwareSubstrate``).
    """

    def __init__(self, model: MAML, substrate=None, steps: int | None = None, lr: float | None = None) -> None:
        self.model = model
        self.steps = model.cfg.test_steps if steps is None else int(steps)
        self.lr = model.cfg.inner_lr if lr is None else float(lr)
        self.deployment = None
        self.adaptations = 0
        self._policy = None
        if substrate is None:
            from pcmeta.hardware import SoftwareSubstrate

            substrate = SoftwareSubstrate()
        on_chip = (substrate.deployment.on_chip if isinstance(substrate, DeployedSubstrate)
                   else substrate.kind != "software")
        self._deploy_on(substrate, on_chip)

    @classmethod
    def from_weights(cls, name=None, **kw) -> "MAMLAgent":
        """An agent from a weights file: a shipped name (``"paper_5w5s"``, ``"classic_5w1s"``, ...), ``"authors"``
        (the released weights, see :mod:`pcmeta.agents.shipped`) or a path; ``kw`` as the constructor's."""
        from pcmeta.agents.shipped import resolve_weights

        return cls(MAML.from_weights(resolve_weights(name, "omniglot")), **kw)

    # ------------------------------------------------------------------ the Agent protocol
    def deploy(self, deployment, seed: int = 0) -> None:
        """Place the meta-learned weights on ``deployment.build(seed)`` (a fresh chip) and let
        ``deployment.time_s`` pass (the adaptation happens then)."""
        self._check_substrate(deployment.on_chip, deployment.describe())
        self._place(deployment, int(seed), 0)

    def adapt(self, task) -> None:
        """Learn from ``task.support_x`` (N*K, 28, 28) and ``task.support_y`` (N*K,) as the model's config says."""
        sx, sy = _images(task.support_x), torch.as_tensor(np.asarray(task.support_y, np.int64))
        if self.model.cfg.adapt == "head":
            self._stats = self.deployed.adapt(sx, sy, self.steps, self.lr, reset=False)
        else:
            self._adapt_all(sx, sy)
        self._adapted = True
        self.adaptations += 1
        dep = self.deployment
        if dep is not None and dep.query_time_s is not None and dep.query_time_s > dep.time_s:
            self.deployed.substrate.elapse(dep.query_time_s - dep.time_s)
            self._waited = True

    @torch.no_grad()
    def predict(self, task) -> np.ndarray:
        """Scores (Q, N) (logits) for ``task.query_x`` (Q, 28, 28)."""
        qx = _images(task.query_x)
        if qx.shape[0] == 1 and self._stats is None:
            raise RuntimeError("predict() on a single query image needs the support set's batch-norm statistics: "
                               "call adapt(task) first")
        stats = self._stats if qx.shape[0] == 1 else None
        return self.deployed.predict(qx, stats).numpy()

    def reset(self) -> None:
        """Back to the meta-learned state: the adapted arrays re-placed at their meta-learned values.

        If the deployment let time pass between adaptation and the queries (``query_time_s``), the next task
        gets a fresh chip instead (chip k of a deployment with seed s is ``deployment.build(s + 1000 k)``), so
        that every task is adapted ``time_s`` after programming."""
        if self._waited:
            self._place(self.deployment, self._seed, self._chip + 1)
            return
        if self._adapted:
            if self.model.cfg.adapt == "head":
                self.deployed.reset_head()
            else:
                self.deployed.reset()
        self._adapted, self._stats = False, None

    # ------------------------------------------------------------------ gym-style adapter
    def act(self, obs: dict) -> int:
        """The label of ``obs["query_image"]`` for ``pcmeta/OmniglotFewShot-v0``: resets and adapts when the
        support set changes (a new task), then predicts the one query image (support batch statistics)."""
        if self._policy is None:
            from pcmeta.agents.protocol import OmniglotPolicy

            self._policy = OmniglotPolicy(self, self.model.cfg.n_way)
        return self._policy.act(obs)

    # ------------------------------------------------------------------ internals
    def _check_substrate(self, on_chip: bool, where: str) -> None:
        if self.model.cfg.adapt == "all" and on_chip:
            raise ValueError(f"MAMLAgent: a model that adapts every layer (adapt='all', e.g. the classic preset) "
                             f"is adapted in software; deploying it on a chip ({where}) is not supported. Use a "
                             f"software deployment, or a model that adapts its readout only (adapt='head').")

    def _deploy_on(self, substrate, on_chip: bool) -> None:
        self._check_substrate(on_chip, repr(substrate))
        self.deployed: DeployedCNN = self.model.deploy(substrate)
        self._adapted, self._waited, self._stats = False, False, None

    def _place(self, deployment, seed: int, chip: int) -> None:
        """Chip ``chip`` of ``deployment`` (seeded ``seed + 1000 chip``): weights placed, ``time_s`` elapsed."""
        sub = deployment.build(seed + 1000 * chip)
        self._deploy_on(sub, deployment.on_chip)
        self.deployment, self._seed, self._chip = deployment, seed, chip
        sub.elapse(deployment.time_s)

    def _adapt_all(self, sx: torch.Tensor, sy: torch.Tensor) -> None:
        """Every parameter adapted by the model's inner loop on the weights the substrate holds, written back."""
        cfg = replace(self.model.cfg, inner_lr=self.lr)
        start = self.deployed.weights()
        ad = adapt_params(start, sx[None], sy[None], cfg, self.steps)  # every parameter: a task dim of 1
        self.deployed.write({k: v[0] for k, v in ad.items()}, start)
        _, self._stats = self.deployed.features(sx)
