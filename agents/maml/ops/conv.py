"""2-D convolution with a direct double backward, for second-order MAML with per-task (grouped) weights.

``F.conv2d`` differentiates twice through torch's generic ``_convolution_double_backward``, which, for a
grouped convolution, computes the weight's second-order term one group at a time (slice, make contiguous,
convolve, concatenate): with one group per task, a loop of small convolutions and copies.
:func:`conv2d_grouped` computes the same derivatives with whole grouped native kernels, and keeps the
gradients in the memory format (NCHW or channels-last) of the input.

For ``z = conv(x, W)`` the backward is ``(gx, gW) = (conv_backward_input(gz, W), conv_backward_weight(x, gz))``,
both linear in ``gz``. The double backward, for incoming ``(qx, qW)`` on ``(gx, gW)``, is

- d/dgz = conv(qx, W) + conv(x, qW)
- d/dx  = conv_backward_input(gz, qW)       (the adjoint of x -> conv_backward_weight(x, gz))
- d/dW  = conv_backward_weight(qx, gz)      (the adjoint of W -> conv_backward_input(gz, W))

each one call of ``aten.convolution_backward`` or ``aten.convolution`` over all groups. The double backward is
built from differentiable native ops, so higher derivatives stay available (through torch's generic rules).
Checked against ``F.conv2d``'s first, second and third derivatives and by gradgradcheck in
tests/agents/maml/test_maml.py.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from .memory_format import like

_conv = torch.ops.aten.convolution
_conv_backward = torch.ops.aten.convolution_backward


class _Conv(Function):
    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        ctx.save_for_backward(x, w)
        ctx.geom = (stride, padding, groups)
        return _conv(x, w, None, stride, padding, [1, 1], False, [0, 0], groups)

    @staticmethod
    def backward(ctx, gz):
        x, w = ctx.saved_tensors
        # gradients in the input's memory format; converted here, outside the Function, so that the conversion
        # stays on the graph (higher derivatives)
        gz = like(x, gz)
        gx, gw = _ConvBackward.apply(gz, x, w, ctx.geom, ctx.needs_input_grad[0])
        return gx, gw, None, None, None


class _ConvBackward(Function):
    @staticmethod
    def forward(ctx, gz, x, w, geom, input_grad):
        ctx.set_materialize_grads(False)
        stride, padding, groups = geom
        gx, gw, _ = _conv_backward(gz, x, w, None, stride, padding, [1, 1], False, [0, 0], groups,
                                   [input_grad, True, False])
        ctx.save_for_backward(gz, x, w)
        ctx.geom = geom
        return gx, gw

    @staticmethod
    def backward(ctx, qx, qw):
        gz, x, w = ctx.saved_tensors
        stride, padding, groups = ctx.geom
        args = (stride, padding, [1, 1], False, [0, 0], groups)
        need_gz, need_x, need_w = ctx.needs_input_grad[:3]
        d_gz = d_x = d_w = None
        if need_gz:
            if qw is not None:
                d_gz = _conv(x, qw, None, *args)
            if qx is not None:
                t = _conv(qx, w, None, *args)
                d_gz = t if d_gz is None else d_gz + t
        if need_x and qw is not None:
            d_x = _conv_backward(gz, x, qw, None, *args, [True, False, False])[0]
        if need_w and qx is not None:
            d_w = _conv_backward(gz, qx, w, None, *args, [False, True, False])[1]
        return d_gz, d_x, d_w, None, None


def conv2d_grouped(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0,
                   groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)`` (no bias, no dilation) with a
    double backward made of whole grouped native convolutions (see the module docstring)."""
    return _Conv.apply(x, weight, [stride, stride], [padding, padding], groups)
