"""Hardware-aware training for any model: :func:`noise_aware`.

>>> import pcmeta.hardware as hw
>>> hwa = hw.noise_aware(model, hw.PCMConfig(drift_compensation="global"))   # a copy to train
>>> ...train hwa as usual (hwa.train())...
>>> chip = hw.convert(hwa, hw.PCMConfig(drift_compensation="global"))        # then put it on the chip

In training mode, every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` of the copy computes with a fresh chip
realisation of its weights on each forward: :meth:`PCMSubstrate.transform` (the config's weight quantization,
programming noise, drift to a time drawn log-uniformly in ``t_range_s``, one read-noise sample, and the drift
compensation if configured), with a straight-through gradient to the float weights (as IBM aihwkit's
hardware-aware training injects its noise model's weight noise). The converters (DAC/ADC) and output noise are
not injected. In eval mode the layers are the float layers. The noise-aware layers subclass the torch layers
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
    """The weight noise of a chip for training: ``sample(W)`` is ``W`` as the chip would realise it at a random
    time in ``t_range_s`` (seconds after programming, drawn log-uniformly; ``(t, t)`` for a fixed time)."""

    def __init__(self, config: PCMConfig | None = None, t_range_s: tuple[float, float] = (1.0, 365 * 86400.0),
                 seed: int = 0):
        lo, hi = (float(t) for t in t_range_s)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"t_range_s must be (low, high) with 0 < low <= high, finite seconds; got {t_range_s!r}")
        self.substrate = PCMSubstrate((config or PCMConfig()).replace(seed=int(seed)))
        self.t_range_s = (lo, hi)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, W: torch.Tensor) -> torch.Tensor:
        lo, hi = self.t_range_s
        u = float(torch.rand((), generator=self.generator))
        t = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        M = W.reshape(W.shape[0], -1).t()
        return self.substrate.transform(M, self.generator, t_since_prog_s=t).t().reshape(W.shape)


class _NoiseAware:
    """Mixin: ``noisy_weight()`` in training mode, ``weight`` in eval mode."""

    chip_noise: ChipNoise

    def noisy_weight(self) -> torch.Tensor:
        return self.chip_noise.sample(self.weight) if self.training else self.weight


class NoiseAwareLinear(_NoiseAware, nn.Linear):
    """``nn.Linear`` with the chip's weight noise in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.noisy_weight(), self.bias)


class NoiseAwareConv2d(_NoiseAware, nn.Conv2d):
    """``nn.Conv2d`` with the chip's weight noise in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.noisy_weight(), self.bias)


class NoiseAwareConv1d(_NoiseAware, nn.Conv1d):
    """``nn.Conv1d`` with the chip's weight noise in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.noisy_weight(), self.bias)


_KINDS = ((nn.Linear, NoiseAwareLinear), (nn.Conv2d, NoiseAwareConv2d), (nn.Conv1d, NoiseAwareConv1d))


def _noise_aware_copy(module: nn.Module, kind: type, noise: ChipNoise) -> nn.Module:
    new = copy.copy(module)  # same parameters and buffers (the caller's copy), the noise-aware forward
    new.__class__ = kind
    new.chip_noise = noise
    return new


def noise_aware(model: nn.Module, config: PCMConfig | None = None, *,
                t_range_s: tuple[float, float] = (1.0, 365 * 86400.0), seed: int = 0) -> nn.Module:
    """A copy of ``model`` for hardware-aware training on a chip of ``config`` (see the module docstring).

    Args:
        model: any ``nn.Module`` (unchanged).
        config: the chip the model will be converted to (default ``PCMConfig()``).
        t_range_s: times after programming (s) the drift is drawn from, log-uniformly (default 1 s .. 1 year).
        seed: seed of the noise draws.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"noise_aware() expects a torch.nn.Module, got {type(model).__name__}")
    noise = ChipNoise(config, t_range_s, seed)
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
