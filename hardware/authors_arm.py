"""The authors' arm PCM model (Ortner et al., arm experiment code): a substrate and its training-time form.

It reproduces SPEC section 2's row "PCM model as in the authors' code" (reference loss 0.109) and is not
pcmeta's crossbar model (:class:`~pcmeta.hardware.PCMSubstrate`). Its statistics are
:class:`~pcmeta.hardware.devices.AuthorsArmDevice` (the PCMLike polynomials on ``|w| = G / g_max``); its
conventions: g_max = 25 uS, w_max = 1 (a weight is its conductance in units of g_max, one device of the
differential pair carries it), drift and read noise evaluated at one fixed time ratio t / t0 (32 in their
code), no drift compensation, no DAC/ADC:

- programming W (placement): every weight is clipped to [-1, 1], gets uniform noise U(-0.01, 0.01) and drift
  ``clip(W (t/t0)^-nu) - W`` with ``nu = |N(mu(|W|), sigma(|W|))|`` (the drift term is computed from the
  UNCLIPPED W, as the authors did: a weight far above 1 lands near ``1 + clip(W (t/t0)^-nu) - W``); no
  programming noise; the result is clipped to [-1, 1] (:func:`programmed`).
- every MVM reads the weights with fresh 1/f read noise on the device carrying each weight, clipped to
  [0, g_max] (one draw per call, shared by the batch).
- an update dW is rounded to multiples of 1/16 (half to even); the changed weights are re-programmed to
  (current value + dW) with programming noise and a fresh drift, the drift again computed from the unclipped
  target (a target beyond about 2 lands at the opposite bound); unchanged weights stay, up to the float
  round trip w -> g_max w -> w of the noise formula (<= 1 ulp) (:func:`reprogrammed`).

The training-time functions (:func:`training_weights`, :func:`training_reprogram`, :func:`read_var`) are the
same model, batched over tasks and differentiable (clips straight-through), with torch's global RNG as in the
authors' training code; :class:`AuthorsArmSubstrate` draws from its own seeded generator.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .devices import AUTHORS_ARM, AuthorsArmDevice, draw_drift_exponent, ratio_drift_factor
from .energy import chip_totals, tile_counts
from .mapping import reprogram_mask, round_update, split_differential
from .periphery import tile_grid
from .substrate import (ArrayLike, Substrate, SynapticArray, all_finite, as_torch, check_input, check_update,
                        overflow_error)

__all__ = ["AuthorsArmSubstrate", "AuthorsArmArray", "AuthorsArmDevice", "training_weights",
           "training_reprogram", "read_var", "programmed", "reprogrammed", "ste_clip", "G_MAX_US", "UPDATE_GRID"]

G_MAX_US = AUTHORS_ARM.g_max_uS   #: conductance of weight 1 (uS)
UPDATE_GRID = 1.0 / 16.0          #: update resolution (weight units)
UNIFORM_NOISE = 0.01              #: half-width of the uniform placement noise (weight units)
TILE = 256                        #: tile rows and columns assumed for the cost report

Clip = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------- the numerics
def hard_clip(w: torch.Tensor) -> torch.Tensor:
    """Clip to [-1, 1]."""
    return w.clamp(-1.0, 1.0)


def ste_clip(w: torch.Tensor) -> torch.Tensor:
    """Clip to [-1, 1] with the gradient of the identity (straight-through), as the authors' training code."""
    return w + (w.clamp(-1.0, 1.0) - w).detach()


def conductance_uS(w: torch.Tensor) -> torch.Tensor:
    """Conductance (uS) of the device carrying each weight ``w`` (units of g_max, clipped to [-1, 1])."""
    return w.clamp(-1.0, 1.0).abs() * G_MAX_US


def drift(w: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor | None, t_ratio: float) -> torch.Tensor:
    """``(t/t0)^-nu`` per weight, ``nu = |mu(|w|) + sigma(|w|) n|`` from standard normals ``n``; 1 where ``mask``
    is 0. No gradient (the authors stop it at nu; the factor multiplies the weight, which keeps its gradient)."""
    with torch.no_grad():
        nu = draw_drift_exponent(AUTHORS_ARM, w.detach().abs(), normal)
        if mask is not None:
            nu = nu * mask
        return ratio_drift_factor(t_ratio, nu)


def device_noise(w: torch.Tensor, noise_uS: torch.Tensor) -> torch.Tensor:
    """Add ``noise_uS`` (uS) to the device carrying each weight (G+ or G-), clip it to [0, g_max], back to
    weight units."""
    pos, neg = split_differential(w * G_MAX_US)
    pos = torch.clamp(pos + noise_uS * (pos != 0), 0.0, G_MAX_US)
    neg = torch.clamp(neg - noise_uS * (neg != 0), 0.0, G_MAX_US)
    return (pos - neg) / G_MAX_US


