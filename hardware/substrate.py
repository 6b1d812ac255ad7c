"""The Substrate abstraction: where an agent's weight matrices live.

An agent never holds a deployed weight matrix as a plain tensor; it places it on a substrate and gets a
:class:`SynapticArray` back::

    sub = SoftwareSubstrate(bits=None)      # or PCMSubstrate(PCMConfig(...))
    arr = sub.place("conv2", W)             # W: (in_features, out_features), numpy or torch
    y = arr.matmul(x)                       # x: (..., in_features) -> (..., out_features)
    arr.update(dW)                          # an in-place update as the substrate can apply it
    W_now = arr.read()                      # effective weights now
    sub.elapse(3600.0)                      # simulated time passes (seconds)
    sub.report()                            # counters and estimated cost

Conventions shared by every substrate (software, PCM, the authors' arm model, a deployment):

- ``matmul`` input contract (:func:`check_input`): ``x`` is a numpy array or torch tensor of shape
  ``(..., in_features)`` (1-D ``(in_features,)`` and any number of leading dimensions, including empty ones:
  an empty batch gives an empty ``(..., 0, out_features)`` result) with finite values. Accepted dtypes: real
  floats (numpy float16/32/64; torch float16, bfloat16, float32, float64) as they are; integers and bool are
  converted to floating point first (numpy: float64; torch: ``torch.get_default_dtype()``, float32 unless
  changed) and the result has that dtype. Complex inputs (and any other dtype) are refused with a
  ``ValueError``: nothing is dropped silently.
- ``matmul`` returns the type of ``x`` (numpy in, numpy out; torch in, torch out with ``x``'s (converted)
  dtype and device); ``read`` returns the kind the weights were placed as. The result is finite for any
  finite input: an input whose result overflows the dtype raises a ``ValueError`` (never inf or NaN).
- Weights and updates must be finite and stay finite: a ``place`` or ``update`` whose weights (or their
  products with the substrate's scales, e.g. ``w_max * g_max``) would overflow raises a ``ValueError``;
  ``elapse`` refuses a total time that is not finite (or that the device model cannot evaluate).
- Bad input raises ``ValueError`` naming what was expected; a failed ``place``, ``update``, ``matmul`` or
  ``elapse`` leaves the substrate unchanged.
- :meth:`Substrate.transform` gives a *differentiable* realisation of a weight tensor for training
  (quantization- or noise-aware training); gradients pass straight through the non-differentiable parts.
"""
from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # numpy.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------- checks
def as_weight_tensor(W: ArrayLike, what: str = "W") -> torch.Tensor:
    """Validate a weight matrix (2-D, finite) and return it as a torch tensor (no copy for torch input)."""
    if isinstance(W, np.ndarray):
        if not np.issubdtype(W.dtype, np.number) or np.iscomplexobj(W):
            raise ValueError(f"{what} must be a real numeric array, got dtype {W.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(W, dtype=np.float64))
    elif isinstance(W, torch.Tensor):
        if not torch.is_floating_point(W):
            raise ValueError(f"{what} must be a floating-point tensor, got dtype {W.dtype}")
        t = W
    else:
        raise ValueError(f"{what} must be a numpy array or torch tensor of shape (in, out), got {type(W).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{what} must be 2-D (in_features, out_features), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{what} must have at least one row and one column, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{what} contains NaN or inf; expected finite values")
    return t


_NUMPY_FLOATS = (np.float16, np.float32, np.float64)
_TORCH_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TORCH_INTEGERS = tuple(getattr(torch, n) for n in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16",
                                                    "uint32", "uint64") if hasattr(torch, n))
_ACCEPTED = "a real float (float16, float32, float64; torch also bfloat16), integer or bool dtype"


def _refuse_dtype(dtype, name: str) -> ValueError:
    hint = "; pass x.real to drop the imaginary part" if "complex" in str(dtype) else ""
    return ValueError(f"input to '{name}' must have {_ACCEPTED}, got dtype {dtype}{hint}")


