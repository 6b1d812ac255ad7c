"""Crossbar periphery: tiles, per-sample input scaling, DAC, output noise, ADC and digital partial sums.

A matrix of shape (in, out) is split over ``ceil(in / tile_rows) x ceil(out / tile_cols)`` tiles; each row
tile computes its partial MVM in analog, the ADC converts it per tile and the partial sums of the row tiles
are added digitally. The whole pipeline of one MVM is :func:`analog_core`, a pure function of its arguments
that runs eagerly or as one fused ``torch.compile`` graph (:func:`compiled_core`) with the same numbers. The
default eager MVM runs the same operations, with the same numbers, in three steps that reuse scratch tensors
(:class:`Workspace`) and a time point's converted conductances (:class:`MVMPlan`): :func:`scale_inputs`,
:func:`tile_mvm`, :func:`finish_mvm` (``tests/hardware/test_pcm_fast_path.py`` compares them bit for bit).

Units inside the core: inputs in DAC levels (integers in [-L, L] after per-sample abs-max scaling,
``L = 2^(dac_bits-1) - 1``), conductances normalised by g_max and divided by the output unit (one ADC step),
outputs in ADC steps until the final multiply maps them to weight units.
"""
from __future__ import annotations

import math
import types
import warnings

import numpy as np
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
        # counted per (sample, output) over the row tiles first, in the loop of the partial sums (one pass fewer)
        sat = (y.abs() > adc_max).sum(dim=1).sum()
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


# ------------------------------------------------------------------------------ eager MVM, the default
# The same numbers as analog_core, op for op, with fewer ops and passes: reused scratch tensors, the conductances
# of one time point converted once (MVMPlan), one max-abs reduction for the input scale, noise and ADC in place,
# and the finiteness / overflow checks of the result skipped where a bound shows the result finite.
class Workspace:
    """Scratch tensors reused between MVMs: one flat buffer per role and dtype, grown to the largest MVM seen,
    shared by the arrays of a substrate (an MVM's result never aliases it). A fresh multi-megabyte tensor per call
    costs page faults (measured ~10 % of a 1024 x 256 MVM on one CPU thread)."""

    def __init__(self):
        self._flat: dict = {}
        self._views: dict = {}

    def get(self, role: str, shape: tuple, dtype: torch.dtype, device: torch.device, cols: tuple | None = None):
        """The scratch tensor ``role`` of ``shape`` (contiguous); with ``cols`` = (start, stop), the view of
        those columns of a 2-D ``shape`` (cached: indexing costs microseconds per call)."""
        key = (role, shape, dtype, device, cols)
        view = self._views.get(key)
        if view is None:
            if cols is not None:
                view = self._views[key] = self.get(role, shape, dtype, device)[:, cols[0]:cols[1]]
                return view
            n, fkey = math.prod(shape), (role, dtype, device)
            flat = self._flat.get(fkey)
            if flat is None or flat.numel() < n:
                with torch.inference_mode(False):  # a normal tensor: written in place in and out of inference mode
                    flat = self._flat[fkey] = torch.empty(n, dtype=dtype, device=device)
                self._views = {k: v for k, v in self._views.items() if (k[0], k[2], k[3]) != fkey}
            if len(self._views) > 64:  # many batch sizes: forget the views, keep the buffers
                self._views = {}
            view = self._views[key] = flat[:n].view(shape)
        return view

    def clear(self) -> None:
        """Free the buffers (they are allocated again when needed)."""
        self._flat, self._views = {}, {}


_SCALAR_DTYPES = (torch.float32, torch.float64)
# the largest |standard normal| normal_ (53-bit uniforms: sqrt(2 * 53 ln 2) = 8.6) or counter_normals can draw
_NORMAL_MAX = 10.0


