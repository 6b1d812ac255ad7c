"""Counter-based Gaussian noise for the analog MVM: the same numbers eager or compiled, on any device.

``torch.Tensor.normal_`` draws from the substrate's Mersenne-Twister generator one number at a time; that is
the largest single cost of a PCM MVM after the two matmuls, and ``torch.compile`` cannot fuse it. This module
draws noise from a *counter-based* stream instead: output ``i`` of a stream keyed by ``k`` is a pure function
of ``(k, i)``, written in plain integer and float torch ops, so that the compiled pipeline computes it inside
the same fused kernel as the rest of the MVM and an eager run gives bit-identical numbers.

The stream is SplitMix64 (Steele, Lea & Flood 2014, the generator behind Java's ``SplittableRandom``) started
from the state ``k * gamma``: word ``i`` is ``mix64((k + i + 1) * gamma)``, gamma = 0x9E3779B97F4A7C15, all
arithmetic modulo 2^64. Each 64-bit word
gives two 24-bit uniforms and, by Box-Muller, two standard normals (``r cos(a)`` for the first half of the
outputs, ``r sin(a)`` for the second half). Like ``normal_`` (24-bit uniforms) the largest magnitude it can
produce is about 5.9 standard deviations. One key is drawn per MVM from the substrate's generator, so the
noise stays reproducible from ``PCMConfig.seed``; two MVMs share words only if their keys fall within
``n/2`` steps of each other on the 2^64 cycle (probability ~1e-14 per pair for a 1024 x 256 MVM).
"""
from __future__ import annotations

import math

import torch


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 two's-complement value torch stores."""
    return c - (1 << 64) if c >= (1 << 63) else c


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_TWO_PI = 2.0 * math.pi


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical shift right of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64(key: torch.Tensor, n: int) -> torch.Tensor:
    """Words ``0 .. n-1`` (int64, two's complement of the uint64 values) of the stream keyed by ``key``.

    ``key``: a 0-d int64 tensor (its device is the output's). Integer multiplication wraps modulo 2^64.
    """
    i = torch.arange(1, n + 1, dtype=torch.int64, device=key.device)
    # (key + i) * gamma rather than key + i * gamma (the same stream from the state key * gamma): with a
    # pure index product, torch.compile's dynamic-shape kernels evaluate i * gamma as unbounded index
    # arithmetic, which does not wrap modulo 2^64 (measured: wrong words; tests/hardware/test_pcm_compile.py)
    z = (key + i) * _GAMMA
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def counter_normals(key: torch.Tensor, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers of the given shape, a pure function of ``key`` (0-d int64 tensor).

    Computed in ``dtype``, float32 for the 16-bit float dtypes (rounded to ``dtype`` at the end): their
    24-bit uniforms underflow in float16 (log(0): inf and NaN) and lose their resolution in bfloat16."""
    shape = torch.Size(shape)
    n = shape.numel()
    z = splitmix64(key, (n + 1) // 2)
    ct = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    # bits 40..63 and 0..23 of each word: two independent 24-bit uniforms; u1 in (0, 1) keeps log finite
    u1 = (_srl(z, 40).to(ct) + 0.5) * (2.0 ** -24)
    u2 = (z & 0xFFFFFF).to(ct) * (_TWO_PI * 2.0 ** -24)
    r = torch.sqrt(-2.0 * torch.log(u1))
    out = torch.cat([r * torch.cos(u2), r * torch.sin(u2)])
    return (out[:n] if out.numel() != n else out).reshape(shape).to(dtype)


def draw_key(generator: torch.Generator) -> torch.Tensor:
    """A fresh 0-d int64 key (63 random bits) from ``generator`` (one Mersenne-Twister draw pair)."""
    return torch.empty((), dtype=torch.int64).random_(generator=generator)
