"""The functional CNNs of MAML: parameters, convolution blocks, batch-norm, features and readout.

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
``SoftwareSubstrate(bits=4)``).

Batch-norm uses each task's own statistics (mean and biased variance over the images and pixels of
one pass; the support set and the query set are separate passes). On batches of tasks it runs as the
native kernel per task (:func:`batch_norm_tasks`); under :func:`torch.func.vmap` and in the reference
loop it is written out (:func:`batch_norm`). On CPU, batches of tasks are processed in chunks of about
100 images (:data:`CHUNK_IMAGES`), which runs the convolutions ~1.5x faster than one 1,600-image batch.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .config import CONV_KEYS, MAMLConfig

Transform = Callable[[torch.Tensor], torch.Tensor]


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



def kernel_from_matrix(W: torch.Tensor) -> torch.Tensor:
    """(9 C_in, C_out) im2col matrix -> (C_out, C_in, 3, 3) kernel (works with leading batch dims)."""
    c_out = W.shape[-1]
    c_in = W.shape[-2] // 9
    return W.transpose(-1, -2).reshape(*W.shape[:-2], c_out, c_in, 3, 3)


def matrix_from_kernel(K: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel -> (9 C_in, C_out) im2col matrix (works with leading batch dims)."""
    return K.reshape(*K.shape[:-3], -1).transpose(-1, -2).contiguous()


def apply_transform(transform: Transform | None, W: torch.Tensor) -> torch.Tensor:
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


def pool(h: torch.Tensor, cfg: MAMLConfig) -> torch.Tensor:
    """Global pooling over the last two (spatial) axes: max for the paper CNN, mean for the classic one."""
    return h.amax(dim=(-2, -1)) if cfg.arch == "paper" else h.mean(dim=(-2, -1))


def features(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Pooled features (*T, n, C) of images x (*T, n, 1, 28, 28); conv weights shared by all tasks."""
    if x.dim() == 5 and not torch._C._functorch.is_batchedtensor(x):
        return _features_batched(params, x, cfg, transform)
    h = x
    for i, k in enumerate(CONV_KEYS, start=1):
        h = conv_block(h, apply_transform(transform, params[k]), cfg, i, params)
    return pool(h, cfg)


def batch_norm_tasks(z: torch.Tensor, T: int, eps: float) -> torch.Tensor:
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


def _features_batched(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None):
    """:func:`features` for x (T, n, 1, 28, 28) with shared weights: channels-last convolutions, in
    chunks of whole tasks (about :data:`CHUNK_IMAGES` images each)."""
    T, n = x.shape[:2]
    kernels = [kernel_from_matrix(apply_transform(transform, params[k])) for k in CONV_KEYS]
    per = max(1, CHUNK_IMAGES // n) if x.device.type == "cpu" else T
    out = []
    for xc in x.split(per):
        Tc = xc.shape[0]
        h = xc.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
        for i, kern in enumerate(kernels, start=1):
            z = F.conv2d(h, kern, stride=2, padding=1)
            if cfg.arch == "paper":
                h = batch_norm_tasks(torch.relu(z), Tc, cfg.bn_eps)
            else:
                z = batch_norm_tasks(z, Tc, cfg.bn_eps)
                h = torch.relu(z * params[f"bn{i}_scale"][:, None, None] + params[f"bn{i}_shift"][:, None, None])
        out.append(pool(h, cfg).reshape(Tc, n, -1))
    return out[0] if len(out) == 1 else torch.cat(out)


def readout(params: dict, f: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Logits (*T, n, N) from features (*T, n, C); ``params["readout"]`` (C, N) or (*T, C, N)."""
    y = f @ apply_transform(transform if cfg.quantize == "all" else None, params["readout"])
    if cfg.arch == "classic":
        b = params["readout_bias"]
        y = y + (b.unsqueeze(-2) if b.dim() > 1 else b)
    return y


def forward(params: dict, x: torch.Tensor, cfg: MAMLConfig, transform: Transform | None = None) -> torch.Tensor:
    """Logits (*T, n, N) of images x (*T, n, 1, 28, 28)."""
    return readout(params, features(params, x, cfg, transform), cfg, transform)
