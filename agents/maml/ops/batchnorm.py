"""Training-mode batch norm with a hand-written double backward, for second-order MAML.

``F.batch_norm(training=True)`` has fused native kernels for the forward and the backward pass, but its
double backward (needed when MAML differentiates through the inner-loop gradient) is a generic composition of
some thirty elementwise ops over the activations. :func:`batch_norm_train` keeps the native backward and
supplies the double backward in closed form, mostly as two more calls of the native backward kernel.
Channels-last inputs give channels-last outputs and gradients; their batch statistics are computed in two
passes (see :class:`_BatchNorm`). In float32 it is at least as accurate as ``F.batch_norm``'s own second
derivatives (tests/agents/maml/test_maml.py).

Math, per channel with m elements: ``xh = (x - mean) r``, ``r = (var + eps)^-1/2``, ``y = w xh + b``.
Backward for an output gradient g: ``gb = sum g``, ``gw = sum g xh``, ``gx = w r P(g)`` with the projection
``P(v) = v - mean(v) - xh mean(v xh)`` (symmetric; it is also the adjoint of ``x -> xh`` up to the factor r).
The native backward kernel computes ``(s r P(v), sum(v xh), sum(v))`` for any per-channel scale s.
Double backward for incoming (qx, qw, qb) on (gx, gw, gb), with ``c = mean(g xh)``, ``qc = mean(qx xh)`` and
``s = sum(qx P(g)) = sum((qx - mean(qx)) (g - mean(g))) - m c qc``:

- d/dg = w r P(qx) + qw xh + qb
- d/dw = r s
- d/dx = r P(a g + e qx) - (w r^2 s / m) xh, with a = qw - w r qc, e = -w r c

P ignores per-channel constants, so qx and g enter centred: no cancellation when they have large
per-channel means.
(checked against finite differences by ``torch.autograd.gradgradcheck`` and against the native op's own
second derivatives in tests/agents/maml/test_maml.py).
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from .memory_format import is_channels_last, like, rows

_bn = torch.ops.aten.native_batch_norm
_bn_backward = torch.ops.aten.native_batch_norm_backward


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of t (N, C, ...) over every other axis (a channels-last 4-D t is summed as its rows)."""
    if is_channels_last(t):
        return rows(t).sum(0)
    return t.sum(tuple(i for i in range(t.dim()) if i != 1))


def _channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel (C,) vector shaped to broadcast over x (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


class _BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        if is_channels_last(x):
            # torch's channels-last CPU kernel gets float32 statistics much less accurately than its NCHW kernel
            # (measured on post-ReLU activations: normalised outputs off by 1e-4 instead of 1e-6), which second-order
            # MAML amplifies (1e-2 to 0.2 relative meta-gradient errors seen, tests/agents/maml/test_maml.py). Two
            # passes over the (N*H*W, C) memory instead (mean, then the mean of squared deviations); the native
            # kernel normalises with them.
            xr = rows(x)
            mean = xr.mean(0)
            var = (xr - mean).square_().mean(0)
            invstd = (var + eps).rsqrt()
            y = _bn(x, weight, bias, mean, var, False, 0.0, eps)[0]
        else:
            y, mean, invstd = _bn(x, weight, bias, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        gx, gw, gb = _BatchNormBackward.apply(g, x, weight, mean, invstd, ctx.eps)
        return gx, gw, gb, None


class _BatchNormBackward(Function):
    @staticmethod
    def forward(ctx, g, x, weight, mean, invstd, eps):
        g = like(x, g)
        gx, gw, gb = _bn_backward(g, x, weight, None, None, mean, invstd, True, eps, [True, True, True])
        ctx.save_for_backward(g, x, weight, mean, invstd, gw, gb)
        ctx.eps = eps
        return gx, gw, gb

    @staticmethod
    def backward(ctx, qx, qw, qb):
        if torch.is_grad_enabled():  # create_graph=True: a third derivative was asked for
            raise RuntimeError("batch_norm_train: the closed-form double backward treats the batch statistics as "
                               "constants and cannot be differentiated again (third derivatives); use "
                               "torch.nn.functional.batch_norm for those")
        g, x, w, mean, r, sum_gxh, sum_g = ctx.saved_tensors
        eps = ctx.eps
        m = x.numel() // x.shape[1]
        qx = like(x, qx)
        C = lambda v: _channel(v, x)  # noqa: E731
        wr = w * r
        # P removes per-channel constants, so qx and g enter centred: no cancellation when either has a large
        # per-channel mean (MAML's incoming gradients can)
        qbar, gbar, c = _channel_sum(qx) / m, sum_g / m, sum_gxh / m
        qx = qx - C(qbar)
        g = g - C(gbar)
        # w r P(qx) and sum(qx xh): one native backward call
        dg, sum_qxh, _ = _bn_backward(qx, x, w, None, None, mean, r, True, eps, [True, True, False])
        qc = sum_qxh / m
        s = _channel_sum(qx * g) - m * c * qc  # sum(qx P(g))
        # d/dg = w r P(qx) + qw (x - mean) r + qb
        rqw = r * qw
        dg = dg.addcmul_(x, C(rqw)).add_(C(qb - mean * rqw))
        # d/dx = r P(a g + e qx) - k (x - mean) r, k = w r^2 s / m
        a, e = qw - wr * qc, -wr * c
        v = torch.addcmul(g * C(a), qx, C(e))
        dx = _bn_backward(v, x, torch.ones_like(w), None, None, mean, r, True, eps, [True, False, False])[0]
        k = wr * r * s / m
        dx = dx.addcmul_(x, C(-k * r)).add_(C(k * r * mean))
        return dg, dx, r * s, None, None, None


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` (batch statistics, biased variance,
    no running statistics) for x (N, C, ...), with a closed-form double backward. Twice differentiable; the
    double backward raises a RuntimeError if asked for a graph (third derivatives). A channels-last 4-D x gives
    a channels-last output."""
    if x.dim() < 2 or x.numel() // x.shape[1] < 2:
        raise ValueError(f"batch_norm_train: expected more than 1 value per channel, got input of shape "
                         f"{tuple(x.shape)} (N, C, ...)")
    return _BatchNorm.apply(x, weight, bias, eps)
