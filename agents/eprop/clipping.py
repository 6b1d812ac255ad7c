"""Gradient clipping of arm meta-training relative to the typical gradient norm (the default recipe).

Adam ignores the gradient's overall scale, so a fixed clipping norm only matters through its ratio to the
typical norm, which changes along a run; an outlier matters twice: its step (Adam's momentum carries a 35x outlier
~23 lr along its direction over the next ~20 iterations, a typical gradient ~1 lr), and its square in Adam's
second moment, which decays by 0.1 % per iteration, so a 10^6 outlier slows every weight it touched ~10^3 x for
thousands of iterations. :func:`clip_gradients` scales a gradient down to K x the median norm of the last
:data:`CLIP_WINDOW` iterations; before a new run's first step the norms of :data:`CLIP_CALIBRATION` batches at the
initial weights stand in for that window (the first gradient can be the outlier). A gradient above
:data:`SKIP_GRAD_RELATIVE` x that median is not taken at all (no Adam step): in the runs of docs/arm-training.md
such outliers came from one or a few of the batch's tasks whose BPTT through the LSG exploded (their LSG input
gradient 10^3-10^4 x the others'), so even scaled down the step points where those tasks' explosion does, and
some seeds met one every ~5 iterations. docs/arm-training.md has the runs behind it.
"""
from __future__ import annotations

import math

import torch

__all__ = ["CLIP_GRAD_RELATIVE", "SKIP_GRAD_RELATIVE", "CLIP_WINDOW", "CLIP_CALIBRATION", "clip_gradients",
           "gradient_norm", "restore_window"]

#: Default of ``clip_grad_relative``: 3x the median norm (healthy runs stay within ~3x their median).
CLIP_GRAD_RELATIVE = 3.0
#: Default of ``skip_grad_relative``: no step for a gradient above 10x the median norm (see the module's text).
SKIP_GRAD_RELATIVE = 10.0
#: Iterations whose gradient norms (before clipping) set the limit; it uses them once this many are known.
CLIP_WINDOW = 50
#: Batches whose norms at the initial weights set the limit until :data:`CLIP_CALIBRATION` norms are known.
CLIP_CALIBRATION = 10


def gradient_norm(grads: list[torch.Tensor | None]) -> torch.Tensor:
    """The L2 norm of all the gradients together (a 0-d tensor on their device)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None]))


def median_norm(norms: torch.Tensor, calibration: torch.Tensor | None, dtype) -> torch.Tensor:
    """The reference of the relative limits: the median of the finite entries of ``norms`` once
    :data:`CLIP_CALIBRATION` of them are known, else of ``calibration``'s; inf when that is None or unknown too."""
    inf = torch.full((), math.inf, dtype=dtype, device=norms.device)
    start = inf if calibration is None else torch.nanmedian(calibration).to(dtype)
    start = torch.where(torch.isfinite(start), start, inf)
    return torch.where(torch.isfinite(norms).sum() >= CLIP_CALIBRATION, torch.nanmedian(norms).to(dtype), start)


def clip_gradients(grads: list[torch.Tensor | None], norms: torch.Tensor, it: int, max_norm: float | None,
                   relative: float | None, calibration: torch.Tensor | None = None,
                   skip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``grads`` (in place, all together) down to the L2 norm ``max_norm`` and to ``relative`` x the
    reference norm (:func:`median_norm` of ``norms``, the norms before clipping of earlier iterations, one slot per
    iteration mod its length, or of ``calibration``); to 0 when the norm is above ``skip`` x the reference (the
    caller then takes no step). None switches a limit off. Writes this iteration's norm into
    ``norms[it % len(norms)]``. Runs on the gradients' device without synchronising. Returns the norm before
    clipping and whether the gradient is to be skipped (0-d tensors)."""
    grads = [g for g in grads if g is not None]
    norm = gradient_norm(grads)
    limit = torch.full((), math.inf if max_norm is None else max_norm, dtype=norm.dtype, device=norm.device)
    ref = median_norm(norms, calibration, norm.dtype)
    if relative is not None:
        limit = torch.minimum(limit, relative * ref)
    skipped = (norm > skip * ref) if skip is not None else torch.zeros((), dtype=torch.bool, device=norm.device)
    coef = torch.where(skipped, torch.zeros_like(norm), torch.clamp(limit / (norm + 1e-6), max=1.0))
    for g in grads:
        g.mul_(coef.to(g.dtype))
    norms[it % norms.numel()] = norm.detach().to(norms.dtype)
    return norm, skipped


def restore_window(ck: dict | None, history: list[dict], start: int, dtype, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's window of norms (slot ``it % CLIP_WINDOW``) and calibration norms of a run starting at ``start``:
    from the checkpoint; for a run from before them, the window from its history's last norms; NaN if unknown."""
    window = torch.full((CLIP_WINDOW,), math.nan, dtype=dtype)
    calibration = torch.full((CLIP_CALIBRATION,), math.nan, dtype=dtype)
    if ck is not None and "clip_norms" in ck:
        window = ck["clip_norms"].to(dtype)
        calibration = ck.get("clip_calibration", calibration).to(dtype)
    else:
        for h in history:
            if start - CLIP_WINDOW <= h["iteration"] < start and "grad_norm" in h:
                window[h["iteration"] % CLIP_WINDOW] = float(h["grad_norm"])
    return window.to(dev), calibration.to(dev)
