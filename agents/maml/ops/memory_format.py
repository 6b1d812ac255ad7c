"""Memory-format helpers shared by the custom autograd ops (NCHW or channels-last 4-D tensors)."""
from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def like(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t contiguous in x's memory format (channels-last or plain): the native kernels are fast on both."""
    return t.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)


def rows(t: torch.Tensor) -> torch.Tensor:
    """A channels-last (N, C, H, W) tensor as the (N*H*W, C) matrix it is in memory (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
