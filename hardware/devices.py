"""Statistical PCM device models: programming noise, conductance drift and 1/f read noise.

Three parameter sets are offered (numbers in SPEC.md section 3):

- :class:`PCMLikeDevice` -- the generic PCM statistics of Nandakumar et al. (2019) and Joshi et al.
  (Nat. Commun. 2020), as used by IBM aihwkit's ``PCMLikeNoiseModel``: g_max 25 uS, t0 = 20 s,
  t_read = 250 ns.
- :class:`HermesDevice` -- the statistics fitted on the devices of the IBM HERMES chip (Le Gallo et al.,
  Nat. Electron. 2023), 2 devices per weight programmed jointly, as aihwkit's ``HermesNoiseModel``:
  g_max 20.7 uS, t0 = 300 s, t_read = 512 ns.
- :class:`AuthorsArmDevice` -- the statistics of the authors' arm-experiment code (Ortner et al.): the
  :class:`PCMLikeDevice` polynomials evaluated on ``|w| = G / g_max``, with the read noise's Q_s evaluated on
  the conductance in uS and the drift and 1/f noise evaluated at a time *ratio* t / t0.

The device classes take the *normalised* conductance ``g = G / g_max`` (dimensionless, >= 0) as a torch tensor
and return torch tensors. Programming-noise standard deviations are in uS *at the model's reference
g_max* (:attr:`g_ref_uS`); the crossbar rescales them when a different g_max is configured.

The module functions combine them into the physics every user shares (crossbar MVM, ``read``, noise-aware
``transform`` and the authors' training-time model): :func:`draw_programming`, :func:`draw_drift_exponent`,
:func:`conductance_at` / :func:`drift_factor` / :func:`ratio_drift_factor`, :func:`read_noise_std`,
:func:`sample_read_noise`, :func:`read_noise_time_factor` / :func:`ratio_read_noise_time_factor`.
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


_PCM_LIKE = PCMLikeDevice()


@dataclass(frozen=True)
class AuthorsArmDevice:
    """The device statistics of the authors' arm PCM model (Ortner et al., arm experiment code).

    ``w`` is the weight in units of g_max (``|w| = G / g_max``, one device of the differential pair carries it):

    - programming noise: :meth:`PCMLikeDevice.prog_noise_std_uS` of ``|w|`` (uS);
    - drift exponent: ``nu ~ |N(mu(|w|), sigma(|w|))|`` with :class:`PCMLikeDevice`'s ``mu``, ``sigma``
      (at ``w = 0``: their upper clip bounds 0.1 and 0.045), drift ``(t / t0)^-nu`` at a fixed time ratio
      (:func:`ratio_drift_factor`);
    - read noise: ``sigma = g Q_s(g) f(t / t0)`` uS with ``g`` the conductance in uS and :class:`PCMLikeDevice`'s
      ``Q_s`` evaluated on it in uS (as the authors did; the generic model evaluates Q_s on G / g_max), ``f`` =
      :func:`ratio_read_noise_time_factor`.
    """

    name: str = "authors-arm"
    g_max_uS: float = 25.0
    t_read_s: float = 250e-9

    def prog_noise_std_uS(self, w_abs: torch.Tensor) -> torch.Tensor:
        """Programming-noise std (uS) of a device carrying ``|w|`` (units of g_max)."""
        return _PCM_LIKE.prog_noise_std_uS(w_abs)

    def drift_mu(self, w_abs: torch.Tensor) -> torch.Tensor:
        return _PCM_LIKE.drift_mu(w_abs)

    def drift_sigma(self, w_abs: torch.Tensor) -> torch.Tensor:
        return _PCM_LIKE.drift_sigma(w_abs)

    def read_q_s(self, g_uS: torch.Tensor) -> torch.Tensor:
        """Q_s of the 1/f read noise from the conductance in uS (``min(0.0088 / g^0.65, 0.2)``, 0.2 at g = 0)."""
        return _PCM_LIKE.read_q_s(g_uS)

    def read_noise_std_uS(self, g_uS: torch.Tensor, t_ratio: float) -> torch.Tensor:
        """Std (uS) of one read of devices at ``g_uS`` uS, ``t_ratio`` = t / t0 after programming."""
        return g_uS * self.read_q_s(g_uS) * ratio_read_noise_time_factor(t_ratio, self.t_read_s)


DEVICES = {"pcm": PCMLikeDevice(), "hermes": HermesDevice()}
AUTHORS_ARM = AuthorsArmDevice()
Device = PCMLikeDevice | HermesDevice | AuthorsArmDevice


# ------------------------------------------------------------------------------------------ programming
def programming_noise_std(device: PCMLikeDevice | HermesDevice, g_target: torch.Tensor,
                          g_max_uS: float) -> torch.Tensor:
    """Std of the programming noise in normalised conductance (G / g_max) for targets ``g_target`` on a crossbar
    of ``g_max_uS``: the device's uS figure rescaled from its reference g_max to ``g_max_uS``."""
    return device.prog_noise_std_uS(g_target) * (g_max_uS / device.g_ref_uS) / g_max_uS


