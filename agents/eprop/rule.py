"""The inner learning rule: natural e-prop, one update after the demonstration trial (SPEC section 2)::

    psi_{j,t} = (gamma / v_th) max(0, 1 - |v_{j,t} - A_{j,t}| / v_th),  0 where refractory at t-1
    ebar^in_t  = alpha ebar^in_{t-1} + x_t,   ebar^rec_t = alpha ebar^rec_{t-1} + z_{t-1}
    dW = -eta Ebar^T (Psi * L)                            (eta = 1e-4; L = the LSG readout at step t)

psi is recorded by :func:`~pcmeta.agents.eprop.network.run_snn` (``record_psi``); L is the LSG's readout.
"""
from __future__ import annotations

import torch

from .config import ETA
from .network import leaky_filter, no_diag

__all__ = ["traces", "eprop_update", "round_to_grid"]


def traces(x: torch.Tensor, z: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Presynaptic eligibility traces: ebar^in_t = alpha ebar^in_{t-1} + x_t and
    ebar^rec_t = alpha ebar^rec_{t-1} + z_{t-1} (exactly the inputs that entered v_t).

    x (B, T, n_in) or (T, n_in); z (B, T, n_rec). Returns (Ebar_in, Ebar_rec), (B or 1, T, .).
    """
    if x.dim() == 2:
        x = x.unsqueeze(0)
    z_prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
    return leaky_filter(x, alpha), leaky_filter(z_prev, alpha)


def eprop_update(
    x: torch.Tensor, z: torch.Tensor, psi: torch.Tensor, L: torch.Tensor, alpha: float, eta: float = ETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """The natural e-prop update dW = -eta Ebar^T (Psi * L) for W_in and W_rec (diagonal of dW_rec = 0).

    x: (B, T, n_in) or (T, n_in) inputs; z, psi, L: (B, T, n_rec) spikes, pseudo-derivatives and learning
    signals of the same trial. Returns dW_in (B, n_in, n_rec) and dW_rec (B, n_rec, n_rec).
    """
    e_in, e_rec = traces(x, z, alpha)
    g = psi * L
    dW_in = -eta * torch.einsum("bti,btj->bij", e_in.expand(g.shape[0], -1, -1), g)
    dW_rec = -eta * torch.einsum("bti,btj->bij", e_rec, g)
    return dW_in, no_diag(dW_rec)


def round_to_grid(dW: torch.Tensor, step: float = 1.0 / 16) -> torch.Tensor:
    """dW rounded to multiples of ``step`` (round half to even, as the authors' PCM model)."""
    return torch.round(dW / step) * step
