"""Configuration of a simulated PCM crossbar: :class:`PCMConfig` (every knob of :mod:`pcmeta.hardware.pcm`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .devices import DEVICES
from .substrate import check_bits

_COMPENSATIONS = ("none", "global", "per_column")
_READ_NOISE = ("per_mvm", "per_time")
_ROUNDING = ("stochastic", "nearest")
_UPDATE_BASE = ("drifted", "target")
_UPDATE_FRAME = ("device", "compensated")
_NOISE_RNG = ("torch", "counter")


@dataclass(frozen=True)
class PCMConfig:
    """Configuration of a simulated PCM crossbar (units in the names; 0 turns each noise off).

    Frozen: every value is validated once, at construction; change one with :meth:`replace`
    (``cfg.replace(weight_bits=4)``), which validates the new value.

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
