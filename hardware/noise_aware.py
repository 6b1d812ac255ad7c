"""Hardware-aware training for any model: :func:`noise_aware`.

>>> import pcmeta.hardware as hw
>>> hwa = hw.noise_aware(model, hw.PCMConfig(drift_compensation="global"))   # a copy to train
>>> ...train hwa as usual (hwa.train())...
>>> chip = hw.convert(hwa, hw.PCMConfig(drift_compensation="global"))        # then put it on the chip

In training mode, every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` of the copy computes with a fresh chip
realisation of its weights on each forward: :meth:`PCMSubstrate.transform` (the config's weight quantization,
programming noise, drift to the model's age, one read-noise sample, and the drift compensation if configured),
with a straight-through gradient to the float weights (as IBM aihwkit's hardware-aware training injects its
noise model's weight noise), plus the chip's additive output noise (``out_noise`` per tile, scaled as the
chip scales it: by the abs-max of each input vector and the weights' w_max). The age is drawn log-uniformly
in ``t_range_s`` once per forward pass and shared by all layers. The converters' quantization (DAC/ADC) is
not injected. ``noise_scale`` trains with more (or less) noise than the chip has. In eval mode the layers are
the float layers. The noise-aware layers subclass the torch layers
(same parameters, same ``state_dict``), so the trained copy converts as is.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import PCMConfig
from .pcm import PCMSubstrate

__all__ = ["noise_aware", "ChipNoise", "NoiseAwareLinear", "NoiseAwareConv1d", "NoiseAwareConv2d"]


class ChipNoise:
    """The noise of a chip for training, shared by the layers of one model.

    ``sample(W, layer)``: ``W`` as the chip would realise it at the model's current age, drawn log-uniformly in
    ``t_range_s`` (seconds after programming) once per forward pass: a layer asking again starts a new pass
    and a new age, so the layers of one pass share one age, as on a chip. ``output_noise_std(...)``: the std
    of the chip's additive output noise in weight units. ``noise_scale`` multiplies programming, read and
    output noise (a margin: training with more noise than the chip has)."""

    def __init__(self, config: PCMConfig | None = None, t_range_s: tuple[float, float] = (1.0, 365 * 86400.0),
                 seed: int = 0, noise_scale: float = 1.0):
        lo, hi = (float(t) for t in t_range_s)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"t_range_s must be (low, high) with 0 < low <= high, finite seconds; got {t_range_s!r}")
        if not (isinstance(noise_scale, (int, float)) and math.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
        cfg = (config or PCMConfig()).replace(seed=int(seed))
        self.config = cfg.replace(prog_noise_scale=cfg.prog_noise_scale * noise_scale,
                                  read_noise_scale=cfg.read_noise_scale * noise_scale,
                                  out_noise=cfg.out_noise * noise_scale)
        self.substrate = PCMSubstrate(self.config)
        self.t_range_s = (lo, hi)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.age_s = lo
        self._seen: set[int] = set()

    def _age(self, layer: int) -> float:
        if layer in self._seen or not self._seen:  # a new forward pass
            lo, hi = self.t_range_s
            u = float(torch.rand((), generator=self.generator))
            self.age_s = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            self._seen = set()
        self._seen.add(layer)
        return self.age_s

    def sample(self, W: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """A chip realisation of ``W`` ((out, ...) torch layout) at the pass's age; straight-through."""
        t = self._age(layer)
        M = W.reshape(W.shape[0], -1).t()
        return self.substrate.transform(M, self.generator, t_since_prog_s=t).t().reshape(W.shape)

    def output_noise_std(self, W: torch.Tensor, x_absmax: torch.Tensor) -> torch.Tensor:
        """Std (weight units) of the output noise of one MVM whose input vector has abs-max ``x_absmax``:
        ``out_noise x w_max x x_absmax`` per tile (inputs are scaled to [-1, 1], conductances to g_max), summed
        over the row tiles of the (in, out) matrix."""
        cfg = self.config
        rows = W[0].numel()
        w_max = float(W.detach().abs().max()) if cfg.w_max is None else cfg.w_max
        tiles = math.ceil(rows / cfg.tile_rows)
        return cfg.out_noise * w_max * math.sqrt(tiles) * x_absmax