def check_input(x: ArrayLike, in_features: int, name: str, check_finite: bool = True) -> ArrayLike:
    """Validate an MVM input against the substrate input contract (module docstring) and return it ready to
    compute: ``x`` itself for a float dtype; integers and bool converted to float (numpy: float64, torch:
    ``torch.get_default_dtype()``). Raises ``ValueError`` for other dtypes (complex included), a shape that is
    not ``(..., in_features)`` and NaN/inf values (``check_finite=False``: the caller checks finiteness, e.g.
    from a reduction it computes anyway)."""
    # A sum is NaN/inf when any element is; only then (or on overflow) look at every element.
    if isinstance(x, np.ndarray):
        dt = x.dtype
        if dt.type in _NUMPY_FLOATS:
            if not dt.isnative:
                x = x.astype(dt.newbyteorder("="))
        elif dt.type is np.bool_ or np.issubdtype(dt, np.integer):
            x = x.astype(np.float64)
        else:
            raise _refuse_dtype(dt, name)
        shape = x.shape
        with np.errstate(over="ignore", invalid="ignore"):
            finite = not check_finite or bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())
    elif isinstance(x, torch.Tensor):
        if x.dtype in _TORCH_INTEGERS:
            x = x.to(torch.get_default_dtype())
        elif x.dtype not in _TORCH_FLOATS:
            raise _refuse_dtype(x.dtype, name)
        shape = tuple(x.shape)
        finite = not check_finite or all_finite(x)
    else:
        raise ValueError(f"input to '{name}' must be a numpy array or torch tensor, got {type(x).__name__}")
    if len(shape) < 1 or shape[-1] != in_features:
        raise ValueError(f"input to '{name}' must have shape (..., {in_features}), got {tuple(shape)}")
    if not finite:
        raise ValueError(f"input to '{name}' contains NaN or inf; expected finite values")
    return x


def as_torch(x: ArrayLike) -> torch.Tensor:
    """A checked input (:func:`check_input`) as a torch tensor; numpy arrays are shared, not copied (a copy only
    for negative strides, which torch cannot view)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x if all(st >= 0 for st in x.strides) else np.ascontiguousarray(x))
    return x


def all_finite(t: ArrayLike) -> bool:
    """Whether every element of a numpy array or torch tensor is finite (a sum first: one pass when they are)."""
    if isinstance(t, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(t.sum())) or bool(np.isfinite(t).all())
    t = t.detach()
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


def overflow_error(name: str, dtype, what: str = "x @ W",
                   expected: str = "inputs and weights whose products fit in it") -> ValueError:
    """The one-line ValueError of an operation on finite values of array ``name`` whose result ``what``
    overflows ``dtype`` (inf or NaN)."""
    dtype = str(dtype).replace("torch.", "")
    return ValueError(f"'{name}': {what} overflows {dtype} (inf or NaN from finite values); expected {expected}")


def check_update(dW: ArrayLike, shape: tuple[int, int], name: str) -> torch.Tensor:
    t = as_weight_tensor(dW, what=f"update dW of '{name}'")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"update dW of '{name}' must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def check_bits(bits: int | None, what: str = "bits") -> None:
    if bits is None:
        return
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 16:
        raise ValueError(f"{what} must be None or an integer in 1..16, got {bits!r}")


# ------------------------------------------------------------------------------------------- quantizer
def stochastic_quantize(w: torch.Tensor, bits: int, w_max: float = 1.0, generator: torch.Generator | None = None,
                        straight_through: bool = True) -> torch.Tensor:
    """The paper's stochastic N-bit quantizer (SPEC section 1), with a straight-through gradient.

    With ``m = 2^(bits-1)``: ``w_q = w_max * clip(round(w/w_max * m + U(-0.5, 0.5)), -m, m-1) / m``,
    i.e. ``2^bits`` levels in ``[-w_max, w_max (1 - 1/m)]`` with step ``w_max/m`` (16 levels of step 1/8 at
    4 bits). The rounding is stochastic and unbiased inside the range. Backward: identity (STE).
    """
    check_bits(bits)
    m = float(2 ** (int(bits) - 1))
    with torch.no_grad():
        u = torch.rand(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device) - 0.5
        q = torch.clamp(torch.round(w.detach() / w_max * m + u), -m, m - 1.0) * (w_max / m)
    if straight_through and w.requires_grad:
        return w + (q - w).detach()
    return q


def to_like(y: torch.Tensor, like: ArrayLike) -> ArrayLike:
    """Return ``y`` as the kind of ``like`` (numpy or torch)."""
    if isinstance(like, np.ndarray):
        return y.detach().cpu().numpy()
    return y


# -------------------------------------------------------------------------------------------- base API
class SynapticArray(abc.ABC):
    """A weight matrix of shape (in_features, out_features) stored on a substrate."""

    def __init__(self, substrate: "Substrate", name: str, shape: tuple[int, int], numpy_kind: bool):
        self.substrate = substrate
        self.name = name
        self.shape = (int(shape[0]), int(shape[1]))
        self._numpy_kind = numpy_kind
        self.mvms = 0       # input vectors processed
        self.macs = 0       # multiply-accumulates performed
        self.updates = 0    # calls to update()

    @property
    def in_features(self) -> int:
        return self.shape[0]

    @property
    def out_features(self) -> int:
        return self.shape[1]

    def _count(self, x: ArrayLike) -> None:
        n = math.prod(x.shape[:-1])  # 1 for a 1-D x
        self.mvms += n
        self.macs += n * self.shape[0] * self.shape[1]

    @abc.abstractmethod
    def matmul(self, x: ArrayLike) -> ArrayLike:
        """``x @ W`` as the substrate computes it; ``x``: (..., in_features) -> (..., out_features)."""

    @abc.abstractmethod
    def read(self) -> ArrayLike:
        """The effective weights now, (in_features, out_features)."""

    @abc.abstractmethod
    def update(self, dW: ArrayLike) -> None:
        """Apply ``W += dW`` as the substrate can."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shape={self.shape})"


