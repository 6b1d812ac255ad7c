"""The extremes of a trial's membrane potentials that the voltage regularisation reads, reduced while the time
loop runs (:class:`VoltageExtremes`), so that the regularisation needs no (B, T, n) record and no dense gradient.

With d_t = (v_t - A_t) / v_th per task and neuron, :func:`~pcmeta.agents.eprop.losses.voltage_regularization`
penalises the task-averaged maximum of d over the trial and its minimum over the steps where the neuron is not
refractory. Both depend on ONE step per task and neuron, and the penalty is non-zero for few neurons (the silent
and the saturated ones), so its gradient reaches v at a few (task, step, neuron) only. Taking it from a stacked
(B, T, n) record costs the training iteration ~30 % on a CPU (batch 90, the LSG's 800 neurons, 249 steps:
dense gradients of 18 M entries, added step by step into strided views); :meth:`VoltageExtremes.gather` takes
it where it is.
"""
from __future__ import annotations

import torch

__all__ = ["VoltageExtremes"]


class VoltageExtremes:
    """Per task and neuron, the maximum of d_t = (v_t - A_t) / v_th over the steps of a trial and its minimum
    over the non-refractory steps, each with its step (the first one on a tie), updated by :meth:`update` once
    per step (no gradient). It keeps each step's v_t and A_t (tensors that BPTT holds anyway), so that
    :meth:`gather` can build the part of the graph that a loss on the extremes needs.

    Attributes (after the first update; (B, n) tensors):
        max, argmax: the maximum of d and its step.
        min, argmin: the minimum over the non-refractory steps (+inf where there is none) and its step.
    """

    def __init__(self, v_th: float):
        self.v_th = float(v_th)
        self.v: list[torch.Tensor] = []
        self.A: list[torch.Tensor | float] = []
        self.max = self.argmax = self.min = self.argmin = None

    def update(self, v: torch.Tensor, A: torch.Tensor | float, free: torch.Tensor) -> None:
        """Step t = number of earlier updates: v (B, n), A (B, n) tensor or the constant threshold, free (B, n)
        1 where the neuron is not refractory at this step, else 0."""
        t = len(self.v)
        self.v.append(v)
        self.A.append(A)
        with torch.no_grad():
            d = (v.detach() - (A.detach() if torch.is_tensor(A) else A)) / self.v_th
            dn = torch.where(free > 0, d, torch.full_like(d, float("inf")))
            if t == 0:
                self.max, self.min = d, dn
                self.argmax = torch.zeros(d.shape, dtype=torch.long, device=d.device)
                self.argmin = torch.zeros_like(self.argmax)
                return
            up, down = d > self.max, dn < self.min
            self.max = torch.where(up, d, self.max)
            self.min = torch.where(down, dn, self.min)
            self.argmax.masked_fill_(up, t)
            self.argmin.masked_fill_(down, t)

    def gather(self, w_max: torch.Tensor, w_min: torch.Tensor) -> torch.Tensor:
        """sum over tasks b and neurons j of w_max[b, j] d at (b, j)'s maximum + w_min[b, j] d at its minimum,
        as a tensor of the graph through the v_t and A_t of those steps only (w: (B, n), mostly 0; w_min must be
        0 where ``min`` is infinite). 0-d zero tensor where both weights are 0 everywhere."""
        total = torch.zeros((), dtype=w_max.dtype, device=w_max.device)
        for w, steps in ((w_max, self.argmax), (w_min, self.argmin)):
            b, j = torch.nonzero(w, as_tuple=True)
            if b.numel() == 0:
                continue
            ts = steps[b, j]
            for t in torch.unique(ts).tolist():
                at = ts == t
                bt, jt = b[at], j[at]
                A = self.A[t]
                d = (self.v[t][bt, jt] - (A[bt, jt] if torch.is_tensor(A) else A)) / self.v_th
                total = total + (w[bt, jt] * d).sum()
        return total
