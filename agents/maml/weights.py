"""Loading and saving MAML weights: the authors' released layout, pcmeta's ``.npz`` layout, the shipped weights.

The shipped weights (``paper_5w5s``, ``paper_5w5s_4bit``, ``classic_5w1s``, each with a ``.md`` saying how it
was made) are package data of :mod:`pcmeta.agents`, in :data:`WEIGHTS_DIR`.

Every file is read through :mod:`pcmeta.files` (:func:`~pcmeta.files.read_npz`, :func:`~pcmeta.files.check_arrays`,
:func:`~pcmeta.files.load_checkpoint`) against the layout the network expects (:func:`expected_arrays`): a bad
file raises :class:`pcmeta.files.WeightsFileError` naming it, what is wrong and what was expected.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pcmeta.agents.shipped import WEIGHTS_DIR  # noqa: F401 (re-exported: the folder of the shipped weights)
from pcmeta.files import TEXT, WeightsFileError, check_arrays, load_checkpoint as _load_checkpoint, read_npz, save_npz

from .config import CONV_KEYS, MAMLConfig
from .network import kernel_from_matrix, matrix_from_kernel

#: What the messages call the files of this module.
WHAT, WHAT_CHECKPOINT = "MAML weights", "MAML checkpoint"
#: The keys of the authors' released layout: TensorFlow kernels (3, 3, C_in, C_out) and the readout (C, N).
RELEASED_KEYS = ("kernel1", "kernel2", "kernel3", "kernel4", "kernel5")


def expected_arrays(layout: str, arch: str = "paper") -> dict[str, tuple]:
    """The arrays a weights file of ``layout`` ("released": kernel1..kernel5; "pcmeta": the network's matrices by
    name, as :func:`save_weights` writes them and checkpoints hold them) must hold, by key, as
    :func:`pcmeta.files.check_arrays` specs, with the sizes named: C channels, N ways (see :func:`config_dims`)."""
    if layout == "released":
        return {"kernel1": (3, 3, 1, "C"), **{f"kernel{i}": (3, 3, "C", "C") for i in (2, 3, 4)}, "kernel5": ("C", "N")}
    if layout != "pcmeta":
        raise ValueError(f"layout must be 'released' or 'pcmeta', got {layout!r}")
    spec = {"conv1": (9, "C"), **{k: ("9*C", "C") for k in CONV_KEYS[1:]}, "readout": ("C", "N")}
    if arch == "classic":
        spec.update({f"bn{i}_{p}": ("C",) for i in range(1, 5) for p in ("scale", "shift")})
        spec["readout_bias"] = ("N",)
    return spec


def config_dims(cfg: MAMLConfig | None) -> dict[str, int]:
    """The named sizes of :func:`expected_arrays` that ``cfg`` fixes (none without a config)."""
    return {} if cfg is None else {"C": int(cfg.channels), "N": int(cfg.n_way)}


def _config_from(d, path, where: str, what: str) -> MAMLConfig:
    """A MAMLConfig from a stored dict; WeightsFileError naming the file if it is not one."""
    try:
        if not isinstance(d, dict):
            raise TypeError(f"a {type(d).__name__}, not a dict")
        return MAMLConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise WeightsFileError(path, f"{where} is not a valid MAML config ({exc})", "MAMLConfig fields", what) from None


def _stored_config(arrays: dict, path: Path) -> MAMLConfig | None:
    if "config_json" not in arrays:
        return None
    check_arrays({"config_json": arrays["config_json"]}, {"config_json": TEXT}, path=path, what=WHAT)
    try:
        d = json.loads(str(arrays["config_json"]))
    except json.JSONDecodeError as exc:
        raise WeightsFileError(path, f"config_json is not valid JSON ({exc})", "a MAMLConfig as JSON", WHAT) from None
    return _config_from(d, path, "config_json", WHAT)


def _released_params(d: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    p = {}
    for i, k in enumerate(CONV_KEYS, start=1):
        kern = torch.as_tensor(d[f"kernel{i}"]).permute(3, 2, 0, 1)  # (out, in, kh, kw)
        p[k] = matrix_from_kernel(kern).to(dtype)
    p["readout"] = torch.as_tensor(d["kernel5"]).to(dtype).clone()
    return p


def _read(path: str | os.PathLike) -> tuple[dict, MAMLConfig | None, str, Path]:
    """(checked arrays, stored config, layout, path) of a MAML weights ``.npz``."""
    path = Path(path)
    arrays = read_npz(path, WHAT)
    cfg = _stored_config(arrays, path)
    if any(k.startswith("kernel") for k in arrays):
        layout = "released"
        if cfg is not None and cfg.arch != "paper":
            raise WeightsFileError(path, f"holds the released layout (kernel1..kernel5) but config_json says arch "
                                         f"{cfg.arch!r}", "the paper CNN in the released layout", WHAT)
    elif any(k in arrays for k in ("conv1", "readout")):
        layout = "pcmeta"
    else:
        raise WeightsFileError(path, f"holds neither MAML layout (its keys: {', '.join(arrays) or 'none'})",
                               "the released layout kernel1..kernel5, or pcmeta's conv1..conv4, readout "
                               "(+ bn*_scale/shift, readout_bias for the classic CNN)", WHAT)
    arch = cfg.arch if cfg is not None else "classic" if any(k.startswith("bn") for k in arrays) else "paper"
    check_arrays(arrays, expected_arrays(layout, arch), path=path, what=WHAT, optional={"config_json": TEXT},
                 dims=config_dims(cfg))
    return arrays, cfg, layout, path


def params_from_released(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Paper-CNN parameters from a ``.npz`` in the authors' released layout.

    Keys ``kernel1..kernel4`` (3, 3, C_in, C_out) (TensorFlow layout) and ``kernel5`` (C, N) (and an optional
    ``config_json``). FileNotFoundError without a file; :class:`~pcmeta.files.WeightsFileError` for anything else
    that does not fit.
    """
    arrays, _, layout, path = _read(path)
    if layout != "released":
        raise WeightsFileError(path, "holds pcmeta's layout (conv1.., readout)", "the released layout kernel1..kernel5",
                               WHAT)
    return _released_params(arrays, dtype)