def draw_drift_exponent(device: Device, g: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Drift exponents ``nu = |mu(g) + sigma(g) n|`` of devices at ``g`` from standard normals ``n``."""
    return (device.drift_mu(g) + device.drift_sigma(g) * normal).abs()


def draw_programming(device: PCMLikeDevice | HermesDevice, g_target: torch.Tensor, generator: torch.Generator,
                     g_max_uS: float, prog_noise_scale: float = 1.0, drift_scale: float = 1.0):
    """Program devices to normalised targets: (conductance right after programming with programming noise,
    clipped at 0; drift exponent times ``drift_scale``), their normals drawn from ``generator`` in that order."""
    sigma = programming_noise_std(device, g_target, g_max_uS)
    noise = torch.randn(g_target.shape, generator=generator, dtype=torch.float64)
    g_p = (g_target + prog_noise_scale * sigma * noise).clamp(min=0.0)
    nu = draw_drift_exponent(device, g_target, torch.randn(g_target.shape, generator=generator,
                                                           dtype=torch.float64))
    return g_p, nu * drift_scale


# ---------------------------------------------------------------------------------------------- drift
def drift_factor(t_since_prog_s: torch.Tensor | float, nu: torch.Tensor, t0_s: float) -> torch.Tensor:
    """``((t_p + t0) / t0)^(-nu)``: the conductance ratio G(t_p)/G_prog after t_p seconds of drift."""
    if not isinstance(t_since_prog_s, torch.Tensor):
        t_since_prog_s = torch.as_tensor(t_since_prog_s, dtype=nu.dtype)
    return torch.exp(-nu * torch.log1p(t_since_prog_s.to(nu.dtype) / t0_s))


def ratio_drift_factor(t_ratio: float, nu: torch.Tensor) -> torch.Tensor:
    """``(t / t0)^(-nu)``: the drift of the authors' model, evaluated at the time ratio ``t_ratio`` = t / t0
    (their code uses 32) instead of :func:`drift_factor`'s ``(t_p + t0) / t0`` with t_p in seconds."""
    return t_ratio ** (-nu)


def conductance_at(g_prog: torch.Tensor, nu: torch.Tensor, t_since_prog_s: torch.Tensor | float,
                   t0_s: float) -> torch.Tensor:
    """Drifted conductance ``G_prog ((t_p + t0) / t0)^(-nu)`` (the unit of ``g_prog``) t_p seconds after
    programming."""
    return g_prog * drift_factor(t_since_prog_s, nu, t0_s)


# ------------------------------------------------------------------------------------------ read noise
def read_noise_time_factor(t_since_prog_s: torch.Tensor | float, t0_s: float, t_read_s: float):
    """``sqrt(ln((t_p + t0 + t_read) / (2 t_read)))``: growth of the accumulated 1/f read noise with time
    (aihwkit's form; t_p = seconds since programming, t0 and t_read in s). Used by :class:`PCMLikeDevice`
    and :class:`HermesDevice` crossbars.

    The authors' arm model uses :func:`ratio_read_noise_time_factor` instead: it takes the time *ratio*
    t / t0 (dimensionless) in place of ``t_p + t0`` (seconds), divides by ``t_read`` rather than ``2 t_read``
    and multiplies by ``sqrt(1/2)`` (two devices per weight).
    """
    if isinstance(t_since_prog_s, torch.Tensor):
        return torch.sqrt(torch.log((t_since_prog_s + t0_s + t_read_s) / (2.0 * t_read_s)))
    return math.sqrt(math.log((t_since_prog_s + t0_s + t_read_s) / (2.0 * t_read_s)))


def ratio_read_noise_time_factor(t_ratio: float, t_read_s: float) -> float:
    """``sqrt(ln((t_ratio + t_read) / t_read)) * sqrt(1/2)``, computed as ``sqrt(ln(...) / 2)``: the 1/f
    read-noise time factor of the authors' arm model (see :func:`read_noise_time_factor` for how it differs
    from pcmeta's). ``t_ratio`` = t / t0 (dimensionless) is added to ``t_read`` (s) as their code does."""
    return math.sqrt(math.log((t_ratio + t_read_s) / t_read_s) * 0.5)


def read_noise_std(device: PCMLikeDevice | HermesDevice, g_now: torch.Tensor, g_prog: torch.Tensor,
                   t_since_prog_s, t0_s: float, t_read_s: float, scale: float = 1.0) -> torch.Tensor:
    """Std of the 1/f read noise (unit of ``g_now``) of devices now at ``g_now``, programmed to the normalised
    ``g_prog`` ``t_since_prog_s`` seconds ago: ``G(t) Q_s(g_prog) sqrt(ln((t_p + t0 + t_read) / (2 t_read)))``
    times ``scale``."""
    return g_now * device.read_q_s(g_prog) * read_noise_time_factor(t_since_prog_s, t0_s, t_read_s) * scale


def sample_read_noise(g: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One noisy read ``max(g + N(0, sigma), 0)`` of devices at ``g`` (float64 normals from ``generator``)."""
    return (g + sigma * torch.randn(g.shape, generator=generator, dtype=torch.float64)).clamp(min=0.0)