class Substrate(abc.ABC):
    """A place for weight matrices: exact software or a simulated chip."""

    kind = "abstract"

    def __init__(self) -> None:
        self.arrays: dict[str, SynapticArray] = {}
        self.time_s = 0.0

    def __getitem__(self, name: str) -> SynapticArray:
        try:
            return self.arrays[name]
        except KeyError:
            raise KeyError(f"no array named {name!r} on this substrate; placed: {sorted(self.arrays)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"array name must be a non-empty string, got {name!r}")
        if name in self.arrays:
            raise ValueError(f"an array named {name!r} is already placed; use another name or remove() it first")

    @abc.abstractmethod
    def place(self, name: str, W: ArrayLike) -> SynapticArray:
        """Store ``W`` (in_features, out_features) under ``name`` and return its :class:`SynapticArray`."""

    def _place_new(self, name: str, W: ArrayLike, make) -> SynapticArray:
        """``place`` for implementations: check ``name`` and ``W``, build the array with
        ``make(W as a tensor, numpy_kind)`` and register it. If building fails, the substrate's ``generator``
        (if it has one) is restored and nothing is registered."""
        self._check_name(name)
        t = as_weight_tensor(W)
        gen = getattr(self, "generator", None)
        state = gen.get_state() if isinstance(gen, torch.Generator) else None
        try:
            arr = make(t, isinstance(W, np.ndarray))
        except Exception:
            if state is not None:
                gen.set_state(state)
            raise
        self.arrays[name] = arr
        return arr

    def remove(self, name: str) -> None:
        """Free the array ``name`` (its tiles become available again)."""
        del self.arrays[self[name].name]

    def elapse(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (>= 0; the total time must stay finite)."""
        self.time_s = self._time_after(seconds)

    def _time_after(self, seconds: float) -> float:
        """The substrate time after ``elapse(seconds)``, checked: ``ValueError`` if ``seconds`` is not a finite
        number >= 0, if the total overflows, or if the substrate cannot evaluate it (:meth:`_check_time`)."""
        try:
            s = float(seconds)
        except (TypeError, ValueError):
            s = float("nan")
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"elapse() needs a finite, non-negative number of seconds, got {seconds!r}")
        total = self.time_s + s
        if not np.isfinite(total):
            raise ValueError(f"elapse({seconds!r}): the total time {self.time_s:g} s + {s:g} s overflows; expected a "
                             "finite total number of seconds")
        self._check_time(total)
        return total

    def _check_time(self, total_s: float) -> None:
        """Raise ``ValueError`` if the substrate cannot be evaluated at time ``total_s`` (finite; s)."""

    def transform(self, W: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable realisation of ``W`` for training (identity by default)."""
        return W

    @abc.abstractmethod
    def report(self) -> dict:
        """Counters (arrays, MVMs, MACs, ...) and estimated cost."""


# ------------------------------------------------------------------------------------ software substrate
class SoftwareArray(SynapticArray):
    """Weights in software: ``_shadow`` is the full-precision value, ``_W`` the realised weights used by
    ``matmul``/``read`` (the shadow itself, or its stochastic quantization when the substrate has ``bits``)."""

    def __init__(self, substrate: "SoftwareSubstrate", name: str, W: torch.Tensor, numpy_kind: bool):
        super().__init__(substrate, name, tuple(W.shape), numpy_kind)
        self._shadow = W
        self._W = substrate._write(W)

    def matmul(self, x: ArrayLike) -> ArrayLike:
        x = check_input(x, self.shape[0], self.name)
        if isinstance(x, np.ndarray):
            W = self._W.detach().cpu().numpy()
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is raised below
                y = x @ W.astype(np.result_type(x.dtype, np.float32), copy=False)
        else:
            y = x @ self._W.to(dtype=x.dtype, device=x.device)
        if not all_finite(y):
            raise overflow_error(self.name, y.dtype)
        self._count(x)
        return y

    def read(self) -> ArrayLike:
        return self._W.detach().cpu().numpy().copy() if self._numpy_kind else self._W

    def update(self, dW: ArrayLike) -> None:
        d = check_update(dW, self.shape, self.name).to(device=self._shadow.device, dtype=self._shadow.dtype)
        shadow = self._shadow + d
        if not all_finite(shadow):
            raise overflow_error(self.name, shadow.dtype, "the update W + dW", "weights that stay finite")
        self._W = self.substrate._write(shadow)
        self._shadow = shadow
        self.updates += 1


class SoftwareSubstrate(Substrate):
    """Exact floating-point weights, optionally the paper's stochastic ``bits``-bit model.

    Parameters
    ----------
    bits:
        ``None`` for float weights, or 1..16 for the paper's stochastic quantizer (SPEC section 1). As in the
        paper's 4-bit software model, each array keeps its full-precision value (updates accumulate there)
        and computes with its quantization, drawn afresh whenever the array is written (``place``/``update``),
        with a straight-through gradient.
    w_max:
        Weight range of the quantizer (levels ``k * w_max / 2^(bits-1)``); 1.0 as in the paper.
    seed:
        Seed of the quantizer's random rounding.

    With torch weights that require grad, ``place`` keeps the autograd graph (no copy, no detach) and
    ``update`` adds out of place, so an inner loop written with ``update`` is differentiable (MAML).
    """

    kind = "software"

    def __init__(self, bits: int | None = None, w_max: float = 1.0, seed: int = 0):
        super().__init__()
        check_bits(bits)
        if not np.isfinite(w_max) or w_max <= 0:
            raise ValueError(f"w_max must be a positive finite number, got {w_max!r}")
        self.bits = None if bits is None else int(bits)
        self.w_max = float(w_max)
        self.generator = torch.Generator().manual_seed(int(seed))

    def _write(self, W: torch.Tensor) -> torch.Tensor:
        if self.bits is None:
            return W
        return stochastic_quantize(W, self.bits, self.w_max, self.generator)

    def place(self, name: str, W: ArrayLike) -> SoftwareArray:
        return self._place_new(name, W, lambda t, numpy_kind: SoftwareArray(self, name, t, numpy_kind))

    def transform(self, W: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh stochastic quantization of ``W`` (straight-through) if ``bits`` is set, else ``W``."""
        if self.bits is None:
            return W
        return stochastic_quantize(W, self.bits, self.w_max, generator or self.generator)

    def report(self) -> dict:
        arrays = {n: {"shape": a.shape, "mvms": a.mvms, "macs": a.macs, "updates": a.updates}
                  for n, a in self.arrays.items()}
        return {
            "substrate": self.kind,
            "bits": self.bits,
            "time_s": self.time_s,
            "arrays": arrays,
            "mvms": sum(a.mvms for a in self.arrays.values()),
            "macs": sum(a.macs for a in self.arrays.values()),
        }

    def __repr__(self) -> str:
        return f"SoftwareSubstrate(bits={self.bits}, arrays={list(self.arrays)})"