class MVMPlan:
    """What the MVMs of one array need at one time point in one dtype: the conductances G and read-noise
    variances var in row tiles (n_rt, rows, out) and output units, the converter constants, and a bound on the
    result's magnitude per unit of input scale (``safe``)."""

    __slots__ = ("G", "G0", "var", "var0", "n_rt", "rows", "out_features", "lv", "dac", "on2", "noise_std",
                 "adc_max", "out_unit", "fmax", "_k")

    def __init__(self, G: torch.Tensor, var: torch.Tensor | None, cfg, w_max: float, dtype: torch.dtype,
                 device: torch.device):
        """``G``, ``var``: (in, out) float64, normalised conductances (variances) at the time point; ``cfg``: the
        :class:`~pcmeta.hardware.config.PCMConfig`."""
        rows, self.out_features = cfg.tile_rows, G.shape[1]
        self.n_rt, self.rows = math.ceil(G.shape[0] / rows), rows
        self.lv, self.dac = dac_levels(cfg.dac_bits), cfg.dac_bits is not None
        u = output_unit(cfg.dac_bits, cfg.adc_bits, cfg.adc_bound)
        self.on2 = (cfg.out_noise * self.lv / u) ** 2
        self.noise_std = math.sqrt(self.on2)
        self.adc_max = adc_max_code(cfg.adc_bits)
        self.out_unit = w_max * u / self.lv
        self.G = to_row_tiles((G / u).to(dtype=dtype, device=device), self.n_rt, rows).contiguous()
        self.var = None if var is None else to_row_tiles((var / u**2).to(dtype=dtype, device=device), self.n_rt,
                                                         rows).contiguous()
        self.G0 = self.G[0] if self.n_rt == 1 else None
        self.var0 = self.var[0] if self.n_rt == 1 and self.var is not None else None
        # |tile output| <= lv rows max|G| + 10 sqrt(lv^2 rows max(var) + on2) before the ADC (x2 for rounding)
        self.fmax = torch.finfo(dtype).max
        gmax = float(G.abs().max()) / u
        vmax = float(var.max()) / u**2 if var is not None else 0.0
        pre = 2.0 * (self.lv * rows * gmax + _NORMAL_MAX * math.sqrt(self.lv**2 * rows * vmax + self.on2))
        tile = self.adc_max if self.adc_max is not None else pre
        ok = (dtype in (torch.float32, torch.float64) and math.isfinite(pre) and pre < self.fmax  # 16-bit: checked
              and 2.0 * self.lv**2 * rows * vmax < self.fmax)
        self._k = 4.0 * self.n_rt * tile * self.out_unit if ok else math.inf

    def safe(self, scale_max: float, alpha_max: float) -> bool:
        """Whether every MVM of inputs with per-sample scales <= ``scale_max`` and compensation <= ``alpha_max``
        is finite (no overflow, no NaN): then nothing of the result needs checking."""
        return self._k * scale_max * alpha_max < self.fmax


_F32_MAX, _F32_TINY = float(torch.finfo(torch.float32).max), float(torch.finfo(torch.float32).tiny)
_F64_TINY = float(torch.finfo(torch.float64).tiny)


def _rounded(v: float, dtype: torch.dtype) -> float | None:
    """The float ``v`` rounded to ``dtype`` (float32 or float64) as torch rounds an operation's exact result, or
    None if it overflows or is subnormal (torch may flush those: ``torch.set_flush_denormal``). For a product of
    two float32 values (exact in float64) and a quotient (double rounding through float64 is exact for float32:
    53 >= 2 * 24 + 2) this is the float32 operation's result."""
    if dtype is torch.float64:
        return v if math.isfinite(v) and (v == 0 or abs(v) >= _F64_TINY) else None
    if not _F32_TINY <= abs(v) < _F32_MAX:
        return None if v != 0 else 0.0
    return float(np.float32(v))


def _scalar_scale(x: torch.Tensor, xv: torch.Tensor, lv: float):
    """For one sample in float32/float64: its scale and ``lv / scale`` as Python floats, computed as
    :func:`_scale_inputs` computes them in the tensor's dtype (reciprocal, then times lv); (None, None) if the
    input is not finite, (scale, None) if ``lv / scale`` overflows."""
    s = torch.abs(x, out=xv).amax().item()
    if not math.isfinite(s):
        return None, None
    s = s if s > 0 else 1.0
    r = _rounded(1.0 / s, x.dtype)
    return s, (None if r is None else _rounded(r * lv, x.dtype))


