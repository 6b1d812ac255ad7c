"""Drop-in ``torch.nn`` layers whose weights live on a substrate (a simulated PCM chip, or software).

:class:`PCMLinear`, :class:`PCMConv1d` and :class:`PCMConv2d` replace ``nn.Linear``, ``nn.Conv1d`` and
``nn.Conv2d`` (usually through :func:`pcmeta.hardware.convert`). Each holds

- ``weight`` and ``bias``: ``nn.Parameter`` s with the shapes and names of the torch layer, so ``state_dict``
  round-trips with the float model. ``weight`` holds the weights the chip is meant to hold (as placed, plus
  the updates written since; see :meth:`PCMLayer.write_updates`). Loading a ``state_dict`` re-programs the
  devices at the substrate's current time.
- ``array``: the weight matrix on the substrate, as a ``(in_features, out_features)`` matrix (convolutions:
  ``in_channels * prod(kernel_size)`` rows, im2col), split over 256 x 256 tiles by the substrate.

Forward = the substrate's MVM (on PCM: per-sample input scaling, DAC, drifted noisy conductances at the
substrate's current time, read noise, output noise, ADC per tile, digital partial sums, drift compensation),
then the bias, added digitally in the layer's dtype after the ADC (as chips with a digital periphery do; no
bias row on the crossbar). Differentiable straight-through: the backward pass uses the ideal weights
``weight``, so gradients reach ``weight`` (and the input) as if the layer were float.

On-chip updates: after an optimizer step changes ``weight``, the next forward (or :meth:`write_updates`)
writes the change to the devices as programming pulses (``array.update``: rounded to the update grid,
stochastically by default) and sets ``weight`` to what was written. A change made through ``weight.data``
bypasses autograd's version counter and is not seen by forward: call :meth:`write_updates` after one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pcm import PCMArray
from .substrate import Substrate, SynapticArray

__all__ = ["PCMLayer", "PCMLinear", "PCMConv1d", "PCMConv2d"]


class PCMLayer(nn.Module):
    """Common part of the substrate layers: the weight parameter, its array, the update write-through."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _attach(self, substrate: Substrate, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Take ``weight``/``bias`` (copied) and place the weight matrix on ``substrate`` as ``name``."""
        self.substrate = substrate
        self.array_name = name
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        self._place()

    # ------------------------------------------------------------------------------ weights <-> array
    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` as the crossbar matrix (in_features, out_features)."""
        return weight.reshape(weight.shape[0], -1).t()

    def _from_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M.t().reshape(self.weight.shape)

    def _place(self) -> None:
        """Program the current ``weight`` into the substrate (a fresh array at the substrate's current time)."""
        if self.array_name in self.substrate:
            self.substrate.remove(self.array_name)
        W = self.matrix(self.weight.detach()).to(device="cpu", dtype=torch.float64)
        self.array: SynapticArray = self.substrate.place(self.array_name, W.contiguous())
        self._programmed = W.clone()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, torch.device]:
        w = self.weight
        return w._version, w.data_ptr(), w.device

    def write_updates(self) -> bool:
        """Write the change of ``weight`` since the last write to the devices (``array.update``) and set
        ``weight`` to the weights written (the update rounded to the substrate's grid). Returns whether
        anything was written."""
        W = self.matrix(self.weight.detach()).to(device="cpu", dtype=torch.float64)
        dW = W - self._programmed
        if not bool(torch.isfinite(dW).all()):
            raise ValueError(f"'{self.array_name}': weight holds NaN or inf after an update; expected finite values")
        if not bool((dW != 0).any()):
            self._seen = self._stamp()
            return False
        self.array.update(dW)
        written = self.array.read(ideal=True) if isinstance(self.array, PCMArray) else W
        written = written.detach().to(torch.float64).cpu()
        with torch.no_grad():
            self.weight.copy_(self._from_matrix(written).to(self.weight.dtype))
        # in the parameter's dtype: what forward compares with (the array keeps the float64 value)
        self._programmed = self.matrix(self.weight.detach()).to(device="cpu", dtype=torch.float64)
        self._seen = self._stamp()
        return True

    def _sync(self) -> None:
        if self._stamp() != self._seen:
            self.write_updates()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "weight" in state_dict:
            self._place()  # loaded weights are programmed afresh, not written as an update

    # ----------------------------------------------------------------------------------------- MVM
    def _mvm(self, x2: torch.Tensor) -> torch.Tensor:
        """(rows, in_features) -> (rows, out_features) on the substrate, straight-through to ``weight``."""
        self._sync()
        with torch.no_grad():
            y = self.array.matmul(x2.detach())
        if torch.is_grad_enabled() and (x2.requires_grad or self.weight.requires_grad):
            y_ideal = x2 @ self.matrix(self.weight).to(x2.dtype)
            y = y_ideal + (y - y_ideal).detach()
        return y

    def _check_input(self, x: torch.Tensor, dims: tuple[int, ...], what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"'{self.array_name}' expects a torch tensor, got {type(x).__name__}")
        if x.ndim not in dims:
            raise ValueError(f"'{self.array_name}' expects {what}, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, array={self.array_name!r}, substrate={self.substrate.kind}"


class PCMLinear(PCMLayer):
    """``nn.Linear`` on a substrate: ``y = chip(x @ weight.T) + bias``; ``x``: (..., in_features)."""

    def __init__(self, linear: nn.Linear, substrate: Substrate, name: str):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._attach(substrate, name, linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"'{self.array_name}' expects a torch tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"'{self.array_name}' expects input of shape (..., {self.in_features}), "
                             f"got {tuple(x.shape)}")
        y = self._mvm(x.reshape(-1, self.in_features)).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"array={self.array_name!r}, substrate={self.substrate.kind}"


def conv_unsupported(conv: nn.Module) -> str | None:
    """Why ``conv`` (an ``nn.Conv1d``/``nn.Conv2d``) cannot be mapped to a crossbar, or None if it can."""
    if conv.groups != 1:
        return f"groups={conv.groups} (grouped/depthwise convolutions are not mapped; only groups=1)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (only 'zeros')"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r} (only explicit integer padding)"
    return None


class _PCMConv(PCMLayer):
    """Convolution as im2col + crossbar MVM: each output position is one MVM of its receptive field."""

    spatial = 2

    def __init__(self, conv: nn.Module, substrate: Substrate, name: str):
        super().__init__()
        why = conv_unsupported(conv)
        if why:
            raise ValueError(f"'{name}': cannot map {type(conv).__name__} to a crossbar: {why}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        pad1 = (1,) * (2 - self.spatial)
        self.kernel_size = pad1 + tuple(conv.kernel_size)
        self.stride = pad1 + tuple(conv.stride)
        self.padding = (0,) * (2 - self.spatial) + tuple(conv.padding)
        self.dilation = pad1 + tuple(conv.dilation)
        self._attach(substrate, name, conv.weight, conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.spatial
        dims = "L" if n == 1 else "H, W"
        self._check_input(x, (n + 1, n + 2), f"input of shape (N, {self.in_channels}, {dims}) or unbatched")
        unbatched = x.ndim == n + 1
        if unbatched:
            x = x.unsqueeze(0)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"'{self.array_name}' expects {self.in_channels} input channels, got shape "
                             f"{tuple(x.shape)}")
        x4 = x.unsqueeze(2) if n == 1 else x
        out_hw = [(x4.shape[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1)
                  // self.stride[i] + 1 for i in range(2)]
        if min(out_hw) < 1:
            raise ValueError(f"'{self.array_name}': input of shape {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel_size[2 - n:]} (with padding {self.padding[2 - n:]})")
        cols = F.unfold(x4, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, C*k, L)
        y = self._mvm(cols.transpose(1, 2).reshape(-1, cols.shape[1]))               # (N*L, out)
        y = y.reshape(x4.shape[0], -1, self.out_channels).transpose(1, 2)
        y = y.reshape(x4.shape[0], self.out_channels, *out_hw[2 - n:])
        if self.bias is not None:
            y = y + self.bias.to(y.dtype).reshape(1, -1, *([1] * n))
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        k = self.kernel_size[2 - self.spatial:]
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={self.stride[2 - self.spatial:]}, " \
               f"padding={self.padding[2 - self.spatial:]}, array={self.array_name!r}, substrate={self.substrate.kind}"


class PCMConv2d(_PCMConv):
    """``nn.Conv2d`` (groups=1, zero padding) on a substrate; input (N, C, H, W) or (C, H, W)."""

    spatial = 2


class PCMConv1d(_PCMConv):
    """``nn.Conv1d`` (groups=1, zero padding) on a substrate; input (N, C, L) or (C, L)."""

    spatial = 1


def n_devices(shape: tuple[int, int]) -> int:
    """PCM devices of a (rows, columns) matrix: a differential pair per weight."""
    return 2 * math.prod(shape)
