"""Learning-to-learn agents, written against the :mod:`pcmeta.hardware` Substrate interface.

Every agent implements one protocol (:class:`Agent`: ``deploy``, ``adapt``, ``predict``, ``reset``; see
:mod:`pcmeta.agents.protocol`) and is scored by one loop (:func:`evaluate`, :mod:`pcmeta.agents.evaluation`).

- :mod:`pcmeta.agents.maml`: MAML (PyTorch) for few-shot classification; :class:`MAMLAgent`.
- :mod:`pcmeta.agents.eprop`: the spiking one-shot learner trained with natural e-prop (PyTorch, brian2);
  :class:`EpropAgent`.
- :mod:`pcmeta.agents.shipped`: finding shipped and released weights by name.

The names below are imported lazily, so ``import pcmeta.agents`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Agent": "protocol", "OmniglotPolicy": "protocol", "check_agent": "protocol",
    "evaluate": "evaluation", "EvalResult": "evaluation", "METRICS": "evaluation", "mean_ci95": "evaluation",
    "resolve_weights": "shipped", "shipped_names": "shipped",
    "MAMLAgent": "maml", "MAML": "maml", "EpropAgent": "eprop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pcmeta.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
