"""Weight files of the spiking learner: names, loading, saving and random initial weights.

A weight dict holds :data:`~pcmeta.agents.eprop.config.PARAM_KEYS`, every matrix (pre, post), as the
authors' released .npz. pcmeta's own meta-trained weights ship as package data (``agents/weights/``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pcmeta.agents.shipped import DEFAULTS, WEIGHTS_DIR, resolve_weights
from pcmeta.files import check_arrays, load_arrays, save_npz

from .config import LEARNER, LSG, PARAM_KEYS

__all__ = ["SHIPPED_WEIGHTS", "SHAPES", "load_weights", "check_params", "save_weights_npz", "init_params"]

#: pcmeta's own meta-trained arm weights, shipped as package data (agents/weights/arm_eprop.md says how made);
#: names and the authors' released weights are resolved by :func:`pcmeta.agents.shipped.resolve_weights`
SHIPPED_WEIGHTS: Path = WEIGHTS_DIR / DEFAULTS["arm"]


#: the shape of every matrix of a weight dict, (pre, post)
SHAPES = {
    "W_in_lsg": (LSG.n_in, LSG.n_rec), "W_rec_lsg": (LSG.n_rec, LSG.n_rec), "W_out_lsg": (LSG.n_rec, LSG.n_out),
    "W_in_trainee": (LEARNER.n_in, LEARNER.n_rec), "W_rec_trainee": (LEARNER.n_rec, LEARNER.n_rec),
    "W_out_trainee": (LEARNER.n_rec, LEARNER.n_out),
}


#: What the messages call the files of this module.
WHAT = "arm weights"


def load_weights(path: str | Path | None = None, dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
    """Load a weight .npz in the released layout (:data:`PARAM_KEYS`, each (pre, post)) as tensors.

    ``path``: a file, or a name of :func:`pcmeta.agents.shipped.resolve_weights` (None / "pcmeta": the shipped
    weights; "authors": the authors' released ones from ``$PCMETA_REFERENCE_DIR``; a shipped name). Raises
    FileNotFoundError (saying where the file should be) when the file is missing, and
    :class:`pcmeta.files.WeightsFileError` (a ValueError) naming the file, what is wrong and the expected layout
    when it cannot be read, lacks or adds a key, or holds a wrong shape, a non-float dtype or NaN/inf values
    (:func:`pcmeta.files.load_arrays`).
    """
    p = resolve_weights(path, "arm")
    d = load_arrays(p, SHAPES, WHAT)
    return {k: torch.as_tensor(np.asarray(d[k]), dtype=dtype, device=device) for k in PARAM_KEYS}


def check_params(params: Mapping, path: str | Path, what: str = WHAT, label: str = "") -> None:
    """:class:`pcmeta.files.WeightsFileError` naming ``path`` unless ``params`` (arrays or tensors by key) are a
    weight dict: exactly :data:`PARAM_KEYS`, the shapes of :data:`SHAPES`, real floating point, finite."""
    check_arrays(params if isinstance(params, dict) else dict(params), SHAPES, path=path, what=what, label=label)


def save_weights_npz(params: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a weight dict in the released .npz layout (float32, (pre, post)), atomically."""
    save_npz(path, {k: params[k].detach().cpu().float().numpy() for k in PARAM_KEYS})


def init_params(seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random initial weights with the authors' scales: inputs and recurrent N(0, 1/n_pre), the LSG readout
    Glorot-uniform, the learning network's readout N(0, 1/n) * (1 - kappa)."""
    g = torch.Generator().manual_seed(int(seed))
    n = lambda a, b: torch.randn(a, b, generator=g, dtype=torch.float64) / math.sqrt(a)  # noqa: E731
    lim = math.sqrt(6.0 / (LSG.n_rec + LSG.n_out))
    p = {
        "W_in_lsg": n(LSG.n_in, LSG.n_rec), "W_rec_lsg": n(LSG.n_rec, LSG.n_rec),
        "W_out_lsg": (torch.rand(LSG.n_rec, LSG.n_out, generator=g, dtype=torch.float64) * 2 - 1) * lim,
        "W_in_trainee": n(LEARNER.n_in, LEARNER.n_rec), "W_rec_trainee": n(LEARNER.n_rec, LEARNER.n_rec),
        "W_out_trainee": n(LEARNER.n_rec, LEARNER.n_out) * (1.0 - LEARNER.kappa),
    }
    return {k: v.to(dtype) for k, v in p.items()}
