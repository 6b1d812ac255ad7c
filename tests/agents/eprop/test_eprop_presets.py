"""Tests of the arm learner's PCM deployments (``Deployment.preset("pcm" / "paper", family="arm")``, the CLI's
``--pcm-preset tuned`` / ``authors``): the properties the "pcm" deployment relies on (unbiased rounding keeps the
one update's effect, updates written in the drift-compensated frame move the effective weights by dW) and that it
learns on PCM one day after programming."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.hardware import PCMConfig, PCMSubstrate
from pcmeta.hardware.deployment import Deployment
from pcmeta.tasks import trajectories as traj


@pytest.fixture(scope="module")
def released(reference_dir):
    path = reference_dir / "authors_arm_natural_eprop.npz"
    if not path.is_file():
        pytest.fail(f"released arm weights missing at {path}")
    return eprop.load_weights(path)


def test_stochastic_rounding_keeps_the_update_nearest_loses_it(released):
    """Float learner, the one update rounded to the 1/16 grid: nearest rounding zeroes most entries and
    loses most of the learning, unbiased stochastic rounding keeps it (what the tuned preset relies on)."""
    targets = traj.sample_targets(40, rng=np.random.default_rng(3))
    g = torch.Generator().manual_seed(0)

    def stochastic(d):
        u = d * 16.0
        return torch.floor(u + torch.rand(u.shape, generator=g, dtype=u.dtype)) / 16.0

    loss = {}
    for name, tr in (("float", None), ("nearest", eprop.round_to_grid), ("stochastic", stochastic)):
        loss[name] = float(np.mean(eprop.evaluate(released, targets, batch_size=40, update_transform=tr)["loss_after"]))
    assert loss["nearest"] > 1.8 * loss["float"], loss  # measured 0.0268 vs 0.0124
    assert loss["stochastic"] < 1.4 * loss["float"], loss


@pytest.mark.parametrize("frame", ["device", "compensated"])
def test_compensated_frame_update_moves_effective_weights_by_dw(frame):
    """With global drift compensation one day after programming (alpha ~ 1.5), an update in the device frame
    moves the effective (compensated) weights by ~alpha dW; in the compensated frame
    (``PCMConfig(update_frame="compensated")``) by dW (in the mean: stochastic rounding is unbiased)."""
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.6, 0.6, size=(250, 250))
    sub = PCMSubstrate(PCMConfig(w_max=1.0, drift_compensation="global", update_rounding="stochastic",
                                 prog_noise_scale=0.0, read_noise_scale=0.0, dac_bits=None, adc_bits=None,
                                 out_noise=0.0, update_frame=frame, seed=1))
    arr = sub.place("w", W)
    sub.elapse(86400.0)
    alpha = float(arr.compensation_scale()[0])
    assert 1.3 < alpha < 1.8, alpha
    before = np.asarray(arr.read())
    ideal_before = np.asarray(arr.read(ideal=True))
    dW = 0.3 / 16
    arr.update(np.full(W.shape, dW))
    moved = float(np.mean(np.asarray(arr.read()) - before))
    moved_ideal = float(np.mean(np.asarray(arr.read(ideal=True)) - ideal_before))
    if frame == "compensated":
        assert abs(moved / dW - 1.0) < 0.06, (moved / dW, alpha)
        assert abs(moved_ideal / dW - 1.0) < 0.06, moved_ideal / dW  # the ideal weights in the same frame
    else:
        assert abs(moved / dW - alpha) < 0.1, (moved / dW, alpha)


def test_update_frame_is_validated_and_ignored_without_compensation():
    with pytest.raises(ValueError, match="update_frame"):
        PCMConfig(update_frame="effective")
    outs = []
    for frame in ("device", "compensated"):
        sub = PCMSubstrate(PCMConfig(w_max=1.0, update_frame=frame, seed=3))
        arr = sub.place("w", np.full((8, 4), 0.25))
        sub.elapse(86400.0)
        arr.update(np.full((8, 4), 1.0 / 16))
        outs.append(np.asarray(arr.read()))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_arm_pcm_deployments_and_their_chips():
    pcm, paper = Deployment.preset("pcm", family="arm"), Deployment.preset("paper", family="arm")
    tuned, authors = pcm.pcm_config(), paper.pcm_config()
    assert (authors.update_rounding, authors.drift_compensation, authors.w_max) == ("nearest", "none", 1.0)
    assert (tuned.update_rounding, tuned.drift_compensation, tuned.w_max) == ("stochastic", "global", None)
    assert (tuned.update_frame, authors.update_frame) == ("compensated", "device")
    assert tuned.update_grid == authors.update_grid == 1.0 / 16  # the same device step (1.5625 uS)
    assert pcm.clip == paper.clip == 1.0 and pcm.time_s == paper.time_s == 60.0
    a, b = (pcm.build(eprop.chip_seed(2, k)) for k in (1, 2))
    assert isinstance(a.main, PCMSubstrate) and a.main.config.seed == 2 * 100003 + 1 != b.main.config.seed
    with pytest.raises(ValueError, match="update_rounding"):
        pcm.with_(config={"update_rounding": "up"})


def test_tuned_preset_learns_one_day_after_programming(released, tmp_path, capsys):
    """End to end through the CLI, on the same 4 targets: the authors' conventions one day after programming
    lose most of the learning (drift); the tuned preset learns (loss after well below both)."""
    from pcmeta.demos.cli import main

    out = {}
    for preset in ("authors", "tuned"):
        js = tmp_path / f"{preset}.json"
        assert main(["arm", "eval", "--substrate", "pcm", "--pcm-preset", preset, "--time", "1d", "--tasks", "4",
                     "--seed", "5", "--json", str(js)]) == 0
        out[preset] = json.loads(js.read_text())
    dep = out["tuned"]["deployment"]
    assert dep["name"] == "pcm" and dep["time_s"] == 86400.0 and dep["config"]["update_frame"] == "compensated"
    assert dep["config"]["update_rounding"] == "stochastic" and out["authors"]["deployment"]["name"] == "paper"
    assert out["tuned"]["loss_after"] < 0.05, out["tuned"]
    assert out["tuned"]["loss_after"] < 0.5 * out["authors"]["loss_after"], (out["tuned"], out["authors"])
    assert out["tuned"]["loss_after"] < 0.25 * out["tuned"]["loss_before"]
    assert "deployment pcm (t = 1d)" in capsys.readouterr().out
