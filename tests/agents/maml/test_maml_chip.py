"""MAML deployed on the simulated PCM chip through a Deployment (pcmeta.agents.maml.chip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.agents.maml import MAML, READOUT, WEIGHTS_DIR, chip_cost, evaluate, evaluate_on_chip, place_readout
from pcmeta.hardware import Deployment, PCMConfig, PCMSubstrate, Placement
from pcmeta.hardware.deployment import auto_scale
from pcmeta.tasks.omniglot import TaskSampler, class_pool

SOFTWARE = Deployment.preset("software", family="omniglot")
PAPER = Deployment.preset("paper", family="omniglot")


@pytest.fixture(scope="module")
def model():
    return MAML.from_weights(WEIGHTS_DIR / "paper_5w5s.npz")


@pytest.fixture(scope="module")
def pool(omniglot_dir):
    return class_pool("paper", "test", omniglot_dir)


def test_chip_protocol_in_software_equals_plain_evaluation(model, pool):
    plain = evaluate(model, TaskSampler(pool, 5, 5, 5, seed=11), tasks=20)
    chip = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=11), 20, SOFTWARE)
    assert np.allclose(chip["acc"], plain, atol=1e-6)
    assert chip["acc_steps"].shape == (20, 5)
    assert np.allclose(chip["acc_steps"][:, -1], chip["acc"])
    assert chip["acc_steps"][:, 0].mean() < chip["acc_steps"][:, -1].mean() - 0.3  # adaptation is what learns


def test_ideal_pcm_makes_the_same_predictions_as_software(model, pool):
    """Acceptance: every PCM effect off, 32-bit weights -> the same predictions as software."""
    sw = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=12), 20, SOFTWARE,
                          return_predictions=True)
    ideal = {k: v for k, v in vars(PCMConfig.ideal(w_max=1.0)).items() if k != "seed"}
    pcm = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=12), 20,
                           Deployment("ideal", "pcm", ideal, time_s="1d"), return_predictions=True)
    same = (sw["predictions"] == pcm["predictions"]).mean()
    assert same >= 0.995
    assert abs(sw["mean"] - pcm["mean"]) <= 0.005


def test_pcm_non_idealities_cost_accuracy_and_compensation_or_readaptation_recover(model, pool):
    base = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10, SOFTWARE)
    # float weights on PCM with per-array scaling, one year of uncompensated drift of the readout
    pcm = Deployment("float", "pcm", {"weight_bits": None, "w_max": None}, time_s=60.0, query_time_s=3.15e7)
    drifted = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10, pcm)
    readapted = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10, pcm, readapt=True)
    assert drifted["acc_steps"] is None
    assert drifted["mean"] < base["mean"]
    assert readapted["mean"] >= drifted["mean"]


def test_readout_updates_are_programming_events(model, pool):
    cost = chip_cost(model, TaskSampler(pool, 5, 5, 5, seed=14), PAPER)
    assert cost["programming"]["programming_events"] > 9 * 56 * 1  # the conv layers were programmed
    assert cost["adaptation"]["programming_events"] > 0           # on-chip updates pulsed devices
    assert cost["inference"]["programming_events"] == 0
    assert cost["inference"]["mvms"] == 25 * (14 * 14 + 7 * 7 + 4 * 4 + 2 * 2) + 25  # im2col vectors + readout
    assert cost["adaptation"]["energy_J"] > 0


def test_chip_protocol_rejects_bad_input(model, pool):
    sampler = TaskSampler(pool, 5, 5, 5, seed=1)
    with pytest.raises(ValueError, match="steps"):
        evaluate_on_chip(model, sampler, 1, PAPER, steps=-1)
    with pytest.raises(ValueError, match="authors-arm"):
        evaluate_on_chip(model, sampler, 1, Deployment.preset("authors-model", family="arm"))
    with pytest.raises(TypeError, match="Deployment"):
        evaluate_on_chip(model, sampler, 1, "pcm")
    classic = MAML.from_weights("classic_5w1s")
    with pytest.raises(ValueError, match="paper"):
        chip_cost(classic, sampler, PAPER)


def test_placement_rules_of_the_sweep(model, pool):
    """conv in 4-bit software (seed + 2) with the readout alone on PCM, and the readout digital with the conv
    layers on PCM: the Placement rules that replace ChipProtocol's conv_on_chip / readout_on_chip."""
    from pcmeta.hardware import SoftwareSubstrate

    conv_digital = PAPER.with_(placements=(Placement("conv*", "digital", {"bits": 4}, seed_offset=2),))
    sub = conv_digital.build(5)
    net = model.deploy(sub)
    assert isinstance(net.arrays["conv1"].substrate, SoftwareSubstrate) and net.arrays["conv1"].substrate.bits == 4
    assert net.head.substrate is sub.main
    head_digital = place_readout(PAPER, Placement(READOUT, "digital"))
    r = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=4), 3, head_digital)
    assert r["readout_w_max"] is None and 0.0 <= r["mean"] <= 1.0
    cost = chip_cost(model, TaskSampler(pool, 5, 5, 5, seed=4), head_digital)
    assert cost["adaptation"]["programming_events"] == 0  # the readout updates are digital