def scale_inputs(x: torch.Tensor, lv: float, dac: bool, width: int, ws: Workspace):
    """:func:`_scale_inputs` into the workspace, the input padded with zeros to ``width`` (whole row tiles):
    (xq (B, width), scale, largest scale as a float), or None if an input is NaN or inf. ``scale``: (B, 1), or a
    Python float for one float32/float64 sample (the scalar arithmetic gives the tensor ops' numbers: fewer
    ops per call)."""
    B, in_features = x.shape
    xq = ws.get("xq", (B, width), x.dtype, x.device)
    pad = width - in_features
    xv = ws.get("xq", (B, width), x.dtype, x.device, (0, in_features)) if pad else xq
    if pad:  # the padding columns: zero (the scratch tensor is shared)
        ws.get("xq", (B, width), x.dtype, x.device, (in_features, width)).zero_()
    if B == 1 and x.dtype in _SCALAR_DTYPES:
        s, inv = _scalar_scale(x, xv, lv)
        if s is None:
            return None
        if inv is not None:
            torch.mul(x, inv, out=xv)
            if dac:
                xq.round_()
            return xq, s, s
    # = max(amax, -amin) with NaN propagated; |x| into the scratch tensor xq is about to be (amax and amin are
    # vectorised, linalg.vector_norm(inf) and aminmax(dim) are not: 10x slower on CPU)
    scale = torch.abs(x, out=xv).amax(dim=1, keepdim=True)
    lo, hi = torch.aminmax(scale)
    smin, smax = lo.item(), hi.item()
    if not math.isfinite(smax):
        return None
    if smin <= 0:  # an all-zero sample: scale 1
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        smin, smax = float(scale.min()), max(smax, 1.0)
    inv = torch.reciprocal(scale).mul_(lv)  # = lv / scale (Tensor.__rtruediv__), without its Python wrapper
    if lv / smin < 0.25 * torch.finfo(x.dtype).max:  # lv / scale cannot be inf
        torch.mul(x, inv, out=xv)
    else:
        tiny = torch.isinf(inv)
        xv.copy_(torch.where(tiny, x / scale * lv, x * inv))
    if dac:
        xq.round_()
    return xq, scale, smax


def tile_mvm(xq: torch.Tensor, plan: MVMPlan, ws: Workspace):
    """The analog MVM per row tile into the workspace: (y, read-noise variance of y or None), both
    (B, n_rt, out), or (B, out) for one row tile (the same memory, without indexing per call).

    The products of analog_core's ``bmm`` (the same kernel, the same numbers), written in the layout of the
    noise, so that noise, ADC and the partial sums run over contiguous memory."""
    B, n_rt = xq.shape[0], plan.n_rt
    dtype, device = xq.dtype, xq.device
    shape = (B, plan.out_features) if n_rt == 1 else (B, n_rt, plan.out_features)
    y = ws.get("y", shape, dtype, device)
    v = None if plan.var is None else ws.get("v", shape, dtype, device)
    xsq = None if plan.var is None else torch.mul(xq, xq, out=ws.get("xsq", xq.shape, dtype, device))
    if n_rt == 1:
        torch.mm(xq, plan.G0, out=y)
        if v is not None:
            torch.mm(xsq, plan.var0, out=v)
    else:
        torch.bmm(xq.view(B, n_rt, plan.rows).transpose(0, 1), plan.G, out=y.transpose(0, 1))
        if v is not None:
            torch.bmm(xsq.view(B, n_rt, plan.rows).transpose(0, 1), plan.var, out=v.transpose(0, 1))
    return y, v


def _factor(scale, out_unit: float, alpha: torch.Tensor | None, dtype: torch.dtype) -> float | None:
    """``scale * out_unit`` (times a global ``alpha``) as a Python float with the numbers of the tensor ops, for a
    Python-float ``scale`` (:func:`scale_inputs`); None otherwise or if it overflows."""
    if not isinstance(scale, float):
        return None
    ou = _rounded(out_unit, dtype)  # a scalar operand: cast to the dtype
    f = None if ou is None else _rounded(scale * ou, dtype)
    if f is not None and alpha is not None and alpha.numel() == 1:
        f = _rounded(f * alpha.item(), dtype)
    return f


