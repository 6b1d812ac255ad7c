"""Weight mapping: weights <-> normalised conductances of differential device pairs, and their programming.

A weight ``W`` is stored as ``w = W / w_max`` in [-1, 1] (dimensionless; ``|w| = G / g_max``): ``w > 0`` on
the G+ device, ``w < 0`` on the G- device (:func:`split_differential`), and read back as
``(G+ - G-) / g_max * w_max``. ``w_max`` is fixed by the configuration or, per array, ``max|W|`` at placement
(:func:`resolve_w_max`). Placement may quantize ``w`` (the paper's stochastic N-bit quantizer); updates are
rounded to a grid in units of ``w_max`` (:func:`round_update`), and only the devices whose target changes are
re-programmed (:func:`reprogram_mask`, :class:`Polarity`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .devices import conductance_at
from .substrate import stochastic_quantize


# ------------------------------------------------------------------------------------ weights <-> w
def resolve_w_max(W: torch.Tensor, w_max: float | None) -> float:
    """The weight mapped to g_max: ``w_max`` if given, else ``max|W|`` (1.0 for an all-zero W)."""
    return float(w_max) if w_max is not None else (float(W.abs().max()) or 1.0)


def normalise_weights(W: torch.Tensor, w_max: float, fixed: bool, name: str) -> torch.Tensor:
    """``W / w_max``; with a ``fixed`` (configured) w_max, weights beyond it are an error (not clipped)."""
    w = W / w_max
    if fixed and float(w.abs().max()) > 1.0 + 1e-12:
        raise ValueError(f"'{name}': weights up to {float(W.abs().max()):.4g} exceed the fixed w_max "
                         f"{w_max:.4g}; set PCMConfig(w_max=None) for per-array scaling or a larger w_max")
    return w


def quantize_weights(w: torch.Tensor, bits: int | None, generator: torch.Generator) -> torch.Tensor:
    """The paper's stochastic ``bits``-bit quantization of normalised weights (``w`` itself for None)."""
    if bits is None:
        return w
    return stochastic_quantize(w, bits, 1.0, generator, straight_through=False)


def split_differential(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (G+, G-) targets of weights ``w`` (any unit; both >= 0): ``(max(w, 0), max(-w, 0))``."""
    return w.clamp(min=0.0), (-w).clamp(min=0.0)


# ------------------------------------------------------------------------------------------ updates
def round_update(d: torch.Tensor, w_max: float, grid: float | None, rounding: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """An update ``d`` (weight units) in units of ``w_max``, rounded to multiples of ``grid``.

    ``rounding``: "stochastic" (``floor(u + U(0, 1))``, unbiased; uniforms of ``d``'s dtype from
    ``generator``) or "nearest" (round half to even). ``grid=None``: exact, no rounding.
    """
    if grid is None:
        return d / w_max
    u = d / (w_max * grid)
    if rounding == "stochastic":
        r = torch.rand(u.shape, generator=generator, dtype=u.dtype)
        k = torch.floor(u + r)
    else:
        k = torch.round(u)  # round half to even
    return k * grid


def reprogram_mask(changed: torch.Tensor, target: torch.Tensor, old_target: torch.Tensor) -> torch.Tensor:
    """The devices to program: of the ``changed`` weights, those whose target moves or is non-zero (a device
    that stays at 0 is left alone)."""
    return changed & ((target != old_target) | (target > 0))


# ------------------------------------------------------------------------------------- device state
@dataclass
class Polarity:
    """State of one polarity (G+ or G-) of an array's devices, all (in, out) float64 tensors."""

    g_target: torch.Tensor   # normalised target conductance
    g_prog: torch.Tensor     # normalised conductance right after programming (with programming noise)
    nu: torch.Tensor         # drift exponent
    t_prog: torch.Tensor     # substrate time of the last programming (s)

    @classmethod
    def erased(cls, like: torch.Tensor) -> "Polarity":
        """Devices never programmed (all zero) of the shape and dtype of ``like``."""
        return cls(*(torch.zeros_like(like) for _ in range(4)))

    def program(self, changed: torch.Tensor, target: torch.Tensor,
                draw: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], time_s: float) -> int:
        """Program the devices of the ``changed`` weights to ``target`` at substrate time ``time_s`` (s);
        ``draw(g_target) -> (g_prog, nu)``. Returns the number of devices programmed."""
        sel = reprogram_mask(changed, target, self.g_target)
        n = int(sel.sum())
        if n == 0:
            return 0
        g_t = target[sel]
        g_p, nu = draw(g_t)
        self.g_target[sel] = g_t
        self.g_prog[sel] = g_p
        self.nu[sel] = nu
        self.t_prog[sel] = time_s
        return n

    def age(self, time_s: float) -> torch.Tensor:
        """Seconds since each device was programmed, at substrate time ``time_s``."""
        return (time_s - self.t_prog).clamp(min=0.0)

    def now(self, time_s: float, t0_s: float) -> torch.Tensor:
        """Drifted normalised conductances at substrate time ``time_s`` (no read noise)."""
        return conductance_at(self.g_prog, self.nu, self.age(time_s), t0_s)
