"""Crossbar periphery: tiles, per-sample input scaling, DAC, output noise, ADC and digital partial sums.

A matrix of shape (in, out) is split over ``ceil(in / tile_rows) x ceil(out / tile_cols)`` tiles; each row
tile computes its partial MVM in analog, the ADC converts it per tile and the partial sums of the row tiles
are added digitally. The whole pipeline of one MVM is :func:`analog_core`, a pure function of its arguments
that runs eagerly or as one fused ``torch.compile`` graph (:func:`compiled_core`) with the same numbers.

Units inside the core: inputs in DAC levels (integers in [-L, L] after per-sample abs-max scaling,
``L = 2^(dac_bits-1) - 1``), conductances normalised by g_max and divided by the output unit (one ADC step),
outputs in ADC steps until the final multiply maps them to weight units.
"""
from __future__ import annotations

import math
import warnings

import torch

from .rng import counter_normals


# --------------------------------------------------------------------------------------------- tiles
def tile_grid(shape: tuple[int, int], tile_rows: int, tile_cols: int) -> tuple[int, int]:
    """Number of (row, column) tiles a matrix of ``shape`` (in, out) occupies."""
    return math.ceil(shape[0] / tile_rows), math.ceil(shape[1] / tile_cols)


def to_row_tiles(M: torch.Tensor, n_row_tiles: int, tile_rows: int) -> torch.Tensor:
    """(in, out) -> (n_row_tiles, tile_rows, out), the missing rows of the last tile padded with zeros."""
    pad = n_row_tiles * tile_rows - M.shape[0]
    if pad:
        M = torch.nn.functional.pad(M, (0, 0, 0, pad))
    return M.reshape(n_row_tiles, tile_rows, M.shape[1])


# ------------------------------------------------------------------------------------------ converters
def dac_levels(dac_bits: int | None) -> float:
    """Input levels per sign of the DAC (``2^(b-1) - 1``), 1.0 for an ideal DAC (inputs stay in [-1, 1])."""
    return float(2 ** (dac_bits - 1) - 1) if dac_bits is not None else 1.0


def adc_max_code(adc_bits: int | None) -> float | None:
    """The ADC's largest output code (``2^(b-1) - 1``), None for an ideal ADC."""
    return float(2 ** (adc_bits - 1) - 1) if adc_bits is not None else None


def output_unit(dac_bits: int | None, adc_bits: int | None, adc_bound: float) -> float:
    """The unit of the analog core's outputs in DAC-level x normalised-conductance units: one ADC step
    (``2 adc_bound L / (2^adc_bits - 2)``, ``adc_bound`` in full-scale-input x g_max units), or 1 for an
    ideal ADC."""
    if adc_bits is None:
        return 1.0
    return 2.0 * adc_bound * dac_levels(dac_bits) / float(2 ** adc_bits - 2)


# ------------------------------------------------------------------------------------------ MVM core
def _scale_inputs(x: torch.Tensor, lv: float, dac: bool):
    """Per-sample abs-max scaling to [-lv, lv] and DAC rounding: (xq, scale (B, 1), all finite (0-d bool)).

    ``x * (lv / scale)``; for a sample whose largest magnitude is so small (e.g. subnormal) that ``lv / scale``
    overflows its dtype, ``x / scale * lv`` instead (the same value up to rounding, finite)."""
    scale = torch.maximum(x.amax(dim=1, keepdim=True), -x.amin(dim=1, keepdim=True))
    finite = torch.isfinite(scale).all()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    inv = lv / scale
    if torch.compiler.is_compiling():  # no data-dependent branch in the graph
        xq = torch.where(torch.isinf(inv), x / scale * lv, x * inv)
    else:
        xq = x * inv
        tiny = torch.isinf(inv)
        if bool(tiny.any()):
            xq = torch.where(tiny, x / scale * lv, xq)
    if dac:
        xq.round_()
    return xq, scale, finite


def _tile_mvm(xq: torch.Tensor, G: torch.Tensor, var: torch.Tensor | None):
    """Analog MVM per row tile: (y (B, n_rt, out), read-noise variance of y or None)."""
    n_rt, R = G.shape[0], G.shape[1]
    B = xq.shape[0]
    pad = n_rt * R - xq.shape[1]
    if pad:
        xq = torch.nn.functional.pad(xq, (0, pad))
    if n_rt == 1:
        y = (xq @ G[0]).unsqueeze(1)  # (B, 1, out)
        v = ((xq * xq) @ var[0]).unsqueeze(1) if var is not None else None
    else:
        xt = xq.reshape(B, n_rt, R).transpose(0, 1)              # (n_rt, B, R)
        y = torch.bmm(xt, G).transpose(0, 1)                      # (B, n_rt, out)
        v = torch.bmm(xt * xt, var).transpose(0, 1) if var is not None else None
    return y, v