def save_released(params: dict[str, torch.Tensor], cfg: MAMLConfig, path: str | os.PathLike) -> None:
    """Write paper-CNN weights in the released layout (plus ``config_json``), atomically."""
    if cfg.arch != "paper":
        raise ValueError("the released layout holds the paper CNN only; use save_weights for 'classic'")
    arrays = {}
    for i, k in enumerate(CONV_KEYS, start=1):
        arrays[f"kernel{i}"] = kernel_from_matrix(params[k].detach().float()).permute(2, 3, 1, 0).numpy()
    arrays["kernel5"] = params["readout"].detach().float().numpy()
    arrays["config_json"] = np.array(json.dumps(cfg.to_dict()))
    save_npz(path, arrays)


def save_weights(params: dict[str, torch.Tensor], cfg: MAMLConfig, path: str | os.PathLike) -> None:
    """Write weights as ``.npz``: the released layout for the paper CNN, matrices by name otherwise."""
    if cfg.arch == "paper":
        return save_released(params, cfg, path)
    arrays = {k: v.detach().float().numpy() for k, v in params.items()}
    arrays["config_json"] = np.array(json.dumps(cfg.to_dict()))
    save_npz(path, arrays)


def load_weights(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[dict, MAMLConfig | None]:
    """Parameters (and the stored config, if any) from a ``.npz`` written by :func:`save_weights` or
    in the authors' released layout. FileNotFoundError without a file; :class:`~pcmeta.files.WeightsFileError`
    naming the file when it cannot be read or does not hold a MAML network (keys, shapes, dtypes, NaN/inf, a
    stored config that contradicts the arrays)."""
    arrays, cfg, layout, _ = _read(path)
    if layout == "released":
        params = _released_params(arrays, dtype)
        if cfg is None:
            cfg = MAMLConfig(channels=params["readout"].shape[0], n_way=params["readout"].shape[1])
    else:
        params = {k: torch.as_tensor(v).to(dtype) for k, v in arrays.items() if k != "config_json"}
    return params, cfg


def check_params(params: dict, cfg: MAMLConfig, path: str | os.PathLike, what: str = WHAT) -> None:
    """:class:`~pcmeta.files.WeightsFileError` naming ``path`` unless ``params`` are the network of ``cfg`` (keys,
    shapes, real floating point, finite)."""
    check_arrays(params, expected_arrays("pcmeta", cfg.arch), path=path, what=what, dims=config_dims(cfg),
                 label="params" if what == WHAT_CHECKPOINT else "")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], MAMLConfig]:
    """(parameters, config) of a ``ckpt.pt`` of ``pcmeta omniglot train``, loaded through
    :func:`pcmeta.files.load_checkpoint` (``weights_only``) and checked against its config."""
    ck = _load_checkpoint(path, WHAT_CHECKPOINT, required=("config", "params"))
    cfg = _config_from(ck["config"], path, "config", WHAT_CHECKPOINT)
    check_params(ck["params"], cfg, path, WHAT_CHECKPOINT)
    return ck["params"], cfg