class _NoiseAware:
    """Mixin: in training mode, the chip's weights and output noise; in eval mode the float layer."""

    chip_noise: ChipNoise

    def _noisy_forward(self, x: torch.Tensor, op, patch_absmax) -> torch.Tensor:
        if not self.training:
            return op(x, self.weight, self.bias)
        noise = self.chip_noise
        y = op(x, noise.sample(self.weight, id(self)), None)
        if noise.config.out_noise > 0:
            with torch.no_grad():
                std = noise.output_noise_std(self.weight, patch_absmax(x.detach().abs()))
                eps = std * torch.randn(y.shape, generator=noise.generator, dtype=y.dtype).to(y.device)
            y = y + eps
        return y if self.bias is None else y + self.bias.reshape(-1, *([1] * (y.dim() - 2)))


class NoiseAwareLinear(_NoiseAware, nn.Linear):
    """``nn.Linear`` with the chip's noise in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._noisy_forward(x, F.linear, lambda a: a.amax(-1, keepdim=True))


class NoiseAwareConv2d(_NoiseAware, nn.Conv2d):
    """``nn.Conv2d`` with the chip's noise in training mode (input abs-max per receptive field)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._noisy_forward(x, self._conv_forward, self._patch_absmax)

    def _patch_absmax(self, a: torch.Tensor) -> torch.Tensor:
        a = a.amax(-3, keepdim=True)  # over channels
        return F.max_pool2d(a, self.kernel_size, self.stride, self.padding, self.dilation)


class NoiseAwareConv1d(_NoiseAware, nn.Conv1d):
    """``nn.Conv1d`` with the chip's noise in training mode (input abs-max per receptive field)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._noisy_forward(x, self._conv_forward, self._patch_absmax)

    def _patch_absmax(self, a: torch.Tensor) -> torch.Tensor:
        a = a.amax(-2, keepdim=True)
        return F.max_pool1d(a, self.kernel_size, self.stride, self.padding, self.dilation)


_KINDS = ((nn.Linear, NoiseAwareLinear), (nn.Conv2d, NoiseAwareConv2d), (nn.Conv1d, NoiseAwareConv1d))


def _noise_aware_copy(module: nn.Module, kind: type, noise: ChipNoise) -> nn.Module:
    new = copy.copy(module)  # same parameters and buffers (the caller's copy), the noise-aware forward
    new.__class__ = kind
    new.chip_noise = noise
    return new


def noise_aware(model: nn.Module, config: PCMConfig | None = None, *,
                t_range_s: tuple[float, float] = (1.0, 365 * 86400.0), seed: int = 0,
                noise_scale: float = 1.0) -> nn.Module:
    """A copy of ``model`` for hardware-aware training on a chip of ``config`` (see the module docstring).

    Args:
        model: any ``nn.Module`` (unchanged).
        config: the chip the model will be converted to (default ``PCMConfig()``).
        t_range_s: times after programming (s) the drift is drawn from, log-uniformly (default 1 s .. 1 year).
        seed: seed of the noise draws.
        noise_scale: multiplies programming, read and output noise in training (a margin; 1: the chip's).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"noise_aware() expects a torch.nn.Module, got {type(model).__name__}")
    noise = ChipNoise(config, t_range_s, seed, noise_scale)
    out = copy.deepcopy(model)
    root = next((k for base, k in _KINDS if type(out) is base), None)
    if root is not None:  # the model is one layer
        return _noise_aware_copy(out, root, noise)
    for name, module in list(out.named_modules()):
        kind = next((k for base, k in _KINDS if type(module) is base), None)
        if kind is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name)
        if isinstance(parent, nn.MultiheadAttention):
            continue
        setattr(parent, attr, _noise_aware_copy(module, kind, noise))
    return out