def finish_mvm(y: torch.Tensor, v: torch.Tensor | None, noise: torch.Tensor | None, plan: MVMPlan,
               scale: torch.Tensor | float, alpha: torch.Tensor | None, noise_std: float = 1.0):
    """Noise, ADC and digital output of :func:`tile_mvm`'s ``y`` (changed in place): (result (B, out) in
    weight units, a new tensor; number of clipped ADC outputs as a 0-d tensor or None). ``noise``: normals of
    std ``noise_std`` (1, or the output noise's when drawn with it) of ``y``'s shape, drawn as (B, n_rt, out) (a
    scratch tensor, changed), or None without noise."""
    if noise is not None:
        if v is None:
            y.add_(noise if noise_std != 1.0 else noise.mul_(plan.noise_std))
        else:
            if plan.on2 > 0:
                v.add_(plan.on2)
            y.addcmul_(noise, v.sqrt_())
    sat = None
    if plan.adc_max is not None:
        m = plan.adc_max
        lo, hi = torch.aminmax(y)  # NaN: no clamp (the result is NaN and refused)
        if max(hi.item(), -lo.item()) > m:
            sat = torch.count_nonzero(y.abs() > m)
            y.clamp_(-m, m)
        y.round_()
    factor = _factor(scale, plan.out_unit, alpha, y.dtype)
    if factor is not None:  # one sample: a Python float (global alpha folded in)
        alpha = alpha if alpha is not None and alpha.numel() > 1 else None
    else:
        factor = scale * plan.out_unit if isinstance(scale, torch.Tensor) else torch.full(
            (1, 1), scale, dtype=y.dtype, device=y.device) * plan.out_unit  # (B, 1): output units -> weight units
        if alpha is not None and alpha.numel() == 1:
            factor = factor * alpha
            alpha = None
    if plan.n_rt == 1:
        out = torch.mul(y, factor)
    else:
        out = y.sum(dim=1).mul_(factor)
    if alpha is not None:
        out.mul_(alpha)
    return out, sat


_COMPILED: dict = {}


def _warn_eager(message: str) -> None:
    warnings.warn(f"PCMConfig(compile=True): {message} (identical numbers, slower)", RuntimeWarning, stacklevel=4)


def _specialisation(x, G, var, noise, key, lv, dac, on2, adc_max, out_unit, alpha) -> tuple:
    """The class of an :func:`analog_core` call that compiles to its own graphs."""
    return (x.dtype, x.device.type, G.shape[0] == 1, var is None, key is None, dac, adc_max is None,
            None if alpha is None else alpha.numel() == 1)


def _compiled_fn(spec: tuple):
    """``torch.compile`` of a copy of :func:`analog_core` per specialisation class (a code object of its own:
    torch's recompile limit counts the graphs of one code object, and one process may need a dozen classes --
    per-time and per-MVM noise, one and several row tiles, batch 1 and larger batches)."""
    fns = _COMPILED.setdefault("fns", {})
    fn = fns.get(spec)
    if fn is None:
        code = analog_core.__code__.replace(co_name=f"analog_core_{len(fns)}")
        copy = types.FunctionType(code, analog_core.__globals__, code.co_name, analog_core.__defaults__)
        fn = fns[spec] = torch.compile(copy, dynamic=None, fullgraph=True)
    return fn


def compiled_core(*args):
    """:func:`analog_core` through ``torch.compile`` (built on first use); eager if compiling fails.

    Each dtype, array layout (one or several row tiles) and set of effects (read noise, ADC, compensation)
    is one specialisation class with its own compiled graphs; batch-size changes share one dynamic-shape kernel.
    Runs without autograd (the grad mode is part of a graph's guards). Past torch's recompile limit
    (``torch._dynamo.config.recompile_limit``) new specialisations of a class run eagerly.
    """
    if _COMPILED.get("broken"):
        return analog_core(*args)
    fn = _COMPILED.get("fn") or _compiled_fn(_specialisation(*args))  # "fn": one function for every call (tests)
    try:
        with torch.no_grad():
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
