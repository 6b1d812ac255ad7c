"""Baseline agents of pcmeta's benchmarks (no meta-learning), and the catalogue of shipped entries.

- :class:`RandomAgent`: uniform random scores (Omniglot): chance level, ``1/N``.
- :class:`PixelPrototypeAgent`: nearest prototype on raw pixels (Omniglot): each class's prototype is the
  mean of its support images; a query scores minus its squared distance to each prototype.
- ``arm-no-adapt``: the meta-learned spiking learner without its update (the test trial with the initial
  weights), and ``arm-untrained``: the same network with one e-prop update from a random, non-meta-learned
  initialisation (:func:`pcmeta.agents.eprop.weights.init_params`); both are :class:`EpropAgent` s.

:data:`SHIPPED` names every shipped entry of the leaderboard with the families it runs on and a factory
``make(benchmark, weights file) -> agent`` and the weights file it loads (:meth:`Entry.weights`, whose SHA-256
every benchmark record carries); an entry raises :class:`NotAvailable` when it has no weights for a benchmark
(e.g. MAML's 5-way readout on a 20-way benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pcmeta.files import file_sha256


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
def _maml_weights(weights_by_split: dict[str, str]) -> Callable[[Any], Path]:
    def weights(benchmark: Any) -> Path:
        from pcmeta.agents.shipped import resolve_weights  # noqa: PLC0415

        name = weights_by_split.get(benchmark.split)
        if name is None or benchmark.n_way != 5:
            raise NotAvailable(f"no shipped MAML weights for {benchmark.name} (shipped: 5-way readouts, "
                               f"{sorted(weights_by_split)} split)")
        return resolve_weights(name, "omniglot")
    return weights


def _arm_weights(benchmark: Any) -> Path:
    from pcmeta.agents.shipped import resolve_weights  # noqa: PLC0415

    return resolve_weights(None, "arm")


def _no_weights(benchmark: Any) -> None:
    return None


def _maml(benchmark: Any, path: Path) -> Any:
    from pcmeta.agents.maml import MAMLAgent  # noqa: PLC0415 (torch model, loaded when used)

    return MAMLAgent.from_weights(path)


def _eprop(update: bool = True) -> Callable[[Any, Path | None], Any]:
    def make(benchmark: Any, path: Path | None) -> Any:
        from pcmeta.agents.eprop import EpropAgent  # noqa: PLC0415
        from pcmeta.agents.eprop.weights import init_params  # noqa: PLC0415

        if path is None:
            return EpropAgent(init_params(seed=0), update=update)
        return EpropAgent.from_weights(path, update=update)
    return make


@dataclass(frozen=True)
class Entry:
    """A shipped leaderboard entry: the families it runs on, whether its weights live on the deployment's
    substrate (``on_chip``; False: deployment-independent, run once in software), its factory
    ``make(benchmark, weights file or None)``, the splits whose benchmarks it runs in software only, and
    ``weights(benchmark)``: the weights file it loads for a benchmark (None: no file; raises
    :class:`NotAvailable` where it has none for that benchmark)."""

    families: tuple[str, ...]
    on_chip: bool
    make: Callable[[Any, Path | None], Any]
    description: str
    software_only_splits: tuple[str, ...] = ()  # benchmarks of these splits: software deployments only
    weights: Callable[[Any], Path | None] = _no_weights

    def agent(self, benchmark: Any) -> Any:
        """The entry's agent for ``benchmark`` (:class:`NotAvailable` where it has no weights for it)."""
        return self.make(benchmark, self.weights(benchmark))

    def weights_sha256(self, benchmark: Any) -> str | None:
        """The SHA-256 of the weights file the entry loads for ``benchmark`` (None: no file, or none for it)."""
        try:
            path = self.weights(benchmark)
        except NotAvailable:
            return None
        return None if path is None else file_sha256(path)


SHIPPED: dict[str, Entry] = {
    "random": Entry(("omniglot",), False, lambda b, w: RandomAgent(), "uniform random scores (chance level)"),
    "pixel-prototype": Entry(("omniglot",), False, lambda b, w: PixelPrototypeAgent(),
                             "nearest class mean on raw pixels, no meta-learning"),
    "maml": Entry(("omniglot",), True, _maml,
                  "MAML, pcmeta's shipped float weights (paper_5w5s; classic split: classic_5w1s, every "
                  "parameter adapted in software, so software deployments only)", ("classic",),
                  _maml_weights({"paper": "paper_5w5s", "classic": "classic_5w1s"})),
    "maml-4bit": Entry(("omniglot",), True, _maml,
                       "MAML meta-trained through the paper's 4-bit quantizer (paper_5w5s_4bit)",
                       weights=_maml_weights({"paper": "paper_5w5s_4bit"})),
    "eprop": Entry(("arm",), True, _eprop(), "spiking learner, natural e-prop, pcmeta's shipped arm weights",
                   weights=_arm_weights),
    "arm-no-adapt": Entry(("arm",), True, _eprop(update=False), "the meta-learned spiking learner, no update",
                          weights=_arm_weights),
    "arm-untrained": Entry(("arm",), True, _eprop(),
                           "one e-prop update from a random (non-meta-learned) initialisation"),
}
