"""Deployment: presets, JSON round trip, placement rules, validation; the time parser."""
import json

import numpy as np
import pytest
import torch

from pcmeta.hardware import Deployment, PCMSubstrate, Placement, SoftwareSubstrate
from pcmeta.hardware.deployment import PRESETS, auto_scale
from pcmeta.hardware.times import TIMES, format_time, parse_time


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_presets_round_trip_through_json(family):
    for name, dep in PRESETS[family].items():
        back = Deployment.from_dict(json.loads(dep.to_json()))
        assert back == dep, name
        assert Deployment.preset(name, family) is dep
        sub = dep.build(seed=3)
        sub.place("x", np.full((4, 3), 0.25))
        sub.elapse(1.0)
        r = sub.report()
        assert r["deployment"]["name"] == name and r["mvms"] == 0


def test_shared_preset_names():
    for name in ("software", "pcm", "paper", "pcm-hermes"):
        for family in PRESETS:
            assert name in PRESETS[family]


def test_readout_rule_puts_the_readout_on_its_own_scale():
    dep = Deployment.preset("pcm", family="omniglot")
    sub = dep.build(seed=0)
    conv = sub.place("conv1", torch.full((9, 4), 0.5))
    head = sub.place("readout", torch.full((4, 5), 0.07))
    assert isinstance(conv.substrate, PCMSubstrate) and conv.substrate.config.w_max == 1.0
    assert head.substrate is not conv.substrate and head.substrate.config.w_max == 0.125
    assert head.substrate.config.seed == 1 and conv.substrate.config.seed == 0
    assert "readout" in sub and set(sub.arrays) == {"conv1", "readout"}
    sub.elapse(60.0)
    assert head.substrate.time_s == 60.0 == conv.substrate.time_s
    sub.remove("readout")
    assert "readout" not in sub and "readout" not in head.substrate
    again = sub.place("readout", torch.full((4, 5), 0.07))   # same rule, same part, programmed at t = 60 s
    assert again.substrate is head.substrate


def test_digital_rule_and_clip():
    dep = Deployment("t", "pcm", {"w_max": None}, clip=1.0, placements=(Placement("*.W_out", "digital"),))
    sub = dep.build(seed=0)
    a = sub.place("learner.W_in", np.array([[3.0, -0.5]]))
    b = sub.place("learner.W_out", np.array([[2.0], [-4.0]]))
    assert isinstance(b.substrate, SoftwareSubstrate)
    np.testing.assert_array_equal(b.read(), [[1.0], [-1.0]])       # clipped before placement
    assert isinstance(b.read(), np.ndarray) and isinstance(a.read(), np.ndarray)


def test_auto_scale():
    assert auto_scale(np.array([[0.077]])) == 0.125
    assert auto_scale(np.array([[0.125]])) == 0.125
    assert auto_scale(np.zeros((2, 2))) == 1.0


@pytest.mark.parametrize("bad, msg", [
    (dict(substrate="fpga"), "substrate must be one of"),
    (dict(substrate="pcm", config={"weight_bit": 4}), "not options of a 'pcm' substrate"),
    (dict(substrate="pcm", config={"adc_bits": 40}), "adc_bits"),
    (dict(time_s=-1.0), ">= 0"),
    (dict(time_s="1 fortnight"), "cannot read the duration"),
    (dict(time_s=60.0, query_time_s=1.0), "must be >= time_s"),
    (dict(clip=0.0), "clip"),
    (dict(substrate="software", placements=(Placement("r", "own", {"w_max": -1.0}),)), "w_max"),
])
def test_bad_deployments_raise_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        Deployment(**bad)


def test_unknown_preset_and_fields():
    with pytest.raises(ValueError, match="presets:"):
        Deployment.preset("fast", family="omniglot")
    with pytest.raises(ValueError, match="family must be one of"):
        Deployment.preset("pcm", family="chess")
    with pytest.raises(ValueError, match="unknown deployment fields"):
        Deployment.from_dict({"substrat": "pcm"})


def test_with_merges_config_and_parses_time():
    dep = Deployment.preset("pcm", family="arm").with_(time_s="1d", config={"drift_compensation": "none"})
    assert dep.time_s == 86400.0 and dep.config["drift_compensation"] == "none"
    assert dep.config["update_rounding"] == "stochastic"
    assert dep.pcm_config(seed=5).seed == 5


@pytest.mark.parametrize("family, name", [(f, n) for f in ("arm", "omniglot") for n in ("pcm", "paper", "pcm-hermes")])
def test_with_keeps_the_presets_none_settings(family, name):
    """The arm presets' ideal converters (dac_bits / adc_bits None) and per-array scales (w_max None) are settings:
    merging another option (as the benchmark harness does with the preset's own drift compensation) keeps them."""
    dep = Deployment.preset(name, family)
    own = dep.config.get("drift_compensation", "none")
    same = dep.with_(config={"drift_compensation": own})
    assert all(same.config[k] == v for k, v in dep.config.items()) and same.pcm_config() == dep.pcm_config()
    if family == "arm":
        assert same.pcm_config().dac_bits is None and same.pcm_config().adc_bits is None


@pytest.mark.parametrize("text, seconds", [("1s", 1), ("620s", 620), ("1min", 60), ("2.5h", 9000), ("1d", 86400),
                                           ("1day", 86400), ("1mo", 2592000), ("1y", 31536000), ("1e3", 1000),
                                           (42, 42), (0.5, 0.5), (" 3 h ", 10800)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["-1s", "1 parsec", "", "inf", "nan", float("nan"), float("inf"), True, "1d2h"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_format_time_names_the_table_times():
    assert [format_time(s) for s in TIMES.values()] == list(TIMES)
    assert format_time(620.0) == "620s"