def _add_noise(y: torch.Tensor, v: torch.Tensor | None, noise: torch.Tensor | None, key: torch.Tensor | None,
               on2: float) -> torch.Tensor:
    """Read noise (exact per-MVM sampling in output space, variance ``v``) plus output noise (variance ``on2``)."""
    if v is None and on2 <= 0:
        return y
    if noise is None:
        noise = counter_normals(key, y.shape, y.dtype)
    if v is None:
        return y + noise * math.sqrt(on2)
    if on2 > 0:
        v.add_(on2)
    return y.addcmul_(noise, v.sqrt_())  # x^2, var >= 0: no clamp needed


def _adc(y: torch.Tensor, adc_max: float | None):
    """ADC per tile output: clip to [-adc_max, adc_max] and round; (y, number of clipped outputs or None)."""
    if adc_max is None:
        return y, None
    if torch.compiler.is_compiling():  # one fused pass; no data-dependent branch in the graph
        sat = (y.abs() > adc_max).sum()
        return torch.round(y.clamp(-adc_max, adc_max)), sat
    sat = None  # eager: clamp only when something is out of range (one read pass otherwise)
    lo, hi = torch.aminmax(y)
    if max(float(hi), -float(lo)) > adc_max:
        yc = y.clamp(-adc_max, adc_max)
        sat = torch.count_nonzero(yc != y)
        y = yc
    return (y.round_() if y.is_contiguous() else torch.round(y)), sat


def _digital_output(y: torch.Tensor, scale: torch.Tensor, out_unit: float, alpha: torch.Tensor | None):
    """Digital partial sums of the row tiles, then one multiply by the input scale, the output unit and the
    drift compensation ``alpha`` ((1,) or (out,), or None)."""
    y = y.sum(dim=1) if y.shape[1] > 1 else y[:, 0]
    factor = scale * out_unit  # (B, 1): output units -> weight units
    if alpha is not None and alpha.numel() == 1:
        factor = factor * alpha  # fold a global scale into (B, 1)
        alpha = None
    y = y.mul_(factor) if y.is_contiguous() else y * factor
    if alpha is not None:
        y = y.mul_(alpha)
    return y


def analog_core(x: torch.Tensor, G: torch.Tensor, var: torch.Tensor | None, noise: torch.Tensor | None,
                key: torch.Tensor | None, lv: float, dac: bool, on2: float, adc_max: float | None,
                out_unit: float, alpha: torch.Tensor | None):
    """Per-sample abs-max input scaling, DAC, analog MVM per row tile, read + output noise, ADC, digital
    partial sums and output scale.

    x (B, in); G, var (n_rt, rows, out): conductances and read-noise variances of the tiles in output units;
    noise: standard normals (B, n_rt, out) drawn by the caller, or None to draw them from the counter-based
    stream ``key``; lv: DAC levels per sign; on2: output-noise variance (output units); adc_max: the ADC's
    largest code (None = ideal ADC); out_unit: output units -> weight units per unit of input scale; alpha:
    drift compensation ((1,) or (out,)) or None.
    Returns (y (B, out) in weight units, number of clipped ADC outputs as a 0-d tensor or None, whether
    every input was finite (0-d bool tensor; y is meaningless otherwise)).
    A pure function of its arguments: eager and ``torch.compile`` runs agree.
    """
    xq, scale, finite = _scale_inputs(x, lv, dac)
    y, v = _tile_mvm(xq, G, var)
    y = _add_noise(y, v, noise, key, on2)
    y, sat = _adc(y, adc_max)
    return _digital_output(y, scale, out_unit, alpha), sat, finite


_COMPILED: dict = {}


def _warn_eager(message: str) -> None:
    warnings.warn(f"PCMConfig(compile=True): {message} (identical numbers, slower)", RuntimeWarning, stacklevel=4)


def compiled_core(*args):
    """:func:`analog_core` through ``torch.compile`` (built on first use); eager if compiling fails.

    Each dtype, array layout (one or several row tiles) and set of effects (read noise, ADC, compensation)
    is one specialisation of the compiled graph; batch-size changes share one dynamic-shape kernel. Past
    torch's recompile limit (``torch._dynamo.config.recompile_limit``) new specialisations run eagerly.
    """
    if _COMPILED.get("broken"):
        return analog_core(*args)
    fn = _COMPILED.get("fn")
    if fn is None:
        fn = _COMPILED["fn"] = torch.compile(analog_core, dynamic=None, fullgraph=True)
    try:
        return fn(*args)
    except Exception as e:
        if "recompile" in type(e).__name__.lower() or "recompile limit" in str(e).lower():
            if not _COMPILED.get("limit_warned"):
                _COMPILED["limit_warned"] = True
                _warn_eager("torch.compile's recompile limit is reached; MVMs of further dtypes/layouts run eagerly")
            return analog_core(*args)
        # no C++ compiler, unsupported platform, ...: the same numbers eagerly
        _COMPILED["broken"] = True
        first = (str(e).strip().splitlines() or [""])[0][:200]
        _warn_eager(f"torch.compile of the MVM failed ({type(e).__name__}: {first}); running the same pipeline "
                    "eagerly")
        return analog_core(*args)
