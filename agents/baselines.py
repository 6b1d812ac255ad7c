"""Baseline agents of pcmeta's benchmarks (no meta-learning), and the catalogue of shipped entries.

- :class:`RandomAgent`: uniform random scores (Omniglot): chance level, ``1/N``.
- :class:`PixelPrototypeAgent`: nearest prototype on raw pixels (Omniglot): each class's prototype is the
  mean of its support images; a query scores minus its squared distance to each prototype.
- ``arm-no-adapt``: the meta-learned spiking learner without its update (the test trial with the initial
  weights), and ``arm-untrained``: the same network with one e-prop update from a random, non-meta-learned
  initialisation (:func:`pcmeta.agents.eprop.weights.init_params`); both are :class:`EpropAgent` s.

:data:`SHIPPED` names every shipped entry of the leaderboard with the families it runs on and a factory
``make(benchmark) -> agent``; a factory raises :class:`NotAvailable` when it has no weights for a benchmark
(e.g. MAML's 5-way readout on a 20-way benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


class NotAvailable(ValueError):
    """A shipped agent has no weights or no protocol for this benchmark."""


class RandomAgent:
    """Uniform random scores for every query (seeded by ``deploy``): the chance level of a benchmark."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def deploy(self, deployment: Any, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def adapt(self, task: Any) -> None:
        pass

    def predict(self, task: Any) -> np.ndarray:
        return self.rng.random((len(task.query_x), task.n_way))

    def reset(self) -> None:
        pass


class PixelPrototypeAgent:
    """Nearest class prototype (mean support image) on raw pixels; no weights on a substrate."""

    def __init__(self) -> None:
        self.prototypes: np.ndarray | None = None

    def deploy(self, deployment: Any, seed: int = 0) -> None:
        pass

    def adapt(self, task: Any) -> None:
        x = task.support_x.reshape(len(task.support_x), -1).astype(np.float64)
        self.prototypes = np.stack([x[task.support_y == c].mean(0) for c in range(task.n_way)])

    def predict(self, task: Any) -> np.ndarray:
        if self.prototypes is None:
            raise RuntimeError("predict() before adapt()")
        q = task.query_x.reshape(len(task.query_x), -1).astype(np.float64)
        return -((q[:, None, :] - self.prototypes[None]) ** 2).sum(-1)

    def reset(self) -> None:
        self.prototypes = None


# ------------------------------------------------------------------------------------- shipped entries
def _maml(weights_by_split: dict[str, str]) -> Callable[[Any], Any]:
    def make(benchmark: Any) -> Any:
        from pcmeta.agents.maml import MAMLAgent  # noqa: PLC0415 (torch model, loaded when used)

        name = weights_by_split.get(benchmark.split)
        if name is None or benchmark.n_way != 5:
            raise NotAvailable(f"no shipped MAML weights for {benchmark.name} (shipped: 5-way readouts, "
                               f"{sorted(weights_by_split)} split)")
        return MAMLAgent.from_weights(name)
    return make


def _eprop(weights: str | None = None, update: bool = True, untrained: bool = False) -> Callable[[Any], Any]:
    def make(benchmark: Any) -> Any:
        from pcmeta.agents.eprop import EpropAgent  # noqa: PLC0415
        from pcmeta.agents.eprop.weights import init_params  # noqa: PLC0415

        if untrained:
            return EpropAgent(init_params(seed=0), update=update)
        return EpropAgent.from_weights(weights, update=update)
    return make


@dataclass(frozen=True)
class Entry:
    """A shipped leaderboard entry: the families it runs on, whether its weights live on the deployment's
    substrate (``on_chip``; False: deployment-independent, run once in software), its factory, and the splits
    whose benchmarks it runs in software only."""

    families: tuple[str, ...]
    on_chip: bool
    make: Callable[[Any], Any]
    description: str
    software_only_splits: tuple[str, ...] = ()  # benchmarks of these splits: software deployments only


SHIPPED: dict[str, Entry] = {
    "random": Entry(("omniglot",), False, lambda b: RandomAgent(), "uniform random scores (chance level)"),
    "pixel-prototype": Entry(("omniglot",), False, lambda b: PixelPrototypeAgent(),
                             "nearest class mean on raw pixels, no meta-learning"),
    "maml": Entry(("omniglot",), True, _maml({"paper": "paper_5w5s", "classic": "classic_5w1s"}),
                  "MAML, pcmeta's shipped float weights (paper_5w5s; classic split: classic_5w1s, every "
                  "parameter adapted in software, so software deployments only)", ("classic",)),
    "maml-4bit": Entry(("omniglot",), True, _maml({"paper": "paper_5w5s_4bit"}),
                       "MAML meta-trained through the paper's 4-bit quantizer (paper_5w5s_4bit)"),
    "eprop": Entry(("arm",), True, _eprop(), "spiking learner, natural e-prop, pcmeta's shipped arm weights"),
    "arm-no-adapt": Entry(("arm",), True, _eprop(update=False), "the meta-learned spiking learner, no update"),
    "arm-untrained": Entry(("arm",), True, _eprop(untrained=True),
                           "one e-prop update from a random (non-meta-learned) initialisation"),
}
