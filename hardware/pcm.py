"""A simulated phase-change-memory (PCM) crossbar substrate.

Each weight is a differential pair of PCM devices (``w > 0`` on G+, ``w < 0`` on G-), mapped with the scale
``g_max / w_max``. A matrix of shape (in, out) is split over ``ceil(in/256) x ceil(out/256)`` tiles of
256 x 256 devices; partial sums of the row tiles are added digitally. The device physics follows the
statistical PCM model of Nandakumar et al. / Joshi et al. as in IBM aihwkit's ``PCMLikeNoiseModel`` (or the
HERMES chip statistics), see :mod:`pcmeta.hardware.devices` and SPEC.md section 3:

- programming: ``G_prog = max(G_T + N(0, sigma_p(g_T)), 0)`` and a drift exponent ``nu ~ |N(mu, sigma)|``
  drawn per device when it is programmed; each device remembers its programming time;
- drift: ``G(t) = G_prog ((t_p + t0)/t0)^(-nu)``, ``t_p`` = seconds since *that device* was programmed;
- read noise (1/f): ``N(0, G(t) Q_s(g_prog) sqrt(ln((t_p + t0 + t_read) / (2 t_read))))``, drawn fresh on
  every MVM (``read_noise="per_mvm"``, the chip reads on every MVM) or once per time point
  (``read_noise="per_time"``, aihwkit's convention);
- periphery: per-sample abs-max input scaling, ``dac_bits`` DAC, additive output noise, ``adc_bits`` ADC
  over ``[-adc_bound, adc_bound]`` per tile, digital partial-sum accumulation, drift compensation.

Units inside the analog core: inputs in [-1, 1] after scaling, conductances normalised by g_max, outputs in
"full-scale input x g_max" units (the units of aihwkit's ``out_noise`` and ``out_bound``).

Per-MVM read noise is sampled exactly in output space: for one input vector the noise on output j is
``sum_i x_i n_ij`` with independent Gaussian ``n_ij``, i.e. ``N(0, sum_i x_i^2 sigma_ij^2)``; this costs one
extra matmul instead of drawing ``in x out`` numbers per input vector. (It omits the clip of the per-device
read value at G >= 0, which only matters for devices with G close to 0, whose contribution is negligible.)
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .devices import DEVICES, drift_factor, read_noise_time_factor
from .energy import ENERGY, estimate_cost
from .rng import counter_normals, draw_key
from .substrate import (ArrayLike, Substrate, SynapticArray, as_weight_tensor, check_bits, check_input,
                        check_update, stochastic_quantize, to_like)

_COMPENSATIONS = ("none", "global", "per_column")
_READ_NOISE = ("per_mvm", "per_time")
_ROUNDING = ("stochastic", "nearest")
_UPDATE_BASE = ("drifted", "target")
_UPDATE_FRAME = ("device", "compensated")
_NOISE_RNG = ("torch", "counter")


@dataclass
class PCMConfig:
    """Configuration of a simulated PCM crossbar (units in the names; 0 turns each noise off).

    Attributes
    ----------
    device: "pcm" (aihwkit PCMLikeNoiseModel statistics) or "hermes" (IBM HERMES chip statistics; use
        :meth:`hermes` to also take its g_max, t0 and t_read).
    g_max_uS: conductance of a device programmed to the largest weight magnitude (uS).
    w_max: weight mapped to g_max; ``None`` = per array, ``max|W|`` at placement (fixed afterwards).
    weight_bits: ``None`` (program the float value) or 1..16: the paper's stochastic quantizer (SPEC
        section 1) applied to ``W / w_max`` before programming.
    update_grid: resolution of ``update()`` in units of ``w_max`` (default 1/16; ``None`` = exact updates,
        no rounding: an idealised programmer).
    update_rounding: "stochastic" (unbiased, default) or "nearest" (round half to even, the authors'
        arm model) rounding of ``dW`` to the update grid.
    update_base: "drifted" (a changed device is re-programmed to its current drifted value + dW, as a chip
        that reads before it writes; the authors' model) or "target" (the last programmed target + dW).
    update_frame: the frame ``update(dW)`` is given in when drift compensation is on. "compensated"
        (default): the controller, which applies the compensation scale alpha digitally anyway, writes
        ``dW / alpha`` (before rounding to the update grid), so that the effective weights that ``read()``
        returns and ``matmul`` uses move by dW. "device": dW is written to the devices as it is, so the
        effective weights move by ``alpha * dW`` (alpha ~1.07 one minute and ~1.5 one day after
        programming). No effect without drift compensation.
    dac_bits, adc_bits: converter resolutions (``None`` = ideal). The DAC has ``2^(b-1) - 1`` levels per
        sign on [-1, 1] after per-sample abs-max scaling; the ADC has ``2^b - 2`` steps on
        ``[-adc_bound, adc_bound]`` per tile (outputs beyond are clipped and counted as saturations).
    adc_bound: ADC range in full-scale-input x g_max units (aihwkit's default ``out_bound`` 12).
    tile_rows, tile_cols: crossbar tile size (256 x 256).
    prog_noise_scale, read_noise_scale, drift_scale: multipliers of programming noise, read noise and the
        drift exponent (0 turns each off).
    out_noise: std of additive Gaussian noise on each tile output, in full-scale units (aihwkit: 0.06).
    t0_s: drift reference time (s); t_read_s: read duration in the 1/f noise formula (s).
    read_noise: "per_mvm" (fresh on every MVM) or "per_time" (drawn once per time point).
    drift_compensation: "none", "global" (one digital output scale per array) or "per_column" (one per
        output), calibrated with fixed inputs right after programming.
    n_calibration: number of fixed random +-1 calibration inputs used by drift compensation.
    seed: seed of every random draw of the substrate.
    noise_rng: source of the per-MVM Gaussian noise (read noise and output noise). "torch": ``normal_``
        from the substrate's Mersenne-Twister generator; "counter": a counter-based SplitMix64 stream with
        one key per MVM drawn from that generator (:mod:`pcmeta.hardware.rng`; the same numbers eager or
        compiled, on CPU or CUDA). ``None`` (default): "counter" if ``compile`` else "torch".
    compile: run the MVM pipeline (input scaling, DAC, analog MVM, noise, ADC, partial sums, output scale) as
        one ``torch.compile`` graph, its elementwise work and the noise generation fused into a
        few kernels (needs ``noise_rng="counter"``; a C++ compiler on CPU). Compiled and eager runs give the
        same numbers; the first MVM of each new shape compiles (seconds; cached on disk by torch). If
        compilation fails, a warning is given and the same pipeline runs eagerly.
    """

    device: str = "pcm"
    g_max_uS: float = 25.0
    w_max: float | None = None
    weight_bits: int | None = None
    update_grid: float | None = 1.0 / 16.0
    update_rounding: str = "stochastic"
    update_base: str = "drifted"
    update_frame: str = "compensated"
    dac_bits: int | None = 8
    adc_bits: int | None = 8
    adc_bound: float = 12.0
    tile_rows: int = 256
    tile_cols: int = 256
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    out_noise: float = 0.06
    t0_s: float = 20.0
    t_read_s: float = 250e-9
    read_noise: str = "per_mvm"
    drift_compensation: str = "none"
    n_calibration: int = 16
    seed: int = 0
    noise_rng: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def hermes(cls, **kw) -> "PCMConfig":
        """The HERMES chip statistics with their own g_max (20.7 uS), t0 (300 s) and t_read (512 ns)."""
        base = dict(device="hermes", g_max_uS=20.7, t0_s=300.0, t_read_s=512e-9)
        base.update(kw)
        return cls(**base)

    @classmethod
    def ideal(cls, **kw) -> "PCMConfig":
        """Every non-ideality off: float weights, no noise, no drift, ideal DAC/ADC."""
        base = dict(weight_bits=None, dac_bits=None, adc_bits=None, prog_noise_scale=0.0, read_noise_scale=0.0,
                    drift_scale=0.0, out_noise=0.0, update_grid=None)
        base.update(kw)
        return cls(**base)

    def replace(self, **kw) -> "PCMConfig":
        return replace(self, **kw)

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {sorted(DEVICES)}, got {self.device!r}")
        check_bits(self.weight_bits, "weight_bits")
        check_bits(self.dac_bits, "dac_bits")
        check_bits(self.adc_bits, "adc_bits")
        if self.dac_bits is not None and self.dac_bits < 2:
            raise ValueError(f"dac_bits must be None or in 2..16 (one bit is the sign), got {self.dac_bits}")
        if self.adc_bits is not None and self.adc_bits < 2:
            raise ValueError(f"adc_bits must be None or in 2..16, got {self.adc_bits}")
        for f in ("g_max_uS", "adc_bound", "t0_s", "t_read_s", "update_grid"):
            v = getattr(self, f)
            if f == "update_grid" and v is None:
                continue
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{f} must be a positive finite number, got {v!r}")
        if self.w_max is not None and not (math.isfinite(self.w_max) and self.w_max > 0):
            raise ValueError(f"w_max must be None or a positive finite number, got {self.w_max!r}")
        for f in ("prog_noise_scale", "read_noise_scale", "drift_scale", "out_noise"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{f} must be a finite number >= 0, got {v!r}")
        for f in ("tile_rows", "tile_cols", "n_calibration"):
            v = getattr(self, f)
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{f} must be a positive integer, got {v!r}")
        for f, allowed in (("drift_compensation", _COMPENSATIONS), ("read_noise", _READ_NOISE),
                           ("update_rounding", _ROUNDING), ("update_base", _UPDATE_BASE),
                           ("update_frame", _UPDATE_FRAME)):
            if getattr(self, f) not in allowed:
                raise ValueError(f"{f} must be one of {allowed}, got {getattr(self, f)!r}")
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        if self.noise_rng not in (None,) + _NOISE_RNG:
            raise ValueError(f"noise_rng must be None or one of {_NOISE_RNG}, got {self.noise_rng!r}")
        if self.compile and self.noise_rng == "torch":
            raise ValueError("compile=True needs noise_rng='counter' (or None): torch's generator draws cannot "
                             "be fused into the compiled MVM")

    @property
    def noise_source(self) -> str:
        """The resolved ``noise_rng``: "counter" or "torch"."""
        return self.noise_rng or ("counter" if self.compile else "torch")


# ------------------------------------------------------------------------------------------ MVM core
def _analog_core(x: torch.Tensor, G: torch.Tensor, var: torch.Tensor | None, noise: torch.Tensor | None,
                 key: torch.Tensor | None, lv: float, dac: bool, on2: float, adc_max: float | None,
                 out_unit: float, alpha: torch.Tensor | None):
    """Per-sample abs-max input scaling, DAC, analog MVM per row tile, read + output noise, ADC, digital
    partial sums and output scale.

    x (B, in); G, var (n_rt, rows, out): conductances and read-noise
    variances of the tiles in output units; noise: standard normals (B, n_rt, out) drawn by the caller, or
    None to draw them from the counter-based stream ``key``; lv: DAC levels per sign; on2: output-noise
    variance (output units); adc_max: the ADC's largest code (None = ideal ADC); out_unit: output units ->
    weight units per unit of input scale; alpha: drift compensation ((1,) or (out,)) or None.
    Returns (y (B, out) in weight units, number of clipped ADC outputs as a 0-d tensor or None, whether
    every input was finite (0-d bool tensor; y is meaningless otherwise)).
    A pure function of its arguments: eager and ``torch.compile`` runs agree.
    """
    compiling = torch.compiler.is_compiling()
    n_rt, R = G.shape[0], G.shape[1]
    B = x.shape[0]
    scale = torch.maximum(x.amax(dim=1, keepdim=True), -x.amin(dim=1, keepdim=True))
    finite = torch.isfinite(scale).all()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    xq = x * (lv / scale)
    if dac:
        xq.round_()
    pad = n_rt * R - x.shape[1]
    if pad:
        xq = torch.nn.functional.pad(xq, (0, pad))
    if n_rt == 1:
        y = (xq @ G[0]).unsqueeze(1)  # (B, 1, out)
        v = ((xq * xq) @ var[0]).unsqueeze(1) if var is not None else None
    else:
        xt = xq.reshape(B, n_rt, R).transpose(0, 1)              # (n_rt, B, R)
        y = torch.bmm(xt, G).transpose(0, 1)                      # (B, n_rt, out)
        v = torch.bmm(xt * xt, var).transpose(0, 1) if var is not None else None
    # read noise (exact per-MVM sampling in output space) and output noise, in output units
    if v is not None or on2 > 0:
        if noise is None:
            noise = counter_normals(key, y.shape, y.dtype)
        if v is None:
            y = y + noise * math.sqrt(on2)
        else:
            if on2 > 0:
                v.add_(on2)
            y.addcmul_(noise, v.sqrt_())  # x^2, var >= 0: no clamp needed
    sat = None
    if adc_max is not None:
        if compiling:  # one fused pass; no data-dependent branch in the graph
            sat = (y.abs() > adc_max).sum()
            y = torch.round(y.clamp(-adc_max, adc_max))
        else:  # eager: clamp only when something is out of range (one read pass otherwise)
            lo, hi = torch.aminmax(y)
            if max(float(hi), -float(lo)) > adc_max:
                yc = y.clamp(-adc_max, adc_max)
                sat = torch.count_nonzero(yc != y)
                y = yc
            y = y.round_() if y.is_contiguous() else torch.round(y)
    y = y.sum(dim=1) if y.shape[1] > 1 else y[:, 0]
    factor = scale * out_unit  # (B, 1): output units -> weight units
    if alpha is not None and alpha.numel() == 1:
        factor = factor * alpha  # fold a global scale into (B, 1)
        alpha = None
    y = y.mul_(factor) if y.is_contiguous() else y * factor
    if alpha is not None:
        y = y.mul_(alpha)
    return y, sat, finite


_COMPILED: dict = {}


def _compiled_core(*args):
    """:func:`_analog_core` through ``torch.compile`` (built on first use); eager if compiling fails.

    Each dtype, array layout (one or several row tiles) and set of effects (read noise, ADC, compensation)
    is one specialisation of the compiled graph; batch-size changes share one dynamic-shape kernel. Past
    torch's recompile limit (``torch._dynamo.config.recompile_limit``) new specialisations run eagerly.
    """
    if _COMPILED.get("broken"):
        return _analog_core(*args)
    fn = _COMPILED.get("fn")
    if fn is None:
        fn = _COMPILED["fn"] = torch.compile(_analog_core, dynamic=None, fullgraph=True)
    try:
        return fn(*args)
    except Exception as e:
        if "recompile" in type(e).__name__.lower() or "recompile limit" in str(e).lower():
            if not _COMPILED.get("limit_warned"):
                _COMPILED["limit_warned"] = True
                warnings.warn("PCMConfig(compile=True): torch.compile's recompile limit is reached; MVMs of further "
                              "dtypes/layouts run eagerly (identical numbers, slower)", RuntimeWarning, stacklevel=3)
            return _analog_core(*args)
        # no C++ compiler, unsupported platform, ...: the same numbers eagerly
        _COMPILED["broken"] = True
        first = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"PCMConfig(compile=True): torch.compile of the MVM failed ({type(e).__name__}: {first}); "
                      "running the same pipeline eagerly (identical numbers, slower)", RuntimeWarning,
                      stacklevel=3)
        return _analog_core(*args)


# ------------------------------------------------------------------------------------------------ array
@dataclass
class _Devices:
    """State of one polarity (G+ or G-) of an array's devices, all (in, out) float64 tensors."""

    g_target: torch.Tensor   # normalised target conductance
    g_prog: torch.Tensor     # normalised conductance right after programming (with programming noise)
    nu: torch.Tensor         # drift exponent
    t_prog: torch.Tensor     # substrate time of the last programming (s)


class PCMArray(SynapticArray):
    """A weight matrix on PCM tiles (see the module docstring for the physics)."""

    def __init__(self, substrate: "PCMSubstrate", name: str, W: torch.Tensor, numpy_kind: bool):
        super().__init__(substrate, name, tuple(W.shape), numpy_kind)
        cfg = substrate.config
        n_in, n_out = self.shape
        self.tile_grid = (math.ceil(n_in / cfg.tile_rows), math.ceil(n_out / cfg.tile_cols))
        Wd = W.detach().to(torch.float64).cpu()
        self.w_max = float(cfg.w_max) if cfg.w_max is not None else (float(Wd.abs().max()) or 1.0)
        w = Wd / self.w_max
        if cfg.w_max is not None and float(w.abs().max()) > 1.0 + 1e-12:
            raise ValueError(f"'{name}': weights up to {float(Wd.abs().max()):.4g} exceed the fixed w_max "
                             f"{cfg.w_max:.4g}; set PCMConfig(w_max=None) for per-array scaling or a larger w_max")
        if cfg.weight_bits is not None:
            w = stochastic_quantize(w, cfg.weight_bits, 1.0, substrate.generator, straight_through=False)
        self.programming_events = 0
        self.adc_saturations = 0
        self.calibration_mvms = 0
        zeros = torch.zeros_like(w)
        self._pos = _Devices(zeros, zeros.clone(), zeros.clone(), zeros.clone())
        self._neg = _Devices(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())
        # The ideal weights: W as placed (unquantized) plus the applied updates, for read(ideal=True) and the
        # straight-through gradient; keeps W's autograd graph if it has one.
        self._w_ideal = W if (isinstance(W, torch.Tensor) and W.requires_grad) else Wd
        self._target = w.clone()  # the programmed targets in units of w_max
        self._program(torch.ones_like(w, dtype=torch.bool), w)
        self._cache_time = None
        self._cache: dict = {}
        self._noise_buf: torch.Tensor | None = None
        self._ref_cal = None
        if cfg.drift_compensation != "none":
            self._ref_cal = self._calibration_outputs()  # right after programming: the reference

    # ---------------------------------------------------------------------------------- programming
    def _program(self, mask: torch.Tensor, w_new: torch.Tensor) -> None:
        """Program the devices of the weights in ``mask`` to the normalised values ``w_new`` (in [-1, 1])."""
        sub: PCMSubstrate = self.substrate
        w_new = w_new.clamp(-1.0, 1.0)
        for side, target in ((self._pos, w_new.clamp(min=0.0)), (self._neg, (-w_new).clamp(min=0.0))):
            # a device is re-programmed if its weight changed and it carries (or carried) a non-zero target
            sel = mask & ((target != side.g_target) | (target > 0))
            n = int(sel.sum())
            if n == 0:
                continue
            g_t = target[sel]
            g_p, nu = sub.draw_programming(g_t)
            side.g_target[sel] = g_t
            side.g_prog[sel] = g_p
            side.nu[sel] = nu
            side.t_prog[sel] = sub.time_s
            self.programming_events += n
        self._cache_time = None

    # ------------------------------------------------------------------------------------ state at t
    def _state(self) -> dict:
        """Drifted conductances (and read-noise statistics) at the substrate's current time, cached."""
        sub: PCMSubstrate = self.substrate
        if self._cache_time == sub.time_s and self._cache:
            return self._cache
        cfg = sub.config
        parts = {}
        var = None
        for key, side in (("pos", self._pos), ("neg", self._neg)):
            tp = (sub.time_s - side.t_prog).clamp(min=0.0)
            g_t = side.g_prog * drift_factor(tp, side.nu, cfg.t0_s)
            if cfg.read_noise_scale > 0:
                sig = sub.read_noise_std(g_t, side.g_prog, tp)
                if cfg.read_noise == "per_time":
                    g_t = (g_t + sig * torch.randn(g_t.shape, generator=sub.generator, dtype=torch.float64)
                           ).clamp(min=0.0)
                else:
                    var = sig * sig if var is None else var + sig * sig
            parts[key] = g_t
        G = (parts["pos"] - parts["neg"])
        self._cache = {"G": G, "var": var, "typed": {}}
        self._cache_time = sub.time_s
        return self._cache

    def _alpha(self) -> torch.Tensor | None:
        """Drift-compensation scale at the current time (float64, (1,) or (out,)), or None."""
        if self._ref_cal is None:
            return None
        st = self._state()
        if "alpha" not in st:
            st["alpha"] = self._compensation_scale()
        return st["alpha"]

    def _typed(self, dtype: torch.dtype, device: torch.device):
        """The cached conductance matrices (G, var) in the compute dtype/device, tile-padded."""
        st = self._state()
        key = (dtype, str(device))
        if key not in st["typed"]:
            cfg = self.substrate.config
            n_rt = self.tile_grid[0]
            pad = n_rt * cfg.tile_rows - self.shape[0]
            G = st["G"]
            var = st["var"]
            if pad:
                G = torch.nn.functional.pad(G, (0, 0, 0, pad))
                var = torch.nn.functional.pad(var, (0, 0, 0, pad)) if var is not None else None
            # outputs are computed directly in ADC steps: fold 1/step into G and 1/step^2 into var
            u = self._output_unit()
            G = (G / u).to(dtype=dtype, device=device).reshape(n_rt, cfg.tile_rows, self.shape[1]).contiguous()
            if var is not None:
                var = (var / u**2).to(dtype=dtype, device=device).reshape(n_rt, cfg.tile_rows,
                                                                          self.shape[1]).contiguous()
            st["typed"][key] = (G, var)
        return st["typed"][key]

    def _noise_buffer(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A CPU buffer for the per-MVM noise draw, kept between calls of the same shape: a fresh 1 MB tensor
        per call costs page faults that were measured at ~10 % of a (1024 x 256) MVM on one CPU thread."""
        buf = self._noise_buf
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._noise_buf = torch.empty(shape, dtype=dtype)
        return buf

    def _dac_levels(self) -> float:
        """Input levels per sign (DAC), 1.0 for an ideal DAC (inputs then stay in [-1, 1])."""
        cfg = self.substrate.config
        return float(2 ** (cfg.dac_bits - 1) - 1) if cfg.dac_bits is not None else 1.0

    def _output_unit(self) -> float:
        """The unit of the analog core's outputs in DAC-level x normalised-conductance units: one ADC step
        (``2 adc_bound L / (2^adc_bits - 2)``), or 1 for an ideal ADC."""
        cfg = self.substrate.config
        if cfg.adc_bits is None:
            return 1.0
        return 2.0 * cfg.adc_bound * self._dac_levels() / float(2 ** cfg.adc_bits - 2)

    # ------------------------------------------------------------------------------------------ MVM
    def _analog(self, x: torch.Tensor, count_saturation: bool = True, alpha: torch.Tensor | None = None,
                allow_compile: bool = True) -> torch.Tensor:
        """The chip's MVM for a 2-D input (batch, in): returns (batch, out) in weight units.

        Works in DAC-level units (inputs are integers in [-L, L] after scaling, L = 2^(dac_bits-1) - 1) so
        that the input scale, DAC step, ADC step and drift compensation fold into one final multiply.
        ``alpha`` (drift compensation, (1,) or (out,)) is applied digitally after the ADC. The pipeline is
        :func:`_analog_core` (compiled with ``PCMConfig.compile`` unless ``allow_compile`` is False: the few
        small float64 calibration MVMs run eagerly, with the same numbers); this method draws its noise.
        """
        sub: PCMSubstrate = self.substrate
        cfg = sub.config
        dtype, device = x.dtype, x.device
        G, var = self._typed(dtype, device)
        lv = self._dac_levels()
        u = self._output_unit()  # G and var are cached in these units
        on2 = (cfg.out_noise * lv / u) ** 2
        noise = key = state = None
        if var is not None or on2 > 0:
            state = sub.generator.get_state()  # restored if the input is rejected
            if cfg.noise_source == "counter":
                key = draw_key(sub.generator).to(device)
            else:
                # randn into a kept buffer + addcmul_ in the core (torch.normal(y, std) also checks std >= 0
                # with a full reduction: 1.25 ms against 0.9 ms for 1024 x 256 outputs on one CPU thread)
                shape = (x.shape[0], G.shape[0], G.shape[2])
                noise = self._noise_buffer(torch.Size(shape), dtype).normal_(generator=sub.generator)
                if noise.device != device:
                    noise = noise.to(device)
        adc_max = float(2 ** (cfg.adc_bits - 1) - 1) if cfg.adc_bits is not None else None
        args = (x, G, var, noise, key, lv, cfg.dac_bits is not None, on2, adc_max, self.w_max * u / lv,
                alpha.to(dtype=dtype, device=device) if alpha is not None else None)
        y, sat, finite = _compiled_core(*args) if cfg.compile and allow_compile else _analog_core(*args)
        if not bool(finite):  # amax/amin of the DAC scale propagate NaN and inf
            if state is not None:
                sub.generator.set_state(state)
            raise ValueError(f"input to '{self.name}' contains NaN or inf; expected finite values")
        if count_saturation and sat is not None:
            self.adc_saturations += int(sat)
        return y

    def matmul(self, x: ArrayLike) -> ArrayLike:
        """``x @ W`` on the chip. Differentiable straight-through: forward = chip, backward = ideal W."""
        check_input(x, self.shape[0], self.name, check_finite=False)  # finiteness: from the DAC scale in _analog
        xt = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
        if not torch.is_floating_point(xt):
            xt = xt.to(torch.float32)
        lead = xt.shape[:-1]
        x2 = xt.reshape(-1, self.shape[0])
        with torch.no_grad():
            y = self._analog(x2.detach(), alpha=self._alpha())
        self._count(x)  # after _analog: a rejected input counts no MVM
        if x2.requires_grad or (isinstance(self._w_ideal, torch.Tensor) and self._w_ideal.requires_grad):
            y_ideal = x2 @ self._w_ideal.to(dtype=x2.dtype, device=x2.device)
            y = y_ideal + (y - y_ideal).detach()
        y = y.reshape(*lead, self.shape[1])
        return to_like(y, x)

    # ------------------------------------------------------------------------- drift compensation
    def _calibration_inputs(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(12345)
        n = self.substrate.config.n_calibration
        return torch.randint(0, 2, (n, self.shape[0]), generator=g, dtype=torch.int64).to(torch.float64) * 2 - 1

    def _calibration_outputs(self) -> torch.Tensor:
        """Uncompensated chip outputs (n_cal, out) for the fixed calibration inputs, at the current time."""
        self.calibration_mvms += self.substrate.config.n_calibration
        return self._analog(self._calibration_inputs(), count_saturation=False, allow_compile=False)

    def _compensation_scale(self) -> torch.Tensor:
        y = self._calibration_outputs()
        ref = self._ref_cal
        if self.substrate.config.drift_compensation == "global":
            den = y.abs().sum()
            return (ref.abs().sum() / den).reshape(1) if den > 0 else torch.ones(1, dtype=torch.float64)
        den = y.abs().sum(dim=0)
        return torch.where(den > 0, ref.abs().sum(dim=0) / den.clamp(min=1e-30), torch.ones_like(den))

    def compensation_scale(self) -> torch.Tensor | None:
        """The digital drift-compensation factor(s) applied to this array's outputs now (float64 tensor of
        shape (1,) for "global", (out,) for "per_column"), or None without compensation. An update meant to
        move the effective weights by dW is written to the devices as dW / scale."""
        alpha = self._alpha()
        return None if alpha is None else alpha.clone()

    # ----------------------------------------------------------------------------------- read/update
    def read(self, ideal: bool = False) -> ArrayLike:
        """Effective weights now: drifted conductances (with this time point's read noise when
        ``read_noise="per_time"``) mapped back to weight units, times the drift-compensation scale.
        ``ideal=True`` returns the intended weights instead (placed W plus the applied updates)."""
        if ideal:
            W = self._w_ideal
        else:
            W = self._state()["G"] * self.w_max
            alpha = self._alpha()
            if alpha is not None:
                W = W * alpha
        if self._numpy_kind:
            return W.detach().cpu().numpy().copy()
        return W

    def update(self, dW: ArrayLike) -> None:
        """Apply ``dW`` as programming pulses.

        ``dW / w_max`` is rounded to the update grid (stochastically by default); weights whose rounded
        update is 0 are untouched (their devices keep drifting from their old programming time). The others
        are re-programmed to ``base + dW_q`` (``base`` = drifted value or last target, see
        :class:`PCMConfig`), clipped to [-w_max, w_max], with fresh programming noise and drift exponents.
        With drift compensation and ``update_frame="compensated"``, dW is meant for the effective weights and
        ``dW / alpha`` is written (alpha = :meth:`compensation_scale`).
        """
        d = check_update(dW, self.shape, self.name)
        sub: PCMSubstrate = self.substrate
        cfg = sub.config
        grid = cfg.update_grid
        frame = None  # the compensation scale when dW is given in the compensated frame
        with torch.no_grad():
            d = d.detach().to(torch.float64).cpu()
            if cfg.update_frame == "compensated" and self._ref_cal is not None:
                frame = self._alpha()
                d = d / frame  # (1,) or (out,): the effective weights then move by dW
            if grid is None:  # exact programming of dW
                dq = d / self.w_max
            else:
                u = d / (self.w_max * grid)
                if cfg.update_rounding == "stochastic":
                    r = torch.rand(u.shape, generator=sub.generator, dtype=torch.float64)
                    k = torch.floor(u + r)
                else:
                    k = torch.round(u)  # round half to even
                dq = k * grid  # in units of w_max
            mask = dq != 0
            if bool(mask.any()):
                if cfg.update_base == "drifted":
                    base = self._state()["G"]
                else:
                    base = self._target
                w_new = torch.where(mask, base + dq, self._target).clamp(-1.0, 1.0)
                self._target = torch.where(mask, w_new, self._target)
                if self._ref_cal is not None:
                    # the controller knows what it wrote: move the compensation reference with it
                    applied = torch.where(mask, w_new - base, torch.zeros_like(base))
                    self._ref_cal = self._ref_cal + (self._calibration_inputs() @ applied) * self.w_max
                self._program(mask, w_new)
        wi = self._w_ideal
        dq_w = dq * self.w_max if frame is None else dq * self.w_max * frame  # in the frame dW was given in
        dq_w = dq_w.to(dtype=wi.dtype, device=wi.device)
        self._w_ideal = wi + dq_w
        self.updates += 1

    def devices(self) -> dict:
        """The device state as numpy arrays (in, out) per polarity ("plus" = G+, "minus" = G-):
        ``g_target_uS``, ``g_prog_uS`` (right after programming), ``g_now_uS`` (drifted to the current time,
        without read noise), ``nu`` (drift exponent) and ``t_prog_s`` (substrate time of the last programming)."""
        sub: PCMSubstrate = self.substrate
        cfg = sub.config
        out = {}
        for key, side in (("plus", self._pos), ("minus", self._neg)):
            tp = (sub.time_s - side.t_prog).clamp(min=0.0)
            out[key] = {
                "g_target_uS": (side.g_target * cfg.g_max_uS).numpy().copy(),
                "g_prog_uS": (side.g_prog * cfg.g_max_uS).numpy().copy(),
                "g_now_uS": (side.g_prog * drift_factor(tp, side.nu, cfg.t0_s) * cfg.g_max_uS).numpy(),
                "nu": side.nu.numpy().copy(),
                "t_prog_s": side.t_prog.numpy().copy(),
            }
        return out

    def stats(self) -> dict:
        cfg = self.substrate.config
        return {"shape": self.shape, "tiles": self.tile_grid[0] * self.tile_grid[1], "tile_grid": self.tile_grid,
                "w_max": self.w_max, "mvms": self.mvms, "macs": self.macs,
                "tile_mvms": self.mvms * self.tile_grid[0] * self.tile_grid[1],
                "column_conversions": self.mvms * self.tile_grid[0] * self.shape[1],
                "calibration_mvms": self.calibration_mvms, "updates": self.updates,
                "programming_events": self.programming_events, "adc_saturations": self.adc_saturations,
                "tile_rows": cfg.tile_rows, "tile_cols": cfg.tile_cols}


# -------------------------------------------------------------------------------------------- substrate
class PCMSubstrate(Substrate):
    """The simulated PCM chip: place weight matrices on tiles, compute MVMs, update with pulses.

    >>> sub = PCMSubstrate(PCMConfig(weight_bits=4, seed=0))
    >>> arr = sub.place("readout", W)          # W (in, out)
    >>> y = arr.matmul(x)                      # noisy analog MVM
    >>> sub.elapse(86400.0)                    # one day of drift
    """

    kind = "pcm"

    def __init__(self, config: PCMConfig | None = None, **overrides):
        super().__init__()
        cfg = config if config is not None else PCMConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        cfg.validate()
        self.config = cfg
        self.device = DEVICES[cfg.device]
        self.generator = torch.Generator().manual_seed(int(cfg.seed))

    def place(self, name: str, W: ArrayLike) -> PCMArray:
        """Program ``W`` (in_features, out_features) into tiles at the current time."""
        self._check_name(name)
        t = as_weight_tensor(W)
        state = self.generator.get_state()
        try:
            arr = PCMArray(self, name, t, numpy_kind=isinstance(W, np.ndarray))
        except Exception:
            self.generator.set_state(state)
            raise
        self.arrays[name] = arr
        return arr

    def draw_programming(self, g_target: torch.Tensor, generator: torch.Generator | None = None):
        """Program devices to normalised targets: (conductance right after programming with programming
        noise, clipped at 0; drift exponent |N(mu, sigma)| times ``drift_scale``), drawn in that order."""
        cfg, dev = self.config, self.device
        gen = generator or self.generator
        sigma = dev.prog_noise_std_uS(g_target) * (cfg.g_max_uS / dev.g_ref_uS) / cfg.g_max_uS
        noise = torch.randn(g_target.shape, generator=gen, dtype=torch.float64)
        g_p = (g_target + cfg.prog_noise_scale * sigma * noise).clamp(min=0.0)
        nu = dev.drift_mu(g_target) + dev.drift_sigma(g_target) * torch.randn(g_target.shape, generator=gen,
                                                                             dtype=torch.float64)
        return g_p, nu.abs() * cfg.drift_scale

    def read_noise_std(self, g_now: torch.Tensor, g_prog: torch.Tensor, t_since_prog_s) -> torch.Tensor:
        """Std of the 1/f read noise (normalised conductance) of devices now at ``g_now``, programmed to
        ``g_prog`` ``t_since_prog_s`` seconds ago (scaled by ``read_noise_scale``)."""
        cfg = self.config
        return (g_now * self.device.read_q_s(g_prog) * read_noise_time_factor(t_since_prog_s, cfg.t0_s, cfg.t_read_s)
                * cfg.read_noise_scale)

    def transform(self, W: torch.Tensor, generator: torch.Generator | None = None,
                  t_since_prog_s: float | None = None) -> torch.Tensor:
        """Differentiable chip realisation of ``W`` for noise-aware training (straight-through).

        Quantizes (``weight_bits``), adds programming noise, drifts to ``t_since_prog_s`` (default: the
        substrate's current time), applies read noise and the global drift compensation if configured;
        the result equals ``W`` in the backward pass. Periphery (DAC/ADC/output noise) is not included.
        """
        cfg = self.config
        gen = generator or self.generator
        t = self.time_s if t_since_prog_s is None else float(t_since_prog_s)
        with torch.no_grad():
            Wd = W.detach().to(torch.float64).cpu()
            w_max = float(cfg.w_max) if cfg.w_max is not None else (float(Wd.abs().max()) or 1.0)
            w = (Wd / w_max).clamp(-1.0, 1.0)
            if cfg.weight_bits is not None:
                w = stochastic_quantize(w, cfg.weight_bits, 1.0, gen, straight_through=False)
            G = torch.zeros_like(w)
            G_ref = torch.zeros_like(w)
            for sign, g_t in ((1.0, w.clamp(min=0.0)), (-1.0, (-w).clamp(min=0.0))):
                g_p, nu = self.draw_programming(g_t, gen)
                g_d = g_p * drift_factor(t, nu, cfg.t0_s)
                if cfg.read_noise_scale > 0:
                    sig = self.read_noise_std(g_d, g_p, t)
                    g_d = (g_d + sig * torch.randn(w.shape, generator=gen, dtype=torch.float64)).clamp(min=0.0)
                G += sign * g_d
                G_ref += sign * g_p
            if cfg.drift_compensation == "global":
                G = G * (G_ref.abs().sum() / G.abs().sum().clamp(min=1e-30))
            elif cfg.drift_compensation == "per_column":
                G = G * (G_ref.abs().sum(0) / G.abs().sum(0).clamp(min=1e-30))
            Wq = (G * w_max).to(dtype=W.dtype, device=W.device)
        return W + (Wq - W).detach() if W.requires_grad else Wq

    def report(self) -> dict:
        """Tiles per array and in total, MVMs, MACs, programming events, estimated energy (J) and latency (s)."""
        arrays = {n: a.stats() for n, a in self.arrays.items()}
        totals = {
            "tiles": sum(a["tiles"] for a in arrays.values()),
            "mvms": sum(a["mvms"] for a in arrays.values()),
            "tile_mvms": sum(a["tile_mvms"] for a in arrays.values()),
            "column_conversions": sum(a["column_conversions"] for a in arrays.values()),
            "macs": sum(a["macs"] for a in arrays.values()),
            "programming_events": sum(a["programming_events"] for a in arrays.values()),
            "adc_saturations": sum(a["adc_saturations"] for a in arrays.values()),
        }
        cost = estimate_cost(column_conversions=totals["column_conversions"], mvms=totals["mvms"],
                             programming_events=totals["programming_events"], tile_cols=self.config.tile_cols)
        return {"substrate": self.kind, "device": self.config.device, "time_s": self.time_s,
                "config": asdict(self.config), "arrays": arrays, **totals, **cost,
                "cost_constants": dict(ENERGY)}

    def __repr__(self) -> str:
        return f"PCMSubstrate(device={self.config.device!r}, arrays={list(self.arrays)}, time_s={self.time_s:g})"
