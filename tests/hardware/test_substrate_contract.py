"""One input contract for every substrate (issue #17, "no silent wrong answers"): dtypes, shapes, magnitudes,
overflow of values and time, drift-compensation reference under repeated updates, frozen configuration.

The contract (``pcmeta.hardware.substrate``'s docstring): real float inputs as they are, integers and bool
converted to float (numpy: float64, torch: the default dtype), complex refused; finite input -> finite output of
shape ``(..., out)`` (an empty batch included) or a one-line ``ValueError``; never a silent NaN or inf.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcmeta.hardware import (AuthorsArmSubstrate, Deployment, PCMConfig, PCMSubstrate, SoftwareSubstrate)

IN, OUT = 5, 3
W = np.random.default_rng(0).uniform(-1, 1, (IN, OUT))

SUBSTRATES = {
    "software": lambda: SoftwareSubstrate(),
    "software-4bit": lambda: SoftwareSubstrate(bits=4),
    "pcm": lambda: PCMSubstrate(PCMConfig(seed=0)),
    "pcm-4bit-global": lambda: PCMSubstrate(PCMConfig(weight_bits=4, drift_compensation="global", seed=0)),
    "pcm-ideal": lambda: PCMSubstrate(PCMConfig.ideal()),
    "authors-arm": lambda: AuthorsArmSubstrate(seed=0),
    "deployed-arm-pcm": lambda: Deployment.preset("pcm", "arm").build(seed=0),
}


def _array(kind: str, name: str = "a"):
    sub = SUBSTRATES[kind]()
    return sub, sub.place(name, W)


# ------------------------------------------------------------------------------- property: the contract
NUMPY_DTYPES = ("float16", "float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "complex128")
TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "int64", "uint8", "bool", "complex64")
MAGNITUDES = ("zero", "subnormal", "1e-30", "one", "1e30", "huge")
SHAPES = ((IN,), (0, IN), (1, IN), (3, IN), (2, 0, IN), (2, 2, IN), (2, IN + 1))


def _magnitude(name: str, dtype: np.dtype) -> float:
    if dtype.kind not in "fc":
        return {"zero": 0, "subnormal": 1, "1e-30": 1, "one": 1, "1e30": 100, "huge": np.iinfo(dtype).max
                if dtype.kind in "iu" else 1}[name]
    fi = np.finfo(dtype)
    return {"zero": 0.0, "subnormal": float(fi.smallest_subnormal) * 8, "1e-30": 1e-30, "one": 1.0, "1e30": 1e30,
            "huge": float(fi.max) / 2}[name]


def _input(lib: str, dtype: str, shape, magnitude: str, seed: int):
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype("float32" if dtype == "bfloat16" else dtype)
    m = _magnitude(magnitude, np_dtype)
    if np_dtype.kind == "b":
        x = rng.random(shape) < 0.5
    elif np_dtype.kind in "iu":
        lo = 0 if np_dtype.kind == "u" else -int(m)
        x = rng.integers(lo, int(m), size=shape, endpoint=True, dtype=np_dtype)
    else:
        with np.errstate(over="ignore", under="ignore"):
            x = (m * rng.uniform(-1, 1, shape)).astype(np_dtype)
            if np_dtype.kind == "c":
                x = x + 1j * x
    if lib == "numpy":
        return x
    t = torch.from_numpy(x)
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(kind=st.sampled_from(sorted(SUBSTRATES)), lib=st.sampled_from(("numpy", "torch")),
       np_dtype=st.sampled_from(NUMPY_DTYPES), torch_dtype=st.sampled_from(TORCH_DTYPES),
       shape=st.sampled_from(SHAPES), magnitude=st.sampled_from(MAGNITUDES), seed=st.integers(0, 2**16))
def test_substrate_input_contract(kind, lib, np_dtype, torch_dtype, shape, magnitude, seed):
    """Finite input -> finite output of the right shape and kind, or a one-line ValueError; never NaN/inf."""
    dtype = np_dtype if lib == "numpy" else torch_dtype
    x = _input(lib, dtype, shape, magnitude, seed)
    sub, arr = _array(kind)
    xr = x.real if (lib == "numpy" and np.iscomplexobj(x)) or (lib == "torch" and x.is_complex()) else x
    with np.errstate(over="ignore", invalid="ignore"):
        finite_in = bool(np.isfinite(np.asarray(xr.double() if lib == "torch" else xr, dtype=np.float64)).all())
    mvms = arr.mvms
    try:
        y = arr.matmul(x)
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg and f"'{arr.name}'" in msg
        if "complex" in dtype:
            assert "complex" in msg and "dtype" in msg
        elif shape[-1] != IN:
            assert f"(..., {IN})" in msg
        elif not finite_in:
            assert "NaN or inf" in msg
        else:  # a finite input may only be refused when the result overflows its dtype
            assert "overflows" in msg and magnitude in ("huge", "1e30"), msg
        assert arr.mvms == mvms  # a refused input is not counted
        return
    assert "complex" not in dtype and shape[-1] == IN and finite_in
    assert type(y) is type(x)
    assert tuple(y.shape) == tuple(shape[:-1]) + (OUT,)
    if lib == "torch":
        expected = torch.get_default_dtype() if dtype in ("int32", "int64", "uint8", "bool") else x.dtype
        assert y.dtype == expected
        y = y.double()
    else:
        assert y.dtype.kind == "f"
    assert np.isfinite(np.asarray(y, dtype=np.float64)).all()
    assert arr.mvms == mvms + int(np.prod(shape[:-1]))


# ----------------------------------------------------------------------------- the reproduced cases
def test_integer_and_bool_inputs_compute_as_float_on_every_substrate():
    for kind in SUBSTRATES:
        outs = []
        for x in (torch.ones(2, IN, dtype=torch.int64), torch.ones(2, IN, dtype=torch.bool),
                  torch.ones(2, IN, dtype=torch.float32)):
            sub, arr = _array(kind)
            outs.append(arr.matmul(x))
        assert all(o.dtype == torch.float32 for o in outs), kind
        assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[2]), kind  # same draws, same numbers
        ys = [_array(kind)[1].matmul(x) for x in (np.ones((2, IN), dtype=np.int32), np.ones((2, IN), dtype=bool),
                                                  np.ones((2, IN)))]
        assert all(y.dtype == np.float64 for y in ys) and np.array_equal(ys[0], ys[2]) and np.array_equal(ys[1], ys[2])
    y = SoftwareSubstrate().place("a", np.full((4, 3), 0.4)).matmul(torch.ones(1, 4, dtype=torch.int64))
    assert torch.allclose(y, torch.full((1, 3), 1.6))  # was [[0, 0, 0]]: W cast to int64


@pytest.mark.parametrize("kind", sorted(SUBSTRATES))
def test_complex_input_is_refused_with_the_same_message(kind):
    _, arr = _array(kind)
    for x in (torch.ones(1, IN, dtype=torch.complex64), np.ones((1, IN), dtype=np.complex128)):
        with pytest.raises(ValueError, match=r"input to 'a' must have a real float .* integer or bool dtype, got "
                                             r"dtype .*complex"):
            arr.matmul(x)


@pytest.mark.parametrize("kind", sorted(SUBSTRATES))
def test_empty_batch_gives_an_empty_result(kind):
    sub, arr = _array(kind)
    state = sub.generator.get_state() if hasattr(sub, "generator") else None
    for x in (np.zeros((0, IN)), torch.zeros(0, IN), torch.zeros(2, 0, IN, dtype=torch.float64)):
        y = arr.matmul(x)
        assert tuple(y.shape) == tuple(x.shape[:-1]) + (OUT,) and type(y) is type(x)
    assert arr.mvms == 0
    if state is not None:
        assert torch.equal(sub.generator.get_state(), state)  # no noise drawn for nothing


@pytest.mark.parametrize("dtype,m", [(np.float64, 1e-310), (np.float32, 1e-38), (np.float16, 1e-3),
                                     (np.float16, 1e-7)])
def test_pcm_tiny_inputs_are_scaled_not_divided_into_nan(dtype, m):
    """The per-sample input scale lv / max|x| overflowed for subnormal (and, in float16, small) maxima: NaN."""
    W4 = np.full((4, 3), 0.4)
    x = np.full((2, 4), m, dtype=dtype)
    y = PCMSubstrate(PCMConfig.ideal()).place("a", W4).matmul(x)
    assert y.dtype == dtype and np.isfinite(y).all()
    exact = 4 * 0.4 * float(x[0, 0])
    assert np.allclose(y.astype(np.float64), exact, rtol=1e-2, atol=float(np.finfo(dtype).smallest_subnormal) * 4)
    noisy = PCMSubstrate(PCMConfig(seed=0)).place("a", W4).matmul(x)
    assert np.isfinite(noisy).all() and (noisy >= 0).all()
    if dtype != np.float16:  # (a float16 result of 1.6e-7 can round to 0 with the ADC's output scale)
        assert np.allclose(noisy, exact, rtol=0.1)


def test_results_that_overflow_raise_instead_of_inf():
    for kind in SUBSTRATES:
        arr = SUBSTRATES[kind]().place("a", np.full((IN, OUT), 0.9))
        with pytest.raises(ValueError, match="'a': x @ W overflows float32"):
            arr.matmul(torch.full((1, IN), 3e38))  # x @ W ~ 1.35e39
        assert arr.mvms == 0
    sw = SoftwareSubstrate()
    a = sw.place("a", np.full((2, 2), 1e308))
    with pytest.raises(ValueError, match="overflows float64"):
        a.matmul(np.full((1, 2), 10.0))


def test_time_must_stay_finite_and_evaluable():
    for kind in SUBSTRATES:
        sub, _ = _array(kind)
        sub.elapse(1e300)
        with pytest.raises(ValueError, match="elapse"):
            sub.elapse(1e308)
            sub.elapse(1e308)
        assert sub.time_s in (1e300, 1e300 + 1e308)
    pcm = PCMSubstrate(PCMConfig(seed=0))
    a = pcm.place("a", W)
    with pytest.raises(ValueError, match="beyond what the device model can evaluate"):
        pcm.elapse(1e308)
    assert pcm.time_s == 0.0
    pcm.elapse(1e300)  # the largest times are still evaluated without NaN
    assert np.isfinite(a.matmul(np.ones((2, IN)))).all() and np.isfinite(a.read()).all()
    # a deployment moves all its parts or none
    dep = Deployment.preset("pcm", "omniglot").build(seed=0)
    dep.place("conv", W * 0.5)
    dep.place("readout", W * 0.5)
    with pytest.raises(ValueError):
        dep.elapse(1e308)
    assert dep.time_s == 0.0 and all(p.time_s == 0.0 for p in dep.parts.values())


def test_huge_weights_and_updates_raise_and_change_nothing():
    with pytest.raises(ValueError, match="w_max 1.7e\\+308 times g_max_uS 25 overflows"):
        PCMSubstrate(PCMConfig(seed=0)).place("a", np.full((4, 3), 1.7e308))
    for cfg in (PCMConfig(seed=0), PCMConfig(drift_compensation="global", seed=0),
                PCMConfig(update_grid=None, seed=0)):
        sub = PCMSubstrate(cfg)
        a = sub.place("a", W * 0.1)  # w_max ~0.1: dW / w_max overflows
        sub.elapse(60.0)
        read, state, dev = a.read(), sub.generator.get_state(), a.devices()
        with pytest.raises(ValueError, match="'a': the update dW / w_max .* overflows float64"):
            a.update(np.full(W.shape, -1e308))
        assert torch.equal(sub.generator.get_state(), state) and np.array_equal(a.read(), read)
        assert np.array_equal(a.read(ideal=True), W * 0.1) and a.updates == 0
        assert all(np.array_equal(dev[s][k], a.devices()[s][k]) for s in dev for k in dev[s])
    a = PCMSubstrate(PCMConfig(update_grid=None, seed=0)).place("a", W)
    a.update(np.full(W.shape, -1e308))  # finite: the devices clip at -w_max, the ideal weights are -1e308
    with pytest.raises(ValueError, match="the ideal weights W \\+ dW overflows float64"):
        a.update(np.full(W.shape, -1e308))
    assert a.updates == 1 and np.isfinite(a.read(ideal=True)).all()
    sw = SoftwareSubstrate()
    a = sw.place("a", np.full((2, 2), 1.5e308))
    with pytest.raises(ValueError, match="the update W \\+ dW overflows"):
        a.update(np.full((2, 2), 1e308))
    assert np.array_equal(a.read(), np.full((2, 2), 1.5e308))
    aa = AuthorsArmSubstrate(seed=0)
    b = aa.place("a", W)
    before = b.read()
    with pytest.raises(ValueError, match="overflows float64"):
        b.update(np.full(W.shape, -1e308))
    assert np.array_equal(b.read(), before)


def test_pcm_config_is_frozen_and_replace_validates():
    sub = PCMSubstrate(PCMConfig(seed=0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.config.adc_bits = 99
    with pytest.raises(ValueError, match="adc_bits"):
        sub.config.replace(adc_bits=99)
    assert sub.config.replace(adc_bits=6).adc_bits == 6 and sub.config.adc_bits == 8


def test_compensation_reference_does_not_accumulate_programming_noise():
    """No drift, exact updates: alpha stays ~1 however many updates (it ran away to 1.7 after 1000, 4.3 after
    5000: the reference moved by "new target - noisy drifted value", whose noise does not cancel at the clip)."""
    rng = np.random.default_rng(0)
    W0 = rng.uniform(-2.4, 2.4, (32, 16))
    for base in ("drifted", "target"):
        sub = PCMSubstrate(PCMConfig(drift_compensation="global", update_grid=None, drift_scale=0.0, seed=0,
                                     update_base=base))
        a = sub.place("a", W0)
        for _ in range(400):
            a.update(rng.normal(0, 1e-3, W0.shape))
        alpha = float(a.compensation_scale()[0])
        assert abs(alpha - 1) < 0.03, (base, alpha)
        assert np.abs(a.read()).max() < 1.2 * 2.4