def prog_noise(w: torch.Tensor, mask: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Programming noise of the re-programmed weights (``mask``), in weight units, no gradient: the device
    carrying each weight gets ``N(0, sigma_p(|w|))`` uS (normals ``normal``) and is clipped to [0, g_max]."""
    with torch.no_grad():
        w = w.detach()
        return device_noise(w, mask * AUTHORS_ARM.prog_noise_std_uS(w.abs()) * normal) - w


def read_noise_std_uS(w: torch.Tensor, t_ratio: float) -> torch.Tensor:
    """Std (uS) of one read of the device carrying each weight ``w`` (clipped to [-1, 1])."""
    return AUTHORS_ARM.read_noise_std_uS(conductance_uS(w), t_ratio)


def programmed(W: torch.Tensor, uniform: torch.Tensor, normal: torch.Tensor, t_ratio: float,
               clip: Clip = hard_clip) -> torch.Tensor:
    """Weights ``W`` as the authors program them: ``clip(clip(W) + U(-0.01, 0.01) + clip(W f) - W)`` with the
    drift ``f`` of the unclipped W; ``uniform`` U(0, 1) and ``normal`` N(0, 1) draws of W's shape."""
    u = (uniform * 2 - 1) * UNIFORM_NOISE
    return clip(clip(W) + u + (clip(W * drift(W, normal, None, t_ratio)) - W))


def reprogrammed(w1: torch.Tensor, mask: torch.Tensor, prog_normal: torch.Tensor, drift_normal: torch.Tensor,
                 t_ratio: float, clip: Clip = hard_clip) -> torch.Tensor:
    """Weights re-programmed to the targets ``w1`` where ``mask`` is 1 (programming noise and a fresh drift),
    kept elsewhere: ``clip(clip(w1) + noise + clip(w1 f) - w1)``."""
    drifted = clip(w1 * drift(w1, drift_normal, mask, t_ratio)) - w1
    return clip(clip(w1) + prog_noise(w1, mask, prog_normal) + drifted)


def _programmed_devices(changed: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> int:
    """Devices programmed when the ``changed`` weights go from ``old`` to the targets ``new``."""
    return sum(int(reprogram_mask(changed, n, o).sum()) for n, o in zip(split_differential(new),
                                                                       split_differential(old)))


# ---------------------------------------------------------------------------------- training-time model
def training_weights(W: torch.Tensor, batch: int, t_ratio: float = 32.0) -> torch.Tensor:
    """The weights W (in, out) as the authors' training code programs them, once per task (:func:`programmed`,
    nu drawn per weight and task, every clip straight-through; torch's global RNG). Returns (batch, in, out),
    differentiable w.r.t. W (d/dW = (t/t0)^-nu)."""
    Wb = W.expand(batch, *W.shape)
    uniform = torch.rand_like(Wb)
    return programmed(Wb, uniform, torch.randn_like(Wb), t_ratio, ste_clip)


def training_reprogram(w: torch.Tensor, dW: torch.Tensor, t_ratio: float = 32.0) -> torch.Tensor:
    """One update as the authors' training code writes it: dW rounded to the nearest 1/16 (half to even,
    straight-through gradient); the changed weights re-programmed to w + dW_q (:func:`reprogrammed`: programming
    noise without gradient, a fresh drift); unchanged weights kept. w, dW: (batch, in, out)."""
    dq = dW + (round_update(dW.detach(), 1.0, UPDATE_GRID, "nearest") - dW).detach()
    mask = (dq.detach() != 0).to(w.dtype)
    w1 = w + dq
    drift_normal = torch.randn_like(w1)
    return reprogrammed(w1, mask, torch.randn_like(w1), drift_normal, t_ratio, ste_clip)


def read_var(w: torch.Tensor, t_ratio: float = 32.0) -> torch.Tensor:
    """Per-weight variance (weight units^2) of the 1/f read noise of one read of the weights ``w``
    (``sigma = g Q_s(g) f(t/t0) / g_max``, g in uS; :class:`~pcmeta.hardware.devices.AuthorsArmDevice`). No
    gradient. (Each noisy device is clipped at G >= 0 on the chip; noise sampled in output space omits that.)"""
    with torch.no_grad():
        sigma = read_noise_std_uS(w.detach(), t_ratio) / G_MAX_US
        return sigma * sigma


# ------------------------------------------------------------------------------------------- substrate
class AuthorsArmArray(SynapticArray):
    """A weight matrix (in, out) in the authors' arm PCM model; ``w`` holds the programmed weights (float64)."""

    def __init__(self, substrate: "AuthorsArmSubstrate", name: str, W: torch.Tensor, numpy_kind: bool):
        super().__init__(substrate, name, tuple(W.shape), numpy_kind)
        W = W.detach().to(torch.float64)
        uniform = torch.rand(W.shape, generator=substrate.generator, dtype=torch.float64)
        self.w = programmed(W, uniform, substrate.randn(W.shape), substrate.t_ratio)
        self.tile_grid = tile_grid(self.shape, TILE, TILE)
        # every weight is written: the device carrying it (a zero weight too: it gets the uniform noise)
        self.programming_events = _programmed_devices(torch.ones_like(W, dtype=torch.bool), torch.zeros_like(W),
                                                      self.w)

    def matmul(self, x: ArrayLike) -> ArrayLike:
        """``x @ W`` with the weights read with fresh noise: one draw per call, shared by the batch (as the
        authors' model); only rows with a non-zero input are read (the others cannot affect the result)."""
        x = check_input(x, self.shape[0], self.name)
        xt = as_torch(x)
        x2 = xt.reshape(-1, self.shape[0]).to(torch.float64)
        rows = torch.nonzero((x2 != 0).any(dim=0)).ravel()
        state = self.substrate.generator.get_state()
        y = x2[:, rows] @ self.substrate.noisy_read(self.w[rows])
        y = y.reshape(*xt.shape[:-1], self.shape[1])
        y = y.numpy() if isinstance(x, np.ndarray) else y.to(xt.dtype)
        if not all_finite(y):
            self.substrate.generator.set_state(state)
            raise overflow_error(self.name, y.dtype)
        self._count(x)
        return y

    def update(self, dW: ArrayLike) -> None:
        """Round dW to multiples of 1/16 (half to even) and re-program the changed weights to w + dW_q."""
        d = check_update(dW, self.shape, self.name).detach().to(torch.float64)
        sub: AuthorsArmSubstrate = self.substrate
        dq = round_update(d, 1.0, UPDATE_GRID, "nearest")
        w1 = self.w + dq
        if not all_finite(w1):
            raise overflow_error(self.name, w1.dtype, "the update W + dW (dW rounded to 1/16)",
                                 "weights that stay finite")
        changed = dq != 0
        prog_normal = sub.randn(w1.shape)
        w_new = reprogrammed(w1, changed.to(torch.float64), prog_normal, sub.randn(w1.shape), sub.t_ratio)
        self.programming_events += _programmed_devices(changed, self.w, hard_clip(w1))
        self.w = w_new
        self.updates += 1

    def read(self) -> ArrayLike:
        """The programmed weights (without read noise), in the kind they were placed as."""
        return self.w.numpy().copy() if self._numpy_kind else self.w.clone()

    def stats(self) -> dict:
        return {"shape": self.shape, "w_max": 1.0, "mvms": self.mvms, "macs": self.macs,
                **tile_counts(self.shape, self.tile_grid, self.mvms), "calibration_mvms": 0,
                "updates": self.updates,
                "programming_events": self.programming_events, "adc_saturations": 0,
                "tile_rows": TILE, "tile_cols": TILE}


class AuthorsArmSubstrate(Substrate):
    """The authors' arm PCM model as a substrate (see the module docstring for the model).

    Args:
        seed: seed of all random draws.
        t_ratio: the drift and read-noise time ratio t / t0 (32 in the authors' code). ``elapse`` moves
            ``time_s`` but changes nothing: the model has one fixed time point.

    The cost report counts MVMs as on 256 x 256 tiles and one programmed device per non-zero weight placed and
    per device whose target an update changes (the model has no DAC/ADC: no saturations).
    """

    kind = "authors-arm"
    device = AUTHORS_ARM

    def __init__(self, seed: int = 0, t_ratio: float = 32.0):
        super().__init__()
        t_ratio = float(t_ratio)
        if not np.isfinite(t_ratio) or t_ratio <= 0:
            raise ValueError(f"t_ratio must be a positive finite number, got {t_ratio!r}")
        self.seed = int(seed)
        self.t_ratio = t_ratio
        self.generator = torch.Generator().manual_seed(self.seed)

    def randn(self, shape) -> torch.Tensor:
        """Standard normals (float64) from the substrate's generator."""
        return torch.randn(shape, generator=self.generator, dtype=torch.float64)

    def noisy_read(self, w: torch.Tensor) -> torch.Tensor:
        """One read of the weights ``w`` (units of g_max, clipped to [-1, 1]) with fresh 1/f read noise on the
        device carrying each weight, clipped to [0, g_max]."""
        wc = hard_clip(w)
        sigma = read_noise_std_uS(wc, self.t_ratio)
        return hard_clip(device_noise(wc, sigma * self.randn(w.shape)))

    def place(self, name: str, W: ArrayLike) -> AuthorsArmArray:
        """Program ``W`` (in_features, out_features) as the authors' model does (see the module docstring)."""
        return self._place_new(name, W, lambda t, numpy_kind: AuthorsArmArray(self, name, t, numpy_kind))

    def report(self) -> dict:
        """Arrays, MVMs, MACs, programmed devices, estimated energy (J) and latency (s), as
        :meth:`PCMSubstrate.report`."""
        arrays = {n: a.stats() for n, a in self.arrays.items()}
        config = {"seed": self.seed, "t_ratio": self.t_ratio, "g_max_uS": G_MAX_US, "update_grid": UPDATE_GRID}
        return {"substrate": self.kind, "device": AUTHORS_ARM.name, "time_s": self.time_s, "config": config,
                "arrays": arrays, **chip_totals(arrays, TILE)}

    def __repr__(self) -> str:
        return f"AuthorsArmSubstrate(t_ratio={self.t_ratio:g}, arrays={list(self.arrays)})"
