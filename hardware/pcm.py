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

What depends only on the time point -- drifted conductances (with ``read_noise="per_time"`` one noisy read),
read-noise variances, the compensation scale, their copies in each compute dtype (:class:`~.periphery.MVMPlan`)
-- is computed at the first MVM after time moves or devices are programmed, and cached; an MVM is then the
matmul(s) of its row tiles, noise, ADC and output scale (:meth:`PCMArray._analog`).

The parts live in their own modules: :mod:`~pcmeta.hardware.config` (:class:`PCMConfig`),
:mod:`~pcmeta.hardware.devices` (device statistics, drift and read noise), :mod:`~pcmeta.hardware.mapping`
(weights <-> conductances, quantization, update rounding, programming), :mod:`~pcmeta.hardware.periphery`
(tiles, DAC/ADC, the MVM pipeline) and :mod:`~pcmeta.hardware.compensation` (drift compensation); this module
holds the array and the substrate that put them together.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import torch

from .compensation import calibration_inputs, compensation_scale, moved_reference
from .config import PCMConfig
from .devices import (DEVICES, conductance_at, draw_programming, read_noise_std, read_noise_time_factor,
                      sample_read_noise)
from .energy import chip_totals, tile_counts
from .mapping import (Polarity, normalise_weights, quantize_weights, reprogram_mask, resolve_w_max,
                      round_update, split_differential)
from .periphery import (MVMPlan, Workspace, compiled_core, dac_levels, finish_mvm, scale_inputs, tile_grid,
                        tile_mvm)
from .rng import counter_normals, draw_key
from .substrate import (ArrayLike, Substrate, SynapticArray, all_finite, as_torch, check_input, check_update,
                        overflow_error, to_like)

__all__ = ["PCMConfig", "PCMArray", "PCMSubstrate"]

