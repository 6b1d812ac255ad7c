"""MAML for few-shot image classification, with weight matrices on a :mod:`pcmeta.hardware` substrate.

Two functional CNNs over 28 x 28 x 1 images (SPEC §1):

- ``"paper"`` (Ortner et al.): 4 x [conv 3x3 stride 2, symmetric zero padding 1 -> ReLU -> batch-norm
  without learned scale/shift, epsilon 1e-3, the batch's own statistics], global max-pool over the final
  2 x 2, bias-free readout. C = 56 channels. Only the readout is adapted in the inner loop.
- ``"classic"`` (Finn et al. 2017, strided Omniglot variant): 4 x [conv 3x3 stride 2 pad 1 -> batch-norm
  with learned scale and shift (batch statistics) -> ReLU], global mean-pool, readout with bias;
  C = 64; every parameter is adapted in the inner loop.

Weights are held as matrices in the substrate layout (in_features, out_features): a 3 x 3 convolution
from C_in to C_out channels is its im2col matrix of shape (9 C_in, C_out) with rows ordered
(channel, kernel row, kernel column) as :func:`torch.nn.functional.unfold` orders them (3 x 3 x 56 = 504
rows). During meta-training every matrix enters the forward pass as ``substrate.transform(W)``
(identity for exact float, the stochastic 4-bit quantizer with a straight-through gradient for
``SoftwareSubstrate(bits=4)``). For deployment, :class:`DeployedCNN` places the matrices on a
substrate with ``substrate.place`` and runs inference with ``arr.matmul`` on im2col patches; the
readout is adapted there with ``arr.update``.

Batch-norm uses each task's own statistics (mean and biased variance over the images and pixels of
one pass; the support set and the query set are separate passes). On batches of tasks it runs as the
native kernel per task (:func:`_bn_tasks`), or with per-task weights as one :func:`batch_norm_train` over the
tasks' grouped channels; under :func:`torch.func.vmap` and in the
reference loop it is written out (:func:`batch_norm`). Tests check that all of them give the same
meta-gradients (float64, 1e-5). On CPU, batches of tasks are processed in chunks of about 100 images
(:data:`CHUNK_IMAGES`), which runs the convolutions ~1.5x faster than one 1,600-image batch.

Meta-learning: inner-loop SGD on the cross-entropy of the N*K support images (``inner_steps``,
``inner_lr``, adapted parameters ``"head"`` or ``"all"``), second or first order, the meta-batch
vectorised; Adam outer loop on the query cross-entropy after adaptation. For ``adapt="head"`` the
inner loop is closed-form on batched features (the readout gradient of the cross-entropy is
f^T (softmax(f W) - Y) / n), which autograd differentiates exactly (second order); for ``"all"`` the
tasks are stacked along the channel axis with per-task parameter copies, so that a batch of tasks is
one grouped convolution and one native batch-norm (``vectorise="grouped"``, the default; channels-last, with
the direct double backwards of :mod:`pcmeta.agents.conv` and :mod:`pcmeta.agents.batchnorm`), or the
inner loop is :func:`torch.func.grad` under :func:`torch.func.vmap` (``vectorise="vmap"``, with the
written-out batch-norm: native batch-norm under vmap gave meta-gradients 4 % off a loop in torch 2.13).
:func:`meta_loss_loop` is the plain per-task autograd loop (as learn2learn does it) used to check
(float64, 1e-5) and benchmark the vectorised versions.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .batchnorm import batch_norm_train
from .conv import conv2d_grouped

ARCHS = ("paper", "classic")
ADAPT = ("head", "all")
#: The weight matrices that live on a substrate, in forward order.
MATRIX_KEYS = ("conv1", "conv2", "conv3", "conv4", "readout")
CONV_KEYS = MATRIX_KEYS[:4]
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


# ============================================================================ configuration
@dataclass
class MAMLConfig:
    """Network and meta-learning hyper-parameters (defaults: the paper's 5-way 5-shot setting).

    Attributes:
        arch: ``"paper"`` or ``"classic"``.
        channels: convolution channels C (paper 56, classic 64).
        n_way: classes per task (readout width).
        inner_steps: SGD steps of the inner loop during meta-training.
        eval_inner_steps: SGD steps at evaluation (None: same as ``inner_steps``).
        inner_lr: inner-loop learning rate.
        adapt: ``"head"`` (readout only; paper) or ``"all"`` (every parameter; classic MAML).
        first_order: drop second-order terms of the meta-gradient.
        bn_eps: batch-norm epsilon.
        meta_lr: Adam learning rate of the outer loop.
        meta_batch: tasks per meta-iteration.
        k_shot, n_query: support and query images per class during meta-training.
        iterations: meta-iterations.
        split: ``"paper"`` or ``"classic"`` data split.
        bits: None for float, or the weight bits of ``SoftwareSubstrate(bits=...)`` used in the forward
            pass during meta-training (straight-through).
        quantize: which matrices pass through the substrate transform in training: ``"all"`` (conv
            layers and readout) or ``"conv"`` (the readout stays exact, e.g. a digital readout).
        train_substrate: ``"software"`` (``SoftwareSubstrate(bits)``) or ``"pcm"``: noise-aware
            meta-training with ``PCMSubstrate(PCMConfig(weight_bits=bits, w_max=1)).transform`` in the forward
            pass (programming noise, drift to ``train_time_s`` after programming, read noise; fresh draws on
            every forward; straight-through gradient).
        train_time_s: time after programming of the PCM model used by ``train_substrate="pcm"`` (s).
    """

    arch: str = "paper"
    channels: int = 56
    n_way: int = 5
    inner_steps: int = 4
    eval_inner_steps: int | None = None
    inner_lr: float = 0.1
    adapt: str = "head"
    first_order: bool = False
    bn_eps: float = 1e-3
    meta_lr: float = 1e-3
    meta_batch: int = 32
    k_shot: int = 5
    n_query: int = 5
    iterations: int = 30000
    split: str = "paper"
    bits: int | None = None
    quantize: str = "all"
    train_substrate: str = "software"
    train_time_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.adapt not in ADAPT:
            raise ValueError(f"unknown adapt {self.adapt!r}; expected one of {ADAPT}")
        if self.split not in ("paper", "classic"):
            raise ValueError(f"unknown split {self.split!r}; expected 'paper' or 'classic'")
        for name in ("channels", "n_way", "meta_batch", "k_shot", "n_query", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.train_substrate not in ("software", "pcm"):
            raise ValueError(f"train_substrate must be 'software' or 'pcm', got {self.train_substrate!r}")
        if self.quantize not in ("all", "conv"):
            raise ValueError(f"quantize must be 'all' or 'conv', got {self.quantize!r}")
        if self.bits is not None and int(self.bits) < 1:
            raise ValueError(f"bits must be None or >= 1, got {self.bits}")

    @property
    def test_steps(self) -> int:
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MAMLConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: Training presets (``pcmeta omniglot train --preset NAME``).
PRESETS: dict[str, dict] = {
    # Ortner et al.: 4 SGD steps lr 0.1 on the readout, second order, Adam 1e-3, meta-batch 32, 30k its.
    "paper-5w5s": dict(arch="paper", channels=56, n_way=5, k_shot=5, n_query=5, inner_steps=4, inner_lr=0.1,
                       adapt="head", meta_batch=32, iterations=30000, split="paper"),
    "paper-5w1s": dict(arch="paper", channels=56, n_way=5, k_shot=1, n_query=5, inner_steps=4, inner_lr=0.1,
                       adapt="head", meta_batch=32, iterations=30000, split="paper"),
    # Finn et al. 2017: 5-way 1 step lr 0.4 (3 at test), meta-batch 32; 20-way 5 steps lr 0.1, batch 16.
    "classic-5w1s": dict(arch="classic", channels=64, n_way=5, k_shot=1, n_query=1, inner_steps=1,
                         eval_inner_steps=3, inner_lr=0.4, adapt="all", meta_batch=32, iterations=60000,
                         split="classic"),
    "classic-20w1s": dict(arch="classic", channels=64, n_way=20, k_shot=1, n_query=1, inner_steps=5,
                          eval_inner_steps=5, inner_lr=0.1, adapt="all", meta_batch=16, iterations=60000,
                          split="classic"),
}


def preset(name: str, **overrides) -> MAMLConfig:
    """The :class:`MAMLConfig` of a preset, with ``overrides`` (None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    d = dict(PRESETS[name])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return MAMLConfig(**d)


# ============================================================================ parameters
def init_params(cfg: MAMLConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Fresh parameters: Glorot-uniform conv matrices, zero readout (a symmetric start), BN scale 1."""
    g = torch.Generator().manual_seed(seed)
    C = cfg.channels
    p: dict[str, torch.Tensor] = {}
    c_in = 1
    for k in CONV_KEYS:
        fan_in, fan_out = 9 * c_in, 9 * C
        a = math.sqrt(6.0 / (fan_in + fan_out))
        p[k] = (torch.rand(9 * c_in, C, generator=g, dtype=dtype) * 2 - 1) * a
        c_in = C
    p["readout"] = torch.zeros(C, cfg.n_way, dtype=dtype)
    if cfg.arch == "classic":
        for i in range(1, 5):
            p[f"bn{i}_scale"] = torch.ones(C, dtype=dtype)
            p[f"bn{i}_shift"] = torch.zeros(C, dtype=dtype)
        p["readout_bias"] = torch.zeros(cfg.n_way, dtype=dtype)
    return p


def rescale_conv_to_range(params: dict, cfg: MAMLConfig, w_max: float = 0.875) -> dict:
    """Scale each conv matrix of a ``"paper"`` CNN so that its largest |weight| is ``w_max``.

    In the paper CNN every conv layer is followed by ReLU and then batch-norm without affine parameters,
    so a positive scale of a conv layer's weights leaves the network's function unchanged (up to the
    batch-norm epsilon, whose relative weight only shrinks when the scale grows). This lets float-trained
    weights use the whole range of the fixed 4-bit grid (levels k/8 in [-1, 0.875]) before
    quantization-aware fine-tuning. The readout is returned unchanged.
    """
    if cfg.arch != "paper":
        raise ValueError("conv rescaling preserves the function only for the 'paper' CNN (ReLU before "
                         "affine-free batch-norm)")
    out = dict(params)
    for k in CONV_KEYS:
        m = float(params[k].detach().abs().max())
        if m > 0:
            out[k] = params[k] * (w_max / m)
    return out


def head_keys(cfg: MAMLConfig) -> tuple[str, ...]:
    return ("readout",) if cfg.arch == "paper" else ("readout", "readout_bias")


def adapted_keys(cfg: MAMLConfig, params: dict) -> tuple[str, ...]:
    return head_keys(cfg) if cfg.adapt == "head" else tuple(params)


def kernel_from_matrix(W: torch.Tensor) -> torch.Tensor:
    """(9 C_in, C_out) im2col matrix -> (C_out, C_in, 3, 3) kernel (works with leading batch dims)."""
    c_out = W.shape[-1]
    c_in = W.shape[-2] // 9
    return W.transpose(-1, -2).reshape(*W.shape[:-2], c_out, c_in, 3, 3)


def matrix_from_kernel(K: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel -> (9 C_in, C_out) im2col matrix."""
    return K.reshape(K.shape[0], -1).t().contiguous()


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
                raise ValueError(f"{path}: kernel{i} has shape {tuple(d[f'kernel{i}'].shape)}, expected (3, 3, in, out)")
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
    _atomic_npz(path, arrays)


def save_weights(params: dict[str, torch.Tensor], cfg: MAMLConfig, path: str | os.PathLike) -> None:
    """Write weights as ``.npz``: the released layout for the paper CNN, matrices by name otherwise."""
    if cfg.arch == "paper":
        return save_released(params, cfg, path)
    arrays = {k: v.detach().float().numpy() for k, v in params.items()}
    arrays["config_json"] = np.array(json.dumps(cfg.to_dict()))
    _atomic_npz(path, arrays)


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


def _atomic_npz(path, arrays: dict) -> None:
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


# ============================================================================ functional network
Transform = Callable[[torch.Tensor], torch.Tensor]


def _tf(transform: Transform | None, W: torch.Tensor) -> torch.Tensor:
    """Apply a substrate transform to a weight matrix (or a batch of them, as 2-D blocks)."""
    if transform is None:
        return W
    if W.dim() <= 2:
        return transform(W)
    return transform(W.reshape(-1, W.shape[-1])).reshape(W.shape)


def batch_norm(h: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise h (*T, n, C, H, W) per channel with the statistics of its own pass (biased variance)."""
    mu = h.mean(dim=(-4, -2, -1), keepdim=True)
    var = (h - mu).square().mean(dim=(-4, -2, -1), keepdim=True)
    return (h - mu) * torch.rsqrt(var + eps)


def conv_block(h: torch.Tensor, W: torch.Tensor, cfg: MAMLConfig, i: int, params: dict) -> torch.Tensor:
    """One block on h (*T, n, C_in, H, W) with the (already transformed) matrix W (9 C_in, C_out)."""
    lead = h.shape[:-3]
    z = F.conv2d(h.reshape(-1, *h.shape[-3:]), kernel_from_matrix(W), stride=2, padding=1)
    z = z.reshape(*lead, *z.shape[-3:])
    return _block_post(z, cfg, i, params)


def _block_post(z: torch.Tensor, cfg: MAMLConfig, i: int, params: dict) -> torch.Tensor:
    if cfg.arch == "paper":
        return batch_norm(torch.relu(z), cfg.bn_eps)
    z = batch_norm(z, cfg.bn_eps)
    z = z * params[f"bn{i}_scale"][:, None, None] + params[f"bn{i}_shift"][:, None, None]
    return torch.relu(z)


def _pool(h: torch.Tensor, cfg: MAMLConfig) -> torch.Tensor:
    return h.amax(dim=(-2, -1)) if cfg.arch == "paper" else h.mean(dim=(-2, -1))


def features(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Pooled features (*T, n, C) of images x (*T, n, 1, 28, 28); conv weights shared by all tasks."""
    if x.dim() == 5 and not torch._C._functorch.is_batchedtensor(x):
        return _features_batched(params, x, cfg, transform)
    h = x
    for i, k in enumerate(CONV_KEYS, start=1):
        h = conv_block(h, _tf(transform, params[k]), cfg, i, params)
    return _pool(h, cfg)


def _bn_tasks(z: torch.Tensor, T: int, eps: float) -> torch.Tensor:
    """:func:`batch_norm` for z (T*n, C, H, W) holding T tasks' passes, via the fused native kernel.

    Each task's slice is normalised with ``F.batch_norm(training=True)`` (batch statistics, biased
    variance, no running statistics): mathematically identical to :func:`batch_norm` (checked in the
    tests) and several times faster on channels-last CPU tensors than the written-out formula.
    """
    n = z.shape[0] // T
    return torch.cat([F.batch_norm(zt, None, None, training=True, eps=eps) for zt in z.split(n)])


#: Images per chunk of the batched feature extractor: on CPU, convolutions over ~50-100 images at a
#: time run ~1.5-2x faster than over a whole meta-batch (1,600 images), which overflows the caches.
CHUNK_IMAGES = 100
#: Images (support + query) per chunk of tasks in the grouped all-parameter inner loop.
CHUNK_TASK_IMAGES = 80


def _features_batched(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None):
    """:func:`features` for x (T, n, 1, 28, 28) with shared weights: channels-last convolutions, in
    chunks of whole tasks (about :data:`CHUNK_IMAGES` images each)."""
    T, n = x.shape[:2]
    kernels = [kernel_from_matrix(_tf(transform, params[k])) for k in CONV_KEYS]
    per = max(1, CHUNK_IMAGES // n) if x.device.type == "cpu" else T
    out = []
    for xc in x.split(per):
        Tc = xc.shape[0]
        h = xc.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
        for i, kern in enumerate(kernels, start=1):
            z = F.conv2d(h, kern, stride=2, padding=1)
            if cfg.arch == "paper":
                h = _bn_tasks(torch.relu(z), Tc, cfg.bn_eps)
            else:
                z = _bn_tasks(z, Tc, cfg.bn_eps)
                h = torch.relu(z * params[f"bn{i}_scale"][:, None, None] + params[f"bn{i}_shift"][:, None, None])
        out.append(_pool(h, cfg).reshape(Tc, n, -1))
    return out[0] if len(out) == 1 else torch.cat(out)


def readout(params: dict, f: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Logits (*T, n, N) from features (*T, n, C); ``params["readout"]`` (C, N) or (*T, C, N)."""
    y = f @ _tf(transform if cfg.quantize == "all" else None, params["readout"])
    if cfg.arch == "classic":
        b = params["readout_bias"]
        y = y + (b.unsqueeze(-2) if b.dim() > 1 else b)
    return y


def forward(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Logits (*T, n, N) of images x (*T, n, 1, 28, 28)."""
    return readout(params, features(params, x, cfg, transform), cfg, transform)


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == y).to(logits.dtype).mean(-1)


# ============================================================================ inner loops
def adapt_head(params: dict, fs: torch.Tensor, sy: torch.Tensor, cfg: MAMLConfig, steps: int,
               first_order: bool = False, transform: Transform | None = None) -> dict:
    """Closed-form SGD on the readout (and its bias) for a batch of tasks.

    fs: support features (T, nS, C); sy: (T, nS). Returns params with per-task ``readout`` (T, C, N)
    (and ``readout_bias`` (T, N)). The gradient of the mean cross-entropy w.r.t. the (transformed,
    straight-through) readout is fs^T (softmax - onehot) / nS; autograd differentiates through it.
    """
    T, n, C = fs.shape
    N = params["readout"].shape[-1]
    Y = F.one_hot(sy, N).to(fs.dtype)
    W = params["readout"].expand(T, C, N)
    b = params["readout_bias"].expand(T, N) if cfg.arch == "classic" else None
    for _ in range(steps):
        logits = fs @ _tf(transform if cfg.quantize == "all" else None, W)
        if b is not None:
            logits = logits + b.unsqueeze(1)
        G = (torch.softmax(logits, -1) - Y) / n  # dL/dlogits, (T, n, N)
        gW = fs.transpose(1, 2) @ G
        if first_order:
            gW = gW.detach()
        W = W - cfg.inner_lr * gW
        if b is not None:
            gb = G.sum(1)
            b = b - cfg.inner_lr * (gb.detach() if first_order else gb)
    out = dict(params)
    out["readout"] = W
    if b is not None:
        out["readout_bias"] = b
    return out


def _task_query_loss_all(params: dict, sx, sy, qx, qy, cfg: MAMLConfig, steps: int, first_order: bool,
                         transform: Transform | None):
    """One task (no task dim), inner loop on every parameter with torch.func.grad; returns (loss, acc)."""
    keys = adapted_keys(cfg, params)

    def support_loss(ad, fixed):
        p = {**fixed, **ad}
        return _ce(forward(p, sx, cfg, transform), sy)

    ad = {k: params[k] for k in keys}
    fixed = {k: v for k, v in params.items() if k not in keys}
    for _ in range(steps):
        g = torch.func.grad(support_loss)(ad, fixed)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        ad = {k: ad[k] - cfg.inner_lr * g[k] for k in keys}
    logits = forward({**fixed, **ad}, qx, cfg, transform)
    return _ce(logits, qy), _acc(logits, qy)


def meta_loss(params: dict, sx, sy, qx, qy, cfg: MAMLConfig, steps: int | None = None,
              first_order: bool | None = None, transform: Transform | None = None, vectorise: str = "grouped"):
    """Vectorised MAML objective over a batch of tasks.

    sx (T, nS, 1, 28, 28), sy (T, nS), qx (T, nQ, 1, 28, 28), qy (T, nQ). Returns (mean query loss,
    per-task query accuracy (T,)). Differentiable w.r.t. ``params`` (second order unless
    ``first_order``).
    """
    steps = cfg.inner_steps if steps is None else steps
    fo = cfg.first_order if first_order is None else first_order
    if cfg.adapt == "head":
        fs = features(params, sx, cfg, transform)
        fq = features(params, qx, cfg, transform)
        ad = adapt_head(params, fs, sy, cfg, steps, fo, transform)
        logits = readout(ad, fq, cfg, transform)
        return _ce(logits, qy), _acc(logits, qy)
    if vectorise == "vmap":
        losses, accs = torch.func.vmap(
            lambda a, b, c, d: _task_query_loss_all(params, a, b, c, d, cfg, steps, fo, transform),
            randomness="different",
        )(sx, sy, qx, qy)
        return losses.mean(), accs
    T = sx.shape[0]
    n = sx.shape[1] + qx.shape[1]
    per = max(1, CHUNK_TASK_IMAGES // n) if sx.device.type == "cpu" else T
    if per >= T:
        return _meta_loss_grouped(params, sx, sy, qx, qy, cfg, steps, fo, transform)
    losses, accs = [], []
    for c in zip(sx.split(per), sy.split(per), qx.split(per), qy.split(per)):
        lc, ac = _meta_loss_grouped(params, *c, cfg, steps, fo, transform)
        losses.append(lc * c[0].shape[0])
        accs.append(ac)
    return torch.stack(losses).sum() / T, torch.cat(accs)


def _features_grouped(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None) -> torch.Tensor:
    """Features (T, n, C) of x (T, n, 1, 28, 28) with per-task parameters (leading dim T) or shared ones.

    The T tasks are stacked along the channel axis, (n, T*C, H, W), so that per-task weights become
    one grouped convolution (groups=T) and per-task batch statistics are one batch norm over T*C channels
    (its weight/bias carry the classic per-task scale/shift). Activations are channels-last: on CPU, oneDNN's
    backward-data convolution of the 14 x 14 layer runs several times faster on them than on NCHW tensors.
    :func:`conv2d_grouped` and :func:`batch_norm_train` supply direct double backwards for the
    second-order meta-gradient. Conv weights are im2col matrices (shared (9 C_in, C_out) or per task
    (T, 9 C_in, C_out)) or kernels ((C_out, C_in, 3, 3) or (T, C_out, C_in, 3, 3)), best channels-last
    ordered (see :func:`_meta_loss_grouped`).
    """
    T, n = x.shape[:2]
    h = x.transpose(0, 1).reshape(n, T * x.shape[2], *x.shape[-2:]).contiguous(memory_format=torch.channels_last)
    for i, k in enumerate(CONV_KEYS, start=1):
        W = params[k]
        if W.dim() <= 3:  # im2col matrices
            W = kernel_from_matrix(_tf(transform, W))
        kern = W.expand(T, *W.shape[-4:])  # (T, C_out, C_in, 3, 3)
        # -> (T*C_out, C_in, 3, 3) channels-last: a view when kern is stored (T, C_out, 3, 3, C_in)
        kern = kern.permute(0, 1, 3, 4, 2).reshape(-1, 3, 3, kern.shape[2]).permute(0, 3, 1, 2)
        z = conv2d_grouped(h, kern, stride=2, padding=1, groups=T)
        if cfg.arch == "paper":
            h = torch.relu(z)
            ones = h.new_ones(h.shape[1])
            h = batch_norm_train(h, ones, torch.zeros_like(ones), cfg.bn_eps)
        else:
            sc, sh = params[f"bn{i}_scale"], params[f"bn{i}_shift"]
            sc = sc.expand(T, sc.shape[-1]).reshape(-1)
            sh = sh.expand(T, sh.shape[-1]).reshape(-1)
            h = torch.relu(batch_norm_train(z, sc, sh, cfg.bn_eps))
    f = _pool(h, cfg)  # (n, T*C)
    return f.reshape(n, T, -1).transpose(0, 1)


def _meta_loss_grouped(params: dict, sx, sy, qx, qy, cfg: MAMLConfig, steps: int, first_order: bool,
                       transform: Transform | None):
    """Inner loop on every parameter for T tasks at once: per-task parameter copies, grouped convs."""
    T = sx.shape[0]
    keys = adapted_keys(cfg, params)
    if transform is None:
        # adapt the conv weights as channels-last kernels, the layout of the convolutions' own weight gradients:
        # one layout change per meta-batch instead of im2col <-> kernel copies of every task's weights per pass
        params = {k: (kernel_from_matrix(v).contiguous(memory_format=torch.channels_last) if k in CONV_KEYS else v)
                  for k, v in params.items()}
    ad = {k: (v.expand(T, *v.shape) if k in keys else v) for k, v in params.items()}
    for _ in range(steps):
        logits = readout(ad, _features_grouped(ad, sx, cfg, transform), cfg, transform)
        # the sum of the per-task mean losses: its gradient w.r.t. task t's copy is task t's gradient
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), sy.reshape(-1), reduction="sum") / sy.shape[1]
        grads = torch.autograd.grad(loss, [ad[k] for k in keys], create_graph=not first_order)
        # one fused op (and one in its backward) instead of a multiply and a subtraction over every task's weights
        ad = {**ad, **{k: torch.add(ad[k], g, alpha=-cfg.inner_lr) for k, g in zip(keys, grads)}}
    logits = readout(ad, _features_grouped(ad, qx, cfg, transform), cfg, transform)
    return _ce(logits, qy), _acc(logits, qy)


def meta_loss_loop(params: dict, sx, sy, qx, qy, cfg: MAMLConfig, steps: int | None = None,
                   first_order: bool | None = None, transform: Transform | None = None,
                   backward: bool = False, native_bn: bool = False):
    """Reference: a plain per-task loop with ``torch.autograd.grad`` (create_graph for second order).

    With ``backward=True`` each task's loss is back-propagated right away (as learn2learn does),
    accumulating ``.grad`` of the leaf params; the returned loss is then detached. ``native_bn``
    runs each task through the native batch-norm kernel (as ``nn.BatchNorm2d`` in learn2learn's
    models) instead of the written-out formula.
    """
    steps = cfg.inner_steps if steps is None else steps
    fo = cfg.first_order if first_order is None else first_order
    keys = adapted_keys(cfg, params)
    T = sx.shape[0]
    total, accs = 0.0, []
    for t in range(T):
        ad = dict(params)
        s_x, q_x = (sx[t:t + 1], qx[t:t + 1]) if native_bn else (sx[t], qx[t])
        for _ in range(steps):
            loss = _ce(forward(ad, s_x, cfg, transform), sy[t])
            grads = torch.autograd.grad(loss, [ad[k] for k in keys], create_graph=not fo)
            ad.update({k: ad[k] - cfg.inner_lr * g for k, g in zip(keys, grads)})
        logits = forward(ad, q_x, cfg, transform)
        ql = _ce(logits, qy[t]) / T
        if backward:
            ql.backward()
            ql = ql.detach()
        total = total + ql
        accs.append(_acc(logits, qy[t]).detach().reshape(1))
    return total, torch.cat(accs)


# ============================================================================ model
class MAML:
    """The meta-learner: parameters, config and the substrate its weight matrices live on.

    Args:
        cfg: hyper-parameters.
        params: initial parameters (default :func:`init_params`).
        substrate: a :mod:`pcmeta.hardware` substrate whose ``transform`` realises the weight matrices in
            the forward pass (None: exact float, equivalent to ``SoftwareSubstrate()``; with ``cfg.bits``
            set and no substrate, ``SoftwareSubstrate(bits=cfg.bits)`` is created).
        seed: initialisation seed.
    """

    def __init__(self, cfg: MAMLConfig, params: dict | None = None, substrate=None, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        p = params if params is not None else init_params(cfg, seed, dtype)
        self.params = {k: torch.nn.Parameter(v.detach().to(self.device, dtype).clone()) for k, v in p.items()}
        if substrate is None and cfg.train_substrate == "pcm":
            from pcmeta.hardware import PCMConfig, PCMSubstrate

            substrate = PCMSubstrate(PCMConfig(weight_bits=cfg.bits, w_max=1.0, seed=seed))
            substrate.elapse(float(cfg.train_time_s))  # transform() realises the weights at this time
        elif substrate is None and cfg.bits is not None:
            from pcmeta.hardware import SoftwareSubstrate

            substrate = SoftwareSubstrate(bits=int(cfg.bits), seed=seed)
        self.substrate = substrate

    @property
    def transform(self) -> Transform | None:
        return None if self.substrate is None else self.substrate.transform

    @classmethod
    def from_weights(cls, path: str | os.PathLike, cfg: MAMLConfig | None = None, **kw) -> "MAML":
        """Load a ``.npz`` (released layout or :func:`save_weights`); ``cfg`` overrides the stored one."""
        params, stored = load_weights(path)
        c = cfg or stored
        C, N = params["readout"].shape
        if c.channels != C or c.n_way != N:
            raise ValueError(f"{path} holds a C={C}, {N}-way network; the config asks for "
                             f"C={c.channels}, {c.n_way}-way")
        return cls(c, params, **kw)

    def meta_loss(self, sx, sy, qx, qy, steps=None, first_order=None):
        return meta_loss(self.params, sx, sy, qx, qy, self.cfg, steps, first_order, self.transform)

    @torch.no_grad()
    def evaluate(self, sx, sy, qx, qy, steps: int | None = None) -> torch.Tensor:
        """Query accuracy per task (T,) after ``steps`` (default: the config's test steps) inner steps."""
        steps = self.cfg.test_steps if steps is None else steps
        if self.cfg.adapt == "head":
            _, acc = meta_loss(self.params, sx, sy, qx, qy, self.cfg, steps, True, self.transform)
            return acc
        with torch.enable_grad():
            _, acc = meta_loss({k: v.detach().requires_grad_() for k, v in self.params.items()}, sx, sy, qx,
                               qy, self.cfg, steps, True, self.transform)
        return acc.detach()

    def deployable_params(self) -> dict:
        """The (detached) parameters :meth:`deploy` places. A model meta-trained with the fixed-range quantizer
        (``cfg.bits``) is deployed with the weights that quantizer represents: its full-precision shadow
        weights clipped to [-1, 1] (the quantizer saturates there, levels -1 .. 1 - 2/2^bits; the shadow can
        drift past it in training without changing the model). Only the matrices the quantizer acted on
        (``cfg.quantize``) are clipped."""
        params = {k: v.detach() for k, v in self.params.items()}
        if self.cfg.bits is not None:
            keys = CONV_KEYS + (("readout",) if self.cfg.quantize == "all" else ())
            params = {k: (v.clamp(-1.0, 1.0) if k in keys else v) for k, v in params.items()}
        return params

    def deploy(self, substrate, prefix: str = "") -> "DeployedCNN":
        """Place :meth:`deployable_params` on ``substrate`` (conv layers as im2col matrices, the readout),
        named ``prefix + "conv1"`` ... ``prefix + "readout"``."""
        return DeployedCNN(self.cfg, self.deployable_params(), substrate, prefix)


# ============================================================================ deployment
class DeployedCNN:
    """Inference and readout adaptation with the weight matrices placed on a substrate.

    Each conv layer is placed as its im2col matrix (9 C_in, C_out) and computed as
    ``arr.matmul(patches)`` with patches from :func:`torch.nn.functional.unfold` (stride 2, symmetric
    padding 1); ReLU, batch-norm and pooling are digital. The readout (C, N) is placed too and adapted
    with ``arr.update(-lr * grad)``; :meth:`reset_head` re-places it at its meta-learned initial value
    before each new task. Batch-norm statistics come from the current pass (``stats=None``) or from a
    stored pass (``stats`` returned by :meth:`features`, e.g. the support set's, to classify a single
    query image).
    """

    def __init__(self, cfg: MAMLConfig, params: dict, substrate, prefix: str = "") -> None:
        self.cfg, self.substrate, self.prefix = cfg, substrate, prefix
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self.arrays = {k: substrate.place(prefix + k, self.params[k]) for k in CONV_KEYS}
        self.head = None
        self.reset_head()

    def reset_head(self) -> None:
        """(Re)place the readout and its bias at the meta-learned initial values."""
        name = self.prefix + "readout"
        if self.head is not None and name in self.substrate:
            self.substrate.remove(name)
        self.head = self.substrate.place(name, self.params["readout"].clone())
        self.bias = self.params.get("readout_bias", None)
        if self.bias is not None:
            self.bias = self.bias.clone()

    def conv(self, h: torch.Tensor, k: str) -> torch.Tensor:
        """Conv layer ``k`` on h (n, C_in, H, W) through ``arr.matmul`` on im2col patches."""
        n, _, H, W = h.shape
        Ho, Wo = (H + 2 - 3) // 2 + 1, (W + 2 - 3) // 2 + 1
        cols = F.unfold(h, 3, padding=1, stride=2).transpose(1, 2)  # (n, L, 9 C_in)
        y = self.arrays[k].matmul(cols)  # (n, L, C_out)
        return y.transpose(1, 2).reshape(n, -1, Ho, Wo)

    @torch.no_grad()
    def features(self, x: torch.Tensor, stats: list | None = None) -> tuple[torch.Tensor, list]:
        """Pooled features of images x and the per-layer BN statistics used.

        ``x`` is (n, 1, 28, 28): one pass, one set of batch statistics; or (T, n, 1, 28, 28): T tasks
        whose images go through the crossbars together (one ``matmul`` per layer) while each task keeps
        its own batch statistics; the features are then (T, n, C).
        """
        tasks = x.shape[:-4] if x.ndim == 5 else None
        if tasks is not None:
            x = x.reshape(-1, *x.shape[-3:])
        T = 1 if tasks is None else int(np.prod(tasks))
        h, used = x, []
        for i, k in enumerate(CONV_KEYS, start=1):
            z = self.conv(h, k)
            if self.cfg.arch == "paper":
                z = torch.relu(z)
            zt = z.reshape(T, -1, *z.shape[1:])  # (T, n, C, H, W)
            if stats is None:
                mu = zt.mean(dim=(1, 3, 4), keepdim=True)
                var = (zt - mu).square().mean(dim=(1, 3, 4), keepdim=True)
            else:
                mu, var = stats[i - 1]
            used.append((mu, var))
            z = ((zt - mu) * torch.rsqrt(var + self.cfg.bn_eps)).reshape(z.shape)
            if self.cfg.arch == "classic":
                z = torch.relu(z * self.params[f"bn{i}_scale"][:, None, None]
                               + self.params[f"bn{i}_shift"][:, None, None])
            h = z
        f = _pool(h, self.cfg)
        return (f if tasks is None else f.reshape(*tasks, -1, f.shape[-1])), used

    @torch.no_grad()
    def logits(self, f: torch.Tensor) -> torch.Tensor:
        y = self.head.matmul(f)
        return y + self.bias if self.bias is not None else y

    @torch.no_grad()
    def adapt(self, sx: torch.Tensor, sy: torch.Tensor, steps: int | None = None,
              lr: float | None = None) -> list:
        """Reset the readout, then ``steps`` SGD steps on the support set (n, 1, 28, 28), (n,).

        Only the readout (and bias) is adapted, through ``arr.update``; returns the support BN stats.
        """
        steps = self.cfg.test_steps if steps is None else steps
        lr = self.cfg.inner_lr if lr is None else lr
        self.reset_head()
        f, stats = self.features(sx)
        Y = F.one_hot(sy, self.cfg.n_way).to(f.dtype)
        for _ in range(steps):
            G = (torch.softmax(self.logits(f), -1) - Y) / f.shape[0]
            self.head.update(-lr * (f.t() @ G))
            if self.bias is not None:
                self.bias = self.bias - lr * G.sum(0)
        return stats

    @torch.no_grad()
    def predict(self, qx: torch.Tensor, stats: list | None = None) -> torch.Tensor:
        """Logits (n, N) of query images (n, 1, 28, 28); BN from this pass unless ``stats`` is given."""
        f, _ = self.features(qx, stats)
        return self.logits(f)


# ============================================================================ agent for the env
class MAMLAgent:
    """A policy for ``pcmeta/OmniglotFewShot-v0``: adapts once per new support set, then answers queries.

    The query image arrives alone, so its batch-norm statistics are those of the support pass (the
    network's batch statistics for a batch of one image would be degenerate). Weights live on
    ``substrate`` (default: exact float ``SoftwareSubstrate``).
    """

    def __init__(self, model: MAML, substrate=None, steps: int | None = None) -> None:
        if substrate is None:
            from pcmeta.hardware import SoftwareSubstrate

            substrate = SoftwareSubstrate()
        self.model, self.steps = model, steps
        self.deployed = model.deploy(substrate)
        self._key: bytes | None = None
        self._stats = None
        self.adaptations = 0

    def act(self, obs: dict) -> int:
        sx = np.asarray(obs["support_images"], np.float32)
        sy = np.asarray(obs["support_labels"], np.int64)
        key = sx.tobytes() + sy.tobytes()
        if key != self._key:
            self._stats = self.deployed.adapt(torch.from_numpy(sx), torch.from_numpy(sy), self.steps)
            self._key = key
            self.adaptations += 1
        q = torch.from_numpy(np.asarray(obs["query_image"], np.float32))[None]
        return int(self.deployed.predict(q, self._stats).argmax(-1)[0])


# ============================================================================ evaluation
def mean_ci95(acc: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (1.96 standard errors) of per-task accuracies."""
    acc = np.asarray(acc, float)
    if acc.size < 2:
        return float(acc.mean()), float("nan")
    return float(acc.mean()), float(1.96 * acc.std(ddof=1) / math.sqrt(acc.size))


def evaluate(model: MAML, sampler, tasks: int = 1000, steps: int | None = None, batch: int = 50,
             progress: bool = False, deployed: "DeployedCNN | None" = None) -> np.ndarray:
    """Per-task query accuracy over ``tasks`` tasks from ``sampler`` (batched, no grad).

    With ``deployed``, each task runs through the substrate path (:class:`DeployedCNN`) instead.
    """
    accs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tasks, desc="eval", unit="task")
    done = 0
    while done < tasks:
        b = min(batch, tasks - done)
        sx, sy, qx, qy = sampler.sample(b).torch(model.device)
        if deployed is None:
            accs.append(model.evaluate(sx, sy, qx, qy, steps).cpu().numpy())
        else:
            for t in range(b):
                deployed.adapt(sx[t], sy[t], steps)
                accs.append(np.array([(deployed.predict(qx[t]).argmax(-1) == qy[t]).float().mean().item()]))
        done += b
        if bar is not None:
            bar.update(b)
            bar.set_postfix(acc=f"{np.concatenate(accs).mean():.4f}")
    if bar is not None:
        bar.close()
    return np.concatenate(accs)


# ============================================================================ meta-training
@dataclass
class TrainState:
    iteration: int = 0
    history: list = field(default_factory=list)


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Trainer:
    """Meta-training with checkpoints (atomic, resumable with identical results).

    Args:
        cfg: hyper-parameters.
        run_dir: folder for ``ckpt.pt``, ``train.log``, ``weights.npz``.
        data_dir: Omniglot folder (see :func:`pcmeta.tasks.omniglot.resolve_data_dir`).
        seed: seeds initialisation, task sampling and quantization noise.
        checkpoint_every: iterations between checkpoints; eval_every: iterations between validation
            evaluations (``eval_tasks`` tasks from the split's val part, fixed seed).
    """

    def __init__(self, cfg: MAMLConfig, run_dir: str | os.PathLike, data_dir=None, seed: int = 0,
                 device: str = "cpu", checkpoint_every: int = 250, eval_every: int = 500,
                 eval_tasks: int = 200, log_every: int = 50, init: dict | None = None) -> None:
        from pcmeta.tasks.omniglot import TaskSampler, class_pool

        self.cfg, self.seed = cfg, seed
        self.run_dir = Path(run_dir)
        self.checkpoint_every, self.eval_every = checkpoint_every, eval_every
        self.eval_tasks, self.log_every = eval_tasks, log_every
        self.train_pool = class_pool(cfg.split, "train", data_dir)
        self.val_pool = class_pool(cfg.split, "val", data_dir)
        self.sampler = TaskSampler(self.train_pool, cfg.n_way, cfg.k_shot, cfg.n_query,
                                   np.random.default_rng([seed, 1]))
        self.model = MAML(cfg, seed=seed, device=device)
        if init is not None:  # warm start (e.g. quantization-aware fine-tuning of float weights)
            missing = set(self.model.params) - set(init)
            if missing:
                raise ValueError(f"initial weights lack {sorted(missing)}")
            with torch.no_grad():
                for k, v in self.model.params.items():
                    if tuple(init[k].shape) != tuple(v.shape):
                        raise ValueError(f"initial weight {k!r} has shape {tuple(init[k].shape)}, expected "
                                         f"{tuple(v.shape)}")
                    v.copy_(init[k])
        self.opt = torch.optim.Adam(list(self.model.params.values()), lr=cfg.meta_lr)
        self.state = TrainState()
        self._tracked: list[tuple[float, float]] = []

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt.pt"

    def checkpoint(self) -> None:
        sub = self.model.substrate
        obj = {
            "config": self.cfg.to_dict(),
            "seed": self.seed,
            "iteration": self.state.iteration,
            "params": {k: v.detach().clone() for k, v in self.model.params.items()},
            "optimizer": self.opt.state_dict(),
            "sampler_state": self.sampler.get_state(),
            "history_json": json.dumps(self.state.history),
            "tracked_json": json.dumps(self._tracked),
        }
        gen = getattr(sub, "generator", None)
        if isinstance(gen, torch.Generator):
            obj["substrate_rng"] = gen.get_state()
        _atomic_torch_save(obj, self.ckpt_path)
        save_weights(self.model.params, self.cfg, self.run_dir / "weights.npz")

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load the last checkpoint (``run_dir/ckpt.pt`` by default); False if there is none.

        Temporary files of writes cut short by an interruption are removed."""
        for stale in list(self.run_dir.glob(".ckpt.pt.*.tmp")) + list(self.run_dir.glob(".weights.npz.*.tmp")):
            stale.unlink(missing_ok=True)
        p = Path(path) if path else self.ckpt_path
        if not p.is_file():
            return False
        ck = torch.load(p, map_location=self.model.device, weights_only=True)
        stored = MAMLConfig.from_dict(ck["config"])
        if stored.to_dict() != {**self.cfg.to_dict(), "iterations": stored.iterations}:
            raise ValueError(f"checkpoint {p} was made with a different config: {ck['config']}")
        with torch.no_grad():
            for k, v in ck["params"].items():
                self.model.params[k].copy_(v)
        self.opt.load_state_dict(ck["optimizer"])
        self.sampler.set_state(ck["sampler_state"])
        self.state.iteration = int(ck["iteration"])
        self.state.history = json.loads(ck["history_json"])
        self._tracked = [tuple(t) for t in json.loads(ck["tracked_json"])]
        gen = getattr(self.model.substrate, "generator", None)
        if "substrate_rng" in ck and isinstance(gen, torch.Generator):
            gen.set_state(ck["substrate_rng"])
        return True

    def step(self) -> tuple[float, float]:
        """One meta-iteration; returns (query loss, mean query accuracy)."""
        sx, sy, qx, qy = self.sampler.sample(self.cfg.meta_batch).torch(self.model.device)
        self.opt.zero_grad(set_to_none=True)
        loss, acc = self.model.meta_loss(sx, sy, qx, qy)
        loss.backward()
        self.opt.step()
        self.state.iteration += 1
        return float(loss.detach()), float(acc.detach().mean())

    def validate(self, tasks: int | None = None) -> tuple[float, float]:
        from pcmeta.tasks.omniglot import TaskSampler

        s = TaskSampler(self.val_pool, self.cfg.n_way, self.cfg.k_shot, self.cfg.n_query,
                        np.random.default_rng([self.seed, 2]))
        # validation must not consume the training's random numbers (4-bit quantization noise), so
        # that a run interrupted and resumed at any point matches an uninterrupted one
        gen = getattr(self.model.substrate, "generator", None)
        saved = gen.get_state() if isinstance(gen, torch.Generator) else None
        if saved is not None:
            gen.manual_seed(self.seed * 1_000_003 + self.state.iteration)
        try:
            return mean_ci95(evaluate(self.model, s, tasks or self.eval_tasks))
        finally:
            if saved is not None:
                gen.set_state(saved)

    def _log(self, line: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "train.log", "a") as f:
            f.write(line + "\n")

    def train(self, iterations: int | None = None, progress: bool = True) -> dict:
        """Meta-train up to ``iterations`` (default cfg.iterations) total iterations."""
        total = self.cfg.iterations if iterations is None else iterations
        bar = None
        if progress:
            from tqdm.auto import tqdm

            import sys

            bar = tqdm(total=total, initial=self.state.iteration, desc="meta-train", unit="it",
                       dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        t0, it0 = time.time(), self.state.iteration
        if it0 == 0:
            self._log(f"# start {time.strftime('%Y-%m-%d %H:%M:%S')} config {json.dumps(self.cfg.to_dict())} "
                      f"seed {self.seed}")
        else:
            self._log(f"# resume at iteration {it0} {time.strftime('%Y-%m-%d %H:%M:%S')}")
        while self.state.iteration < total:
            loss, acc = self.step()
            self._tracked.append((loss, acc))
            it = self.state.iteration
            if it % self.log_every == 0 or it == total:
                L = np.mean([t[0] for t in self._tracked]); A = np.mean([t[1] for t in self._tracked])
                self._tracked = []
                rec = {"iteration": it, "loss": float(L), "acc": float(A),
                       "s_per_it": (time.time() - t0) / max(it - it0, 1)}
                if self.eval_every and (it % self.eval_every == 0 or it == total):
                    va, ci = self.validate()
                    rec.update(val_acc=va, val_ci95=ci)
                self.state.history.append(rec)
                self._log(json.dumps(rec))
                if bar is not None:
                    post = dict(loss=f"{L:.3f}", acc=f"{A:.3f}")
                    if "val_acc" in rec:
                        post["val"] = f"{rec['val_acc']:.3f}"
                    bar.set_postfix(post)
            if bar is not None:
                bar.update(1)
            if it % self.checkpoint_every == 0 or it == total:
                self.checkpoint()
        if bar is not None:
            bar.close()
        save_weights(self.model.params, self.cfg, self.run_dir / "weights.npz")
        return {"iteration": self.state.iteration, "history": self.state.history}


# ============================================================================ benchmark
def bench_meta_iterations(cfg: MAMLConfig, iterations: int = 5, data_dir=None, seed: int = 0,
                          device: str = "cpu") -> dict:
    """Meta-iterations per second of the vectorised objective and of the per-task autograd loop.

    Both run the same tasks (a fixed list of ``iterations`` meta-batches, sampling included in the
    timing), the same parameters and an Adam step each, as two training runs advanced in turn (vectorised
    iteration i, then loop iteration i), so that both see the same machine load; one untimed warm-up
    iteration each. The loop is learn2learn's way: per task, adapt with ``autograd.grad`` (create_graph),
    native batch-norm, and back-propagate the task's query loss right away.
    Returns {"vectorised_it_s", "loop_it_s", "speedup"} from the median wall time per iteration, the same
    from the median of this process's CPU time per iteration (``*_it_per_cpu_s``, ``speedup_cpu``: robust
    when other work shares the cores) and "loss_diff" (mean loss of the two runs; they compute the same
    objective).
    """
    from pcmeta.tasks.omniglot import TaskSampler, class_pool

    pool = class_pool(cfg.split, "train", data_dir)

    def make():
        sampler = TaskSampler(pool, cfg.n_way, cfg.k_shot, cfg.n_query, np.random.default_rng(seed))
        model = MAML(cfg, seed=seed, device=device)
        return sampler, model, torch.optim.Adam(list(model.params.values()), lr=cfg.meta_lr)

    runs = {"vec": make(), "loop": make()}
    times = {k: {"wall": [], "cpu": [], "loss": []} for k in runs}

    def step(kind: str, timed: bool) -> None:
        sampler, model, opt = runs[kind]
        t0, c0 = time.perf_counter(), time.process_time()
        sx, sy, qx, qy = sampler.sample(cfg.meta_batch).torch(model.device)
        opt.zero_grad(set_to_none=True)
        if kind == "loop":
            loss, _ = meta_loss_loop(model.params, sx, sy, qx, qy, cfg, transform=model.transform,
                                     backward=True, native_bn=True)
        else:
            loss, _ = model.meta_loss(sx, sy, qx, qy)
            loss.backward()
        opt.step()
        if timed:
            times[kind]["wall"].append(time.perf_counter() - t0)
            times[kind]["cpu"].append(time.process_time() - c0)
        times[kind]["loss"].append(float(loss.detach()))

    for i in range(iterations + 1):
        for kind in runs:
            step(kind, timed=i > 0)
    med = {k: {m: float(np.median(v[m])) for m in ("wall", "cpu")} for k, v in times.items()}
    vec, loop = 1 / med["vec"]["wall"], 1 / med["loop"]["wall"]
    vec_cpu, loop_cpu = 1 / med["vec"]["cpu"], 1 / med["loop"]["cpu"]
    return {"vectorised_it_s": vec, "loop_it_s": loop, "speedup": vec / loop,
            "vectorised_it_per_cpu_s": vec_cpu, "loop_it_per_cpu_s": loop_cpu, "speedup_cpu": vec_cpu / loop_cpu,
            "loss_diff": abs(float(np.mean(times["vec"]["loss"])) - float(np.mean(times["loop"]["loss"])))}
