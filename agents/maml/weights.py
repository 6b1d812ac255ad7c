"""Loading and saving MAML weights: the authors' released layout, pcmeta's ``.npz`` layout, the shipped weights.

The shipped weights (``paper_5w5s``, ``paper_5w5s_4bit``, ``classic_5w1s``, each with a ``.md`` saying how it
was made) are package data of :mod:`pcmeta.agents`, in :data:`WEIGHTS_DIR`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import CONV_KEYS, MAMLConfig
from .network import kernel_from_matrix, matrix_from_kernel

#: The weights shipped with pcmeta (``pcmeta/agents/weights``).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def params_from_released(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Paper-CNN parameters from a ``.npz`` in the authors' released layout.

    Keys ``kernel1..kernel4`` (3, 3, C_in, C_out) (TensorFlow layout) and ``kernel5`` (C, N).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with np.load(path, allow_pickle=False) as d:
        missing = [f"kernel{i}" for i in range(1, 6) if f"kernel{i}" not in d]
        if missing:
            raise ValueError(f"{path} lacks {missing}; expected the released layout kernel1..kernel5")
        p = {}
        for i, k in enumerate(CONV_KEYS, start=1):
            kern = torch.as_tensor(d[f"kernel{i}"]).permute(3, 2, 0, 1)  # (out, in, kh, kw)
            if kern.shape[-2:] != (3, 3):
                raise ValueError(f"{path}: kernel{i} has shape {tuple(d[f'kernel{i}'].shape)}, "
                                 "expected (3, 3, in, out)")
            p[k] = matrix_from_kernel(kern).to(dtype)
        p["readout"] = torch.as_tensor(d["kernel5"]).to(dtype).clone()
    return p


def save_released(params: dict[str, torch.Tensor], cfg: MAMLConfig, path: str | os.PathLike) -> None:
    """Write paper-CNN weights in the released layout (plus ``config_json``), atomically."""
    if cfg.arch != "paper":
        raise ValueError("the released layout holds the paper CNN only; use save_weights for 'classic'")
    arrays = {}
    for i, k in enumerate(CONV_KEYS, start=1):
        arrays[f"kernel{i}"] = kernel_from_matrix(params[k].detach().float()).permute(2, 3, 1, 0).numpy()
    arrays["kernel5"] = params["readout"].detach().float().numpy()
    arrays["config_json"] = np.array(json.dumps(cfg.to_dict()))
    atomic_npz(path, arrays)


def save_weights(params: dict[str, torch.Tensor], cfg: MAMLConfig, path: str | os.PathLike) -> None:
    """Write weights as ``.npz``: the released layout for the paper CNN, matrices by name otherwise."""
    if cfg.arch == "paper":
        return save_released(params, cfg, path)
    arrays = {k: v.detach().float().numpy() for k, v in params.items()}
    arrays["config_json"] = np.array(json.dumps(cfg.to_dict()))
    atomic_npz(path, arrays)


def load_weights(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[dict, MAMLConfig | None]:
    """Parameters (and the stored config, if any) from a ``.npz`` written by :func:`save_weights` or
    in the authors' released layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with np.load(path, allow_pickle=False) as d:
        cfg = MAMLConfig.from_dict(json.loads(str(d["config_json"]))) if "config_json" in d else None
        released = "kernel1" in d
        if not released:
            params = {k: torch.as_tensor(d[k]).to(dtype) for k in d.files if k != "config_json"}
    if released:
        params = params_from_released(path, dtype)
        if cfg is None:
            cfg = MAMLConfig(channels=params["readout"].shape[0], n_way=params["readout"].shape[1])
    return params, cfg


def atomic_npz(path: str | os.PathLike, arrays: dict) -> None:
    """``numpy.savez`` to ``path`` atomically (a temporary file in the same folder, then renamed), mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
