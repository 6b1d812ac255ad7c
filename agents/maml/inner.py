"""The MAML inner loop and meta-objective, vectorised over a batch of tasks.

Inner-loop SGD on the cross-entropy of the N*K support images (``inner_steps``, ``inner_lr``, adapted
parameters ``"head"`` or ``"all"``), second or first order, the meta-batch vectorised; the outer loop
(:mod:`.training`) takes Adam steps on the query cross-entropy after adaptation. For ``adapt="head"`` the
inner loop is closed-form on batched features (the readout gradient of the cross-entropy is
f^T (softmax(f W) - Y) / n), which autograd differentiates exactly (second order); for ``"all"`` the
tasks are stacked along the channel axis with per-task parameter copies, so that a batch of tasks is
one grouped convolution and one native batch-norm (``vectorise="grouped"``, the default; channels-last, with
the direct double backwards of :mod:`.ops.conv` and :mod:`.ops.batchnorm`), or the
inner loop is :func:`torch.func.grad` under :func:`torch.func.vmap` (``vectorise="vmap"``, with the
written-out batch-norm: native batch-norm under vmap gave meta-gradients 4 % off a loop in torch 2.13).
:func:`meta_loss_loop` is the plain per-task autograd loop (as learn2learn does it) used to check
(float64, 1e-5) and benchmark the vectorised versions. Tests check that all of them give the same
meta-gradients (float64, 1e-5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import CONV_KEYS, MAMLConfig, adapted_keys
from .network import (Transform, apply_transform, features, forward, kernel_from_matrix, matrix_from_kernel, pool,
                      readout)
from .ops import batch_norm_train, conv2d_grouped

#: Images (support + query) per chunk of tasks in the grouped all-parameter inner loop.
CHUNK_TASK_IMAGES = 80


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == y).to(logits.dtype).mean(-1)


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
        logits = fs @ apply_transform(transform if cfg.quantize == "all" else None, W)
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
            W = kernel_from_matrix(apply_transform(transform, W))
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
    f = pool(h, cfg)  # (n, T*C)
    return f.reshape(n, T, -1).transpose(0, 1)


def _adapt_grouped(params: dict, sx, sy, cfg: MAMLConfig, steps: int, first_order: bool,
                   transform: Transform | None) -> dict:
    """Inner loop on every parameter for T tasks at once: per-task parameter copies, grouped convs.

    Returns the adapted parameters, each with a leading task dim T; without a transform the conv weights are
    (T, C_out, C_in, 3, 3) channels-last kernels, else (T, 9 C_in, C_out) matrices."""
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
    return ad


def _meta_loss_grouped(params: dict, sx, sy, qx, qy, cfg: MAMLConfig, steps: int, first_order: bool,
                       transform: Transform | None):
    """:func:`_adapt_grouped`, then the query loss and accuracy of the adapted per-task networks."""
    ad = _adapt_grouped(params, sx, sy, cfg, steps, first_order, transform)
    logits = readout(ad, _features_grouped(ad, qx, cfg, transform), cfg, transform)
    return _ce(logits, qy), _acc(logits, qy)


def adapt_params(params: dict, sx: torch.Tensor, sy: torch.Tensor, cfg: MAMLConfig, steps: int | None = None,
                 transform: Transform | None = None) -> dict:
    """The parameters after the inner loop of the config, for a batch of tasks (no graph kept).

    ``steps`` SGD steps (default: the config's test steps) of learning rate ``cfg.inner_lr`` on the support
    cross-entropy of sx (T, nS, 1, 28, 28), sy (T, nS), adapting ``cfg.adapt`` ("head": the readout, by the
    closed-form path of :func:`meta_loss`; "all": every parameter, by its grouped path), exactly as
    :meth:`MAML.evaluate <pcmeta.agents.maml.MAML.evaluate>` adapts. Returns detached parameters in the
    substrate layout: the adapted ones with a leading task dim T (conv weights as (T, 9 C_in, C_out) im2col
    matrices), the others as given.
    """
    steps = cfg.test_steps if steps is None else steps
    with torch.enable_grad():
        p = {k: v.detach().requires_grad_(cfg.adapt == "all") for k, v in params.items()}
        if cfg.adapt == "head":
            ad = adapt_head(p, features(p, sx, cfg, transform), sy, cfg, steps, True, transform)
        else:
            ad = _adapt_grouped(p, sx, sy, cfg, steps, True, transform)
    return {k: (matrix_from_kernel(v) if k in CONV_KEYS and v.dim() == 5 else v).detach() for k, v in ad.items()}


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