_CPU = torch.device("cpu")  # where the generator draws
_STD_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------ array
class PCMArray(SynapticArray):
    """A weight matrix on PCM tiles (see the module docstring for the physics)."""

    def __init__(self, substrate: "PCMSubstrate", name: str, W: torch.Tensor, numpy_kind: bool):
        super().__init__(substrate, name, tuple(W.shape), numpy_kind)
        cfg = substrate.config
        self.tile_grid = tile_grid(self.shape, cfg.tile_rows, cfg.tile_cols)
        Wd = W.detach().to(torch.float64).cpu()
        self.w_max = resolve_w_max(Wd, cfg.w_max)
        if not np.isfinite(self.w_max * cfg.g_max_uS):
            raise ValueError(f"'{name}': w_max {self.w_max:.4g} times g_max_uS {cfg.g_max_uS:g} overflows float64; "
                             "expected weights (or PCMConfig.w_max) whose product with g_max is finite")
        w = normalise_weights(Wd, self.w_max, cfg.w_max is not None, name)
        w = quantize_weights(w, cfg.weight_bits, substrate.generator)
        self.programming_events = 0
        self.adc_saturations = 0
        self.calibration_mvms = 0
        self._pos, self._neg = Polarity.erased(w), Polarity.erased(w)
        # The ideal weights: W as placed (unquantized) plus the applied updates, for read(ideal=True) and the
        # straight-through gradient; keeps W's autograd graph if it has one.
        self._w_ideal = W if (isinstance(W, torch.Tensor) and W.requires_grad) else Wd
        self._target = w.clone()  # the programmed targets in units of w_max
        self._program(torch.ones_like(w, dtype=torch.bool), w)
        # the per-sample input scaling's constants: DAC levels, DAC on, input width in whole row tiles
        self._layout = (dac_levels(cfg.dac_bits), cfg.dac_bits is not None, self.tile_grid[0] * cfg.tile_rows)
        self._counter_noise = cfg.noise_source == "counter"
        self._cache_time = None
        self._cache: dict = {}
        self._ref_cal = None
        if cfg.drift_compensation != "none":
            self._ref_cal = self._calibration_outputs()  # right after programming: the reference

    # ---------------------------------------------------------------------------------- programming
    def _program(self, mask: torch.Tensor, w_new: torch.Tensor) -> None:
        """Program the devices of the weights in ``mask`` to the normalised values ``w_new`` (in [-1, 1])."""
        sub: PCMSubstrate = self.substrate
        for side, target in zip((self._pos, self._neg), split_differential(w_new.clamp(-1.0, 1.0))):
            self.programming_events += side.program(mask, target, sub.draw_programming, sub.time_s)
        self._cache_time = None

    # ------------------------------------------------------------------------------------ state at t
    def _state(self) -> dict:
        """Drifted conductances (and read-noise statistics) at the substrate's current time, cached."""
        sub: PCMSubstrate = self.substrate
        if self._cache_time == sub.time_s and self._cache:
            return self._cache
        per_time = sub.config.read_noise == "per_time"
        parts, var = [], None
        for side in (self._pos, self._neg):
            g_t, v = sub.conductance_now(side.g_prog, side.nu, side.age(sub.time_s), sample=per_time)
            parts.append(g_t)
            var = v if var is None else var + v
        # "sides": the drifted (G+, G-) without read noise, kept when they are that (no per-time noise sample)
        # "ready": per (dtype, device, compensated) the MVMPlan, alpha in that dtype and max|alpha| (_prepare)
        self._cache = {"G": parts[0] - parts[1], "var": var, "ready": {}, "sides": None if per_time else parts}
        self._cache_time = sub.time_s
        return self._cache

    def _alpha(self) -> torch.Tensor | None:
        """Drift-compensation scale at the current time (float64, (1,) or (out,)), or None."""
        if self._ref_cal is None:
            return None
        st = self._state()
        if "alpha" not in st:
            st["alpha"] = compensation_scale(self._ref_cal, self._calibration_outputs(),
                                             self.substrate.config.drift_compensation)
        return st["alpha"]

    def _prepare(self, dtype: torch.dtype, device: torch.device, compensate: bool) -> tuple:
        """(MVMPlan, alpha in the compute dtype or None, max|alpha| (1.0 without)) at the current time, cached
        until time moves or devices are programmed. May draw from the generator (per-time read noise, the
        calibration MVMs of the compensation scale)."""
        st = self._state()
        plans = st.setdefault("plans", {})
        plan = plans.get((dtype, device))
        if plan is None:
            plan = plans[(dtype, device)] = MVMPlan(st["G"], st["var"], self.substrate.config, self.w_max, dtype,
                                                    device)
        alpha, amax = None, 1.0
        if compensate and self._ref_cal is not None:
            alpha = self._alpha().to(dtype=dtype, device=device)
            amax = float(alpha.abs().max())
        ready = self._cache["ready"][(dtype, device, compensate)] = (plan, alpha, amax)
        return ready

    def _snapshot(self) -> tuple:
        """What an MVM or update may change before it is refused: the generator, the calibration count, whether
        the time point's state and compensation scale were cached (drawn before, kept by :meth:`_rollback`)."""
        sub: PCMSubstrate = self.substrate
        cached = self._cache_time == sub.time_s and bool(self._cache)
        return sub.generator.get_state(), self.calibration_mvms, cached, cached and "alpha" in self._cache

    def _rollback(self, snap: tuple) -> None:
        """Undo what a refused MVM or update drew since :meth:`_snapshot`."""
        state, cal_mvms, cached, had_alpha = snap
        self.substrate.generator.set_state(state)
        self.calibration_mvms = cal_mvms
        if not cached:
            self._cache_time = None  # drawn with the generator's state just restored: draw it again
        elif not had_alpha:
            self._forget_alpha()

    def _forget_alpha(self) -> None:
        self._cache.pop("alpha", None)
        self._cache["ready"] = {}

    def _nonfinite_error(self) -> ValueError:
        return ValueError(f"input to '{self.name}' contains NaN or inf; expected finite values")

    # ------------------------------------------------------------------------------------------ MVM
    def _analog(self, x: torch.Tensor, count_saturation: bool = True, compensate: bool = False,
                allow_compile: bool = True) -> torch.Tensor:
        """The chip's MVM for a 2-D input (batch >= 1, in): returns (batch, out) in weight units, drift-compensated
        (digitally, after the ADC) if ``compensate``.

        Eager: :func:`~pcmeta.hardware.periphery.scale_inputs`, :func:`~.periphery.tile_mvm` and
        :func:`~.periphery.finish_mvm` (the numbers of :func:`~.periphery.analog_core`); with ``PCMConfig.compile``
        (unless ``allow_compile`` is False: the few small float64 calibration MVMs run eagerly)
        :func:`~.periphery.compiled_core`. Refused inputs (NaN/inf, an overflowing result) raise ``ValueError``
        and leave the generator and the array as they were.
        """
        sub: PCMSubstrate = self.substrate
        if sub.config.compile and allow_compile:
            return self._analog_compiled(x, count_saturation, compensate)
        dtype, device = x.dtype, x.device
        key, snap = (dtype, device, compensate), None
        ready = self._cache["ready"].get(key) if self._cache_time == sub.time_s and self._cache else None
        if ready is None:  # a new time point (or dtype): check the input before anything is drawn
            if not all_finite(x):
                raise self._nonfinite_error()
            snap = self._snapshot()
            ready = self._prepare(dtype, device, compensate)
        plan, alpha, amax = ready
        ws = sub.workspace
        scaled = scale_inputs(x, *self._layout, ws)
        if scaled is None:
            raise self._nonfinite_error()
        xq, scale, smax = scaled
        safe = plan.safe(smax, amax)  # else the result is checked, and the generator restored if it overflows
        if not safe and snap is None:
            snap = self._snapshot()
        noise, noise_std = None, 1.0
        if plan.var is not None or plan.on2 > 0:  # drawn as (B, n_rt, out), kept 2-D for one row tile
            shape = (x.shape[0], plan.out_features) if plan.n_rt == 1 else (x.shape[0], plan.n_rt, plan.out_features)
            if self._counter_noise:
                noise = counter_normals(draw_key(sub.generator).to(device), shape, dtype)
            else:  # output noise alone: its std drawn in (normal_() * std's numbers: 16 numbers on, float32/64)
                std = (plan.noise_std if plan.var is None and math.prod(shape) >= 16 and dtype in _STD_DTYPES
                       else 1.0)
                noise = ws.get("noise", shape, dtype, _CPU).normal_(0.0, std, generator=sub.generator)
                noise = noise.to(device) if device.type != "cpu" else noise
                noise_std = std
        y, v = tile_mvm(xq, plan, ws)
        y, sat = finish_mvm(y, v, noise, plan, scale, alpha, noise_std)
        if not safe and not all_finite(y):
            self._rollback(snap)
            raise overflow_error(self.name, y.dtype)
        if count_saturation and sat is not None:
            self.adc_saturations += int(sat)
        return y

    def _analog_compiled(self, x: torch.Tensor, count_saturation: bool, compensate: bool) -> torch.Tensor:
        """:meth:`_analog` through :func:`~pcmeta.hardware.periphery.compiled_core` (counter-based noise; the
        input is checked inside the graph, after the noise key is drawn: the generator is restored if it is
        refused)."""
        sub: PCMSubstrate = self.substrate
        snap = self._snapshot()
        ready = (self._cache["ready"].get((x.dtype, x.device, compensate))
                 if self._cache_time == sub.time_s and self._cache else None)
        plan, alpha, _ = ready or self._prepare(x.dtype, x.device, compensate)
        key = draw_key(sub.generator).to(x.device) if plan.var is not None or plan.on2 > 0 else None
        y, sat, finite = compiled_core(x, plan.G, plan.var, None, key, plan.lv, plan.dac, plan.on2, plan.adc_max,
                                       plan.out_unit, alpha)
        if not bool(finite) or not all_finite(y):  # amax/amin of the DAC scale propagate NaN and inf
            self._rollback(snap)
            if not bool(finite):
                raise self._nonfinite_error()
            raise overflow_error(self.name, y.dtype)
        if count_saturation and sat is not None:
            self.adc_saturations += int(sat)
        return y

    def matmul(self, x: ArrayLike) -> ArrayLike:
        """``x @ W`` on the chip. Differentiable straight-through: forward = chip, backward = ideal W."""
        x = check_input(x, self.shape[0], self.name, check_finite=False)  # finiteness: from the DAC scale in _analog
        xt = as_torch(x)
        x2 = xt if xt.ndim == 2 else xt.reshape(-1, self.shape[0])
        if x2.shape[0] == 0:  # an empty batch: nothing to convert, no noise drawn
            y = torch.zeros((0, self.shape[1]), dtype=x2.dtype, device=x2.device)
        else:  # no autograd graph: every tensor of the pipeline is detached
            y = self._analog(x2.detach() if x2.requires_grad else x2, compensate=True)
        self._count(x)  # after _analog: a rejected input counts no MVM
        if x2.requires_grad or self._w_ideal.requires_grad:
            y_ideal = x2 @ self._w_ideal.to(dtype=x2.dtype, device=x2.device)
            y = y_ideal + (y - y_ideal).detach()
        if xt.ndim != 2:
            y = y.reshape(*xt.shape[:-1], self.shape[1])
        return to_like(y, x)

    # ------------------------------------------------------------------------- drift compensation
    def _calibration_outputs(self) -> torch.Tensor:
        """Uncompensated chip outputs (n_cal, out) for the fixed calibration inputs, at the current time."""
        n = self.substrate.config.n_calibration
        self.calibration_mvms += n
        return self._analog(calibration_inputs(n, self.shape[0]), count_saturation=False, allow_compile=False)

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
        ``dW / alpha`` is written (alpha = :meth:`compensation_scale`); the compensation reference moves by the
        measured conductance change of the re-programmed devices (:meth:`_write`), so that repeated updates do not
        accumulate programming noise in it. A ``dW`` whose ``dW / w_max`` or new ideal weights overflow raises
        ``ValueError`` (nothing changes).
        """
        d = check_update(dW, self.shape, self.name)
        sub: PCMSubstrate = self.substrate
        cfg = sub.config
        frame = None  # the compensation scale when dW is given in the compensated frame
        # rolled back if dW is refused below: the generator (update rounding, a calibration for alpha) and alpha
        snap = self._snapshot()
        wi = self._w_ideal
        with torch.no_grad():
            d = d.detach().to(torch.float64).cpu()
            if cfg.update_frame == "compensated" and self._ref_cal is not None:
                frame = self._alpha()
                d = d / frame  # (1,) or (out,): the effective weights then move by dW
            dq = round_update(d, self.w_max, cfg.update_grid, cfg.update_rounding, sub.generator)
            dq_w = dq * self.w_max if frame is None else dq * self.w_max * frame  # in the frame dW was given in
            error = None
            if not all_finite(dq):
                error = overflow_error(self.name, dq.dtype, f"the update dW / w_max (w_max {self.w_max:.4g})",
                                       "|dW| small enough that dW / w_max (divided by the update grid) is finite")
            elif not all_finite(wi.detach() + dq_w.to(dtype=wi.dtype, device=wi.device)):
                error = overflow_error(self.name, wi.dtype, "the ideal weights W + dW",
                                       "weights that stay finite")
            if error is not None:
                self._rollback(snap)
                raise error
            self._write(dq)
        self._w_ideal = wi + dq_w.to(dtype=wi.dtype, device=wi.device)
        self.updates += 1

    def _write(self, dq: torch.Tensor) -> None:
        """Re-program the weights with a non-zero rounded update ``dq`` (units of w_max) to base + dq."""
        mask = dq != 0
        if not bool(mask.any()):
            return
        sub: PCMSubstrate = self.substrate
        cfg = sub.config
        base = self._state()["G"] if cfg.update_base == "drifted" else self._target
        w_new = torch.where(mask, base + dq, self._target).clamp(-1.0, 1.0)
        self._target = torch.where(mask, w_new, self._target)
        if self._ref_cal is None:
            self._program(mask, w_new)
            return
        # Drift compensation: the reference moves by the conductance change the controller measures on the devices
        # it re-programs, right after programming minus right before -- before: the drifted value it read and
        # built the new target on ("drifted" base; the drift loss the new target inherits stays compensated) or
        # the value right after the device's previous programming ("target" base). Read without read noise. The
        # reference is then the placement calibration plus the change of the programmed conductances (and the
        # inherited drift losses): the devices' programming noise cannot add up in it over repeated updates.
        drifted = self._state()["sides"] if cfg.update_base == "drifted" else None
        before = []
        for i, (side, target) in enumerate(zip((self._pos, self._neg), split_differential(w_new))):
            sel = reprogram_mask(mask, target, side.g_target)  # the devices Polarity.program will program
            if cfg.update_base == "target":
                old = side.g_prog.clone()
            else:  # new tensors, not views of the device state that _program changes
                old = drifted[i] if drifted is not None else side.now(sub.time_s, cfg.t0_s)
            before.append((sel, old))
        self._program(mask, w_new)
        (sel_p, old_p), (sel_n, old_n) = before
        zero = torch.zeros_like(w_new)
        applied = (torch.where(sel_p, self._pos.g_prog - old_p, zero)
                   - torch.where(sel_n, self._neg.g_prog - old_n, zero))
        inputs = calibration_inputs(cfg.n_calibration, self.shape[0])
        self._ref_cal = moved_reference(self._ref_cal, inputs, applied, self.w_max)

    def devices(self) -> dict:
        """The device state as numpy arrays (in, out) per polarity ("plus" = G+, "minus" = G-):
        ``g_target_uS``, ``g_prog_uS`` (right after programming), ``g_now_uS`` (drifted to the current time,
        without read noise), ``nu`` (drift exponent) and ``t_prog_s`` (substrate time of the last programming)."""
        sub: PCMSubstrate = self.substrate
        g_max = sub.config.g_max_uS
        out = {}
        for key, side in (("plus", self._pos), ("minus", self._neg)):
            out[key] = {
                "g_target_uS": (side.g_target * g_max).numpy().copy(),
                "g_prog_uS": (side.g_prog * g_max).numpy().copy(),
                "g_now_uS": (side.now(sub.time_s, sub.config.t0_s) * g_max).numpy(),
                "nu": side.nu.numpy().copy(),
                "t_prog_s": side.t_prog.numpy().copy(),
            }
        return out

    def stats(self) -> dict:
        cfg = self.substrate.config
        return {"shape": self.shape, "w_max": self.w_max, "mvms": self.mvms, "macs": self.macs,
                **tile_counts(self.shape, self.tile_grid, self.mvms),
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
        self.workspace = Workspace()  # the MVMs' scratch tensors, shared by the arrays (.clear() frees them)

    def place(self, name: str, W: ArrayLike) -> PCMArray:
        """Program ``W`` (in_features, out_features) into tiles at the current time."""
        return self._place_new(name, W, lambda t, numpy_kind: PCMArray(self, name, t, numpy_kind))

    def _check_time(self, total_s: float) -> None:
        """The 1/f read noise grows as ``sqrt(ln((t + t0 + t_read) / (2 t_read)))``: refuse times where it overflows
        (beyond ~1e302 s with the default t_read)."""
        cfg = self.config
        if not np.isfinite(read_noise_time_factor(total_s, cfg.t0_s, cfg.t_read_s)):
            limit = 2 * cfg.t_read_s * np.finfo(np.float64).max
            raise ValueError(f"elapse(): a total time of {total_s:g} s is beyond what the device model can evaluate "
                             f"(its read noise overflows); expected at most {limit:.3g} s")

    def draw_programming(self, g_target: torch.Tensor, generator: torch.Generator | None = None):
        """Program devices to normalised targets: (conductance right after programming with programming
        noise, clipped at 0; drift exponent |N(mu, sigma)| times ``drift_scale``), drawn in that order."""
        cfg = self.config
        return draw_programming(self.device, g_target, generator or self.generator, cfg.g_max_uS,
                                cfg.prog_noise_scale, cfg.drift_scale)

    def read_noise_std(self, g_now: torch.Tensor, g_prog: torch.Tensor, t_since_prog_s) -> torch.Tensor:
        """Std of the 1/f read noise (normalised conductance) of devices now at ``g_now``, programmed to
        ``g_prog`` ``t_since_prog_s`` seconds ago (scaled by ``read_noise_scale``)."""
        cfg = self.config
        return read_noise_std(self.device, g_now, g_prog, t_since_prog_s, cfg.t0_s, cfg.t_read_s,
                              cfg.read_noise_scale)

    def conductance_now(self, g_prog: torch.Tensor, nu: torch.Tensor, t_since_prog_s, sample: bool,
                        generator: torch.Generator | None = None):
        """Normalised conductances of devices programmed to ``g_prog`` with drift exponents ``nu``,
        ``t_since_prog_s`` seconds ago: (drifted conductance, read-noise variance) -- with ``sample=True`` one
        noisy read (normals from ``generator``, default the substrate's) and no variance; the variance is None
        without read noise."""
        g = conductance_at(g_prog, nu, t_since_prog_s, self.config.t0_s)
        if self.config.read_noise_scale <= 0:
            return g, None
        sig = self.read_noise_std(g, g_prog, t_since_prog_s)
        if sample:
            return sample_read_noise(g, sig, generator or self.generator), None
        return g, sig * sig

    def transform(self, W: torch.Tensor, generator: torch.Generator | None = None,
                  t_since_prog_s: float | None = None) -> torch.Tensor:
        """Differentiable chip realisation of ``W`` for noise-aware training (straight-through).

        Quantizes (``weight_bits``), adds programming noise, drifts to ``t_since_prog_s`` (default: the
        substrate's current time), applies read noise and the drift compensation if configured (the
        conductance-level analogue of the calibration: one scale restoring the programmed absolute sum);
        the result equals ``W`` in the backward pass. Periphery (DAC/ADC/output noise) is not included.
        """
        cfg = self.config
        gen = generator or self.generator
        t = self.time_s if t_since_prog_s is None else float(t_since_prog_s)
        with torch.no_grad():
            Wd = W.detach().to(torch.float64).cpu()
            w_max = resolve_w_max(Wd, cfg.w_max)
            w = (Wd / w_max).clamp(-1.0, 1.0)
            w = quantize_weights(w, cfg.weight_bits, gen)
            G, G_ref = torch.zeros_like(w), torch.zeros_like(w)
            for sign, g_t in zip((1.0, -1.0), split_differential(w)):
                g_p, nu = self.draw_programming(g_t, gen)
                g_d, _ = self.conductance_now(g_p, nu, t, sample=True, generator=gen)
                G += sign * g_d
                G_ref += sign * g_p
            if cfg.drift_compensation != "none":
                G = G * compensation_scale(G_ref, G, cfg.drift_compensation)
            Wq = (G * w_max).to(dtype=W.dtype, device=W.device)
        return W + (Wq - W).detach() if W.requires_grad else Wq

    def report(self) -> dict:
        """Tiles per array and in total, MVMs, MACs, programming events, estimated energy (J) and latency (s)."""
        arrays = {n: a.stats() for n, a in self.arrays.items()}
        return {"substrate": self.kind, "device": self.config.device, "time_s": self.time_s,
                "config": asdict(self.config), "arrays": arrays, **chip_totals(arrays, self.config.tile_cols)}

    def __repr__(self) -> str:
        return f"PCMSubstrate(device={self.config.device!r}, arrays={list(self.arrays)}, time_s={self.time_s:g})"