def test_noise_aware_config_trains_through_the_pcm_model():
    from pcmeta.agents.maml import MAMLConfig
    from pcmeta.hardware import PCMSubstrate

    cfg = MAMLConfig(bits=4, train_substrate="pcm", train_time_s=3600.0, meta_batch=2)
    m = MAML(cfg, seed=0)
    assert isinstance(m.substrate, PCMSubstrate) and m.substrate.time_s == 3600.0
    W = m.params["conv2"]
    a, b = m.transform(W), m.transform(W)
    assert not torch.equal(a, b)                          # fresh device noise on every forward
    assert torch.isfinite(a).all() and (a - W).abs().max() > 0  # the chip's weights, not W itself
    x, y = torch.rand(2, 25, 1, 28, 28), torch.arange(5).repeat_interleave(5).expand(2, 25)
    loss, _ = m.meta_loss(x, y, x, y)
    loss.backward()
    assert W.grad is not None and torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="train_substrate"):
        MAMLConfig(train_substrate="fpga")


def test_readout_on_its_own_crossbar(model, pool):
    """The pcm preset's rule puts the network's readout and every task's readout<i> on one crossbar of their own
    ("auto" scale: the smallest power of two above max |readout|), seeded chip seed + 1; weights beyond a fixed
    scale fail loudly (no silent clipping); place_readout replaces the rule."""
    four = MAML.from_weights("paper_5w5s_4bit")
    dep = Deployment.preset("pcm", family="omniglot")
    r = evaluate_on_chip(four, TaskSampler(pool, 5, 5, 5, seed=3), 3, dep, seed=0)
    assert r["readout_w_max"] == auto_scale(four.deployable_params()["readout"]) == 0.125
    parts = r["report"]["parts"]
    assert set(parts) == {"main", f"own:{READOUT}"}
    assert set(parts[f"own:{READOUT}"]["arrays"]) == {"readout0", "readout1", "readout2"}
    assert parts[f"own:{READOUT}"]["config"]["seed"] == 1 and parts["main"]["config"]["w_max"] == 1.0
    head = dep.build(seed=3).substrate_for("readout7", torch.zeros(2, 2))
    assert isinstance(head, PCMSubstrate) and head.config.seed == 4
    fixed = place_readout(dep, Placement(READOUT, "own", {"w_max": 0.125}))
    assert len(fixed.placements) == 1 and fixed.placements[0].config == {"w_max": 0.125}
    with pytest.raises(ValueError, match="exceed the fixed w_max 0.125"):
        fixed.build(0).place("readout0", np.full((4, 5), 0.2))
    shared = place_readout(dep, None)
    assert shared.placements == () and shared.build(0).substrate_for("readout0", torch.zeros(1, 1)).config.seed == 0


def test_readout_rules_must_cover_the_per_task_readouts(model, pool):
    """A rule for "readout" alone would split the readout from the per-task readouts: a clear error."""
    dep = Deployment.preset("paper", family="omniglot").with_(placements=(Placement("readout", "digital"),))
    with pytest.raises(ValueError, match="readout<i>"):
        evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=3), 2, dep)


def test_shipped_weights_by_name_from_python():
    m = MAML.from_weights("paper_5w5s")
    assert torch.equal(m.params["readout"], MAML.from_weights(WEIGHTS_DIR / "paper_5w5s.npz").params["readout"])
    with pytest.raises(FileNotFoundError, match="shipped"):
        MAML.from_weights("no_such_weights")


def test_deploy_clips_a_quantized_models_shadow_weights_to_its_range():
    """A 4-bit (fixed [-1, 1) grid) model whose full-precision shadow drifted past 1 deploys as its quantizer
    sees it: clipped to [-1, 1], so it fits PCMConfig(w_max=1); a float model is placed as it is (and a fixed
    w_max it exceeds fails loudly)."""
    from pcmeta.agents.maml import MAMLConfig
    from pcmeta.hardware import PCMSubstrate, SoftwareSubstrate

    m = MAML(MAMLConfig(bits=4), seed=0)
    with torch.no_grad():
        m.params["conv1"][0, 0] = 1.3
        m.params["readout"][0, 0] = -1.2
    dep = m.deploy(PCMSubstrate(PCMConfig(weight_bits=4, w_max=1.0, seed=0)))
    assert float(dep.params["conv1"].max()) == 1.0 and float(dep.params["readout"].min()) == -1.0
    assert float(m.params["conv1"][0, 0].detach()) == pytest.approx(1.3)  # the model itself is untouched
    f = MAML(MAMLConfig(), seed=0)
    with torch.no_grad():
        f.params["conv1"][0, 0] = 1.3
    assert float(f.deploy(SoftwareSubstrate()).params["conv1"].max()) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="exceed the fixed w_max"):
        f.deploy(PCMSubstrate(PCMConfig(weight_bits=4, w_max=1.0, seed=0)))
