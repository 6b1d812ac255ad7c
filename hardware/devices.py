"""Statistical PCM device models: programming noise, conductance drift and 1/f read noise.

Two parameter sets are offered (numbers in SPEC.md section 3):

- :class:`PCMLikeDevice` -- the generic PCM statistics of Nandakumar et al. (2019) and Joshi et al.
  (Nat. Commun. 2020), as used by IBM aihwkit's ``PCMLikeNoiseModel``: g_max 25 uS, t0 = 20 s,
  t_read = 250 ns.
- :class:`HermesDevice` -- the statistics fitted on the devices of the IBM HERMES chip (Le Gallo et al.,
  Nat. Electron. 2023), 2 devices per weight programmed jointly, as aihwkit's ``HermesNoiseModel``:
  g_max 20.7 uS, t0 = 300 s, t_read = 512 ns.

All functions take the *normalised* conductance ``g = G / g_max`` (dimensionless, >= 0) as a torch tensor
and return torch tensors. Programming-noise standard deviations are in uS *at the model's reference
g_max* (:attr:`g_ref_uS`); the crossbar rescales them when a different g_max is configured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_G_FLOOR = 1e-7  # normalised conductance floor for the logarithms (aihwkit clamps the same way)


@dataclass(frozen=True)
class PCMLikeDevice:
    """Generic PCM statistics (aihwkit ``PCMLikeNoiseModel``).

    - programming noise: ``sigma_p = max(-1.1731 g^2 + 1.9650 g + 0.2635, 0)`` uS
    - drift exponent: ``nu ~ |N(mu_nu, sigma_nu)|``, ``mu_nu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1)``,
      ``sigma_nu = clip(-0.0125 ln g - 0.0059, 0.008, 0.045)``
    - read noise: ``Q_s = min(0.0088 / max(g_prog, 1e-3)^0.65, 0.2)``, multiplied by
      ``sqrt(ln((t + t_read) / (2 t_read)))`` with ``t = t_since_programming + t0``.
    """

    name: str = "pcm"
    g_ref_uS: float = 25.0
    t0_s: float = 20.0
    t_read_s: float = 250e-9

    def prog_noise_std_uS(self, g: torch.Tensor) -> torch.Tensor:
        return (-1.1731 * g * g + 1.9650 * g + 0.2635).clamp(min=0.0)

    def drift_mu(self, g: torch.Tensor) -> torch.Tensor:
        return (-0.0155 * torch.log(g.clamp(min=_G_FLOOR)) + 0.0244).clamp(0.049, 0.1)

    def drift_sigma(self, g: torch.Tensor) -> torch.Tensor:
        return (-0.0125 * torch.log(g.clamp(min=_G_FLOOR)) - 0.0059).clamp(0.008, 0.045)

    def read_q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        return (0.0088 / g_prog.clamp(min=1e-3) ** 0.65).clamp(max=0.2)


@dataclass(frozen=True)
class HermesDevice:
    """IBM HERMES chip statistics, 2 devices per weight programmed jointly (aihwkit ``HermesNoiseModel``)."""

    name: str = "hermes"
    g_ref_uS: float = 20.7
    t0_s: float = 300.0
    t_read_s: float = 512e-9

    def prog_noise_std_uS(self, g: torch.Tensor) -> torch.Tensor:
        return (0.16603 + 4.71806 * g - 8.48101 * g**2 + 4.68961 * g**3).clamp(min=0.0)

    def drift_mu(self, g: torch.Tensor) -> torch.Tensor:
        low = (-0.0387 * torch.log(g.clamp(min=_G_FLOOR)) - 0.0182).clamp(0.072, 0.13)
        high = -0.0436 * g**2 - 0.0126 * g + 0.0736
        return torch.where(g < 0.0945, low, high)

    def drift_sigma(self, g: torch.Tensor) -> torch.Tensor:
        low = (-0.0117 * torch.log(g.clamp(min=_G_FLOOR)) - 0.0057).clamp(0.0091, 0.04)
        high = -0.0118 * g**2 + 0.0093 * g + 0.0073
        return torch.where(g < 0.3055, low, high)

    def read_q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        low = (-0.0117 * torch.log(g_prog.clamp(min=_G_FLOOR)) - 0.0069).clamp(0.015, 0.04)
        high = 0.0069 * g_prog**3 - 0.0280 * g_prog**2 + 0.0211 * g_prog + 0.0123
        return torch.where(g_prog < 0.16, low, high)


DEVICES = {"pcm": PCMLikeDevice(), "hermes": HermesDevice()}


def read_noise_time_factor(t_since_prog_s: torch.Tensor | float, t0_s: float, t_read_s: float):
    """``sqrt(ln((t_p + t0 + t_read) / (2 t_read)))``: growth of the accumulated 1/f read noise with time."""
    if isinstance(t_since_prog_s, torch.Tensor):
        return torch.sqrt(torch.log((t_since_prog_s + t0_s + t_read_s) / (2.0 * t_read_s)))
    return math.sqrt(math.log((t_since_prog_s + t0_s + t_read_s) / (2.0 * t_read_s)))


def drift_factor(t_since_prog_s: torch.Tensor | float, nu: torch.Tensor, t0_s: float) -> torch.Tensor:
    """``((t_p + t0) / t0)^(-nu)``: the conductance ratio G(t_p)/G_prog after t_p seconds of drift."""
    if not isinstance(t_since_prog_s, torch.Tensor):
        t_since_prog_s = torch.as_tensor(t_since_prog_s, dtype=nu.dtype)
    return torch.exp(-nu * torch.log1p(t_since_prog_s.to(nu.dtype) / t0_s))
