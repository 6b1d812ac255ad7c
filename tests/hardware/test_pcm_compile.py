"""Counter-based MVM noise (pcmeta.hardware.rng) and the compiled MVM pipeline (PCMConfig(compile=True))."""
from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import torch

import pcmeta.hardware.periphery as periphery
from pcmeta.hardware import PCMConfig, PCMSubstrate
from pcmeta.hardware.rng import counter_normals, draw_key, splitmix64

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="torch.compile on CPU needs a C++ compiler")


def _splitmix64_reference(key: int, n: int) -> list[int]:
    """SplitMix64 from the state key * gamma, in Python integers modulo 2^64 (independent of torch)."""
    m = (1 << 64) - 1
    out = []
    for i in range(1, n + 1):
        z = ((key + i) * 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        out.append(z ^ (z >> 31))
    return out


def test_splitmix64_words_match_a_reference_with_64_bit_wraparound():
    for key in (0, 1, 123456789, (1 << 63) - 1):
        got = [w % (1 << 64) for w in splitmix64(torch.tensor(key), 50).tolist()]
        assert got == _splitmix64_reference(key, 50)


def test_counter_normals_are_standard_normal_and_independent():
    n = 1 << 21
    z = counter_normals(torch.tensor(987654321), (n,), torch.float64)
    se = 1 / math.sqrt(n)
    assert abs(float(z.mean())) < 4 * se
    assert abs(float(z.std()) - 1) < 4 * se / math.sqrt(2) * 1.5
    assert abs(float((z**4).mean() / z.var() ** 2) - 3) < 0.02
    for c in (1.0, 2.0, 3.0):  # two-sided tail masses
        p = math.erfc(c / math.sqrt(2))
        assert abs(float((z.abs() > c).double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    # Kolmogorov-Smirnov distance to the normal CDF (critical value at 1 %: 1.63 / sqrt(n))
    s, _ = torch.sort(z)
    cdf = 0.5 * (1 + torch.erf(s / math.sqrt(2)))
    i = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float(torch.maximum(i - cdf, cdf - (i - 1 / n)).max()) < 1.63 / math.sqrt(n)
    # no correlation between neighbours, between the cos and sin halves, or between keys
    h = n // 2
    assert abs(float(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1])) < 4 * se
    assert abs(float(torch.corrcoef(torch.stack([z[:h], z[h:]]))[0, 1])) < 4 * math.sqrt(2) * se
    z2 = counter_normals(torch.tensor(987654322), (n,), torch.float64)
    assert abs(float(torch.corrcoef(torch.stack([z, z2]))[0, 1])) < 4 * se
    # odd sizes and shapes
    assert counter_normals(torch.tensor(5), (3, 7)).shape == (3, 7)
    assert torch.equal(counter_normals(torch.tensor(5), (21,)), counter_normals(torch.tensor(5), (3, 7)).reshape(-1))


def test_draw_key_is_reproducible_from_the_generator():
    a = [int(draw_key(torch.Generator().manual_seed(3))) for _ in range(2)]
    assert a[0] == a[1] and 0 <= a[0] < (1 << 63)


def test_per_mvm_read_noise_std_with_counter_noise():
    """As test_pcm.test_read_noise_std_per_mvm, with the counter-based noise."""
    g = 0.5
    sub = PCMSubstrate(PCMConfig.ideal(read_noise_scale=1.0, seed=5, w_max=1.0, noise_rng="counter"))
    arr = sub.place("w", np.full((8, 256), g))
    x = np.zeros((400, 8))
    x[:, 3] = 1.0
    y = arr.matmul(x)
    expected = g * min(0.0088 / g**0.65, 0.2) * math.sqrt(math.log((20.0 + 250e-9) / (2 * 250e-9)))
    assert abs((y - g).std() / expected - 1) < 0.05
    assert not np.allclose(arr.matmul(x[:1]), arr.matmul(x[:1]))  # fresh draws on every MVM
    # same seed, same numbers
    sub2 = PCMSubstrate(PCMConfig.ideal(read_noise_scale=1.0, seed=5, w_max=1.0, noise_rng="counter"))
    assert np.array_equal(sub2.place("w", np.full((8, 256), g)).matmul(x), y)


def test_noise_and_compile_options_are_validated():
    with pytest.raises(ValueError, match="noise_rng='counter'"):
        PCMConfig(compile=True, noise_rng="torch")
    with pytest.raises(ValueError, match="noise_rng must be"):
        PCMConfig(noise_rng="mt19937")
    with pytest.raises(ValueError, match="compile must be True or False"):
        PCMConfig(compile="yes")
    assert PCMConfig().noise_source == "torch"
    assert PCMConfig(compile=True).noise_source == "counter"


@pytest.mark.parametrize("cfg", [dict(), dict(compile=True)], ids=["eager", "compiled"])
def test_rejected_input_leaves_the_noise_generator_unchanged(cfg):
    sub = PCMSubstrate(PCMConfig(seed=0, **cfg))
    arr = sub.place("w", np.ones((4, 3)))
    state = sub.generator.get_state()
    with pytest.raises(ValueError, match="NaN or inf"):
        arr.matmul(np.array([[1.0, np.nan, 0.0, 0.0]]))
    assert torch.equal(sub.generator.get_state(), state) and arr.mvms == 0


def _pair(**kw):
    """Two substrates alike but for compile: eager counter noise and compiled."""
    return (PCMSubstrate(PCMConfig(noise_rng="counter", **kw)), PCMSubstrate(PCMConfig(compile=True, **kw)))


@needs_compiler
@pytest.mark.parametrize("cfg,shape", [
    (dict(weight_bits=4, drift_compensation="global", seed=0), (256, 256)),
    (dict(drift_compensation="per_column", adc_bits=None, dac_bits=None, seed=1), (600, 300)),
], ids=["one-tile-global", "three-row-tiles-per-column-ideal-converters"])
def test_compiled_mvm_gives_the_eager_numbers(cfg, shape):
    """The compiled pipeline and the eager one agree on every MVM, also across batch-size changes (a shape
    change makes torch.compile build a dynamic-shape kernel, where an index product once lost its 2^64
    wraparound)."""
    rng = np.random.default_rng(0)
    W = torch.from_numpy(np.clip(rng.normal(size=shape), -2.5, 2.5)).float()
    eager, comp = _pair(**cfg)
    a, b = eager.place("w", W), comp.place("w", W)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t, batch in ((86400.0, 1024), (0.0, 7), (3600.0, 1)):
            eager.elapse(t)
            comp.elapse(t)
            x = torch.from_numpy(rng.uniform(-1, 1, size=(batch, shape[0]))).float()
            ya, yb = a.matmul(x), b.matmul(x)
            assert torch.allclose(ya, yb, rtol=1e-5, atol=1e-5 * float(ya.abs().max())), (t, batch)
            assert a.adc_saturations == b.adc_saturations
    # a compile failure would fall back to eager with a warning (and this test would compare eager to eager)
    assert not [w for w in caught if "PCMConfig(compile=True)" in str(w.message)]
    # and it is the chip: noisy, close to x @ W
    err = float((yb - x @ W).norm() / (x @ W).norm())
    assert 0.005 < err < 0.3


def test_compile_failure_falls_back_to_the_same_numbers_with_a_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(periphery, "_COMPILED", {"fn": broken})
    W = np.random.default_rng(0).normal(size=(32, 8))
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 32))
    eager, comp = _pair(seed=3)
    with pytest.warns(RuntimeWarning, match="torch.compile of the MVM failed.*no compiler here"):
        yb = comp.place("w", W).matmul(x)
    assert np.array_equal(eager.place("w", W).matmul(x), yb)


@needs_compiler
def test_compiled_adc_clips_to_its_range_and_counts_saturations():
    """test_pcm.test_adc_clips_to_its_range_and_counts_saturations through the compiled pipeline (its ADC is
    a separate, branch-free clamp)."""
    W = np.zeros((8, 3))
    W[:, 0], W[:, 1], W[:, 2] = 1.0, 0.1, -1.0
    arr = PCMSubstrate(PCMConfig.ideal(adc_bits=8, adc_bound=2.0, dac_bits=8, w_max=1.0, compile=True)).place("w", W)
    x = np.array([[1.0] * 8, [-0.5] * 8])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = arr.matmul(x)
    assert not [w for w in caught if "PCMConfig(compile=True)" in str(w.message)]  # compiled, no eager fallback
    bound = 2.0 * np.abs(x).max(axis=1)
    assert y[:, 0] == pytest.approx(bound * [1, -1], rel=1e-12) and y[:, 2] == pytest.approx(bound * [-1, 1], rel=1e-12)
    assert y[:, 1] == pytest.approx(x.sum(1) * 0.1, abs=bound.max() / 127)
    assert arr.adc_saturations == 4
