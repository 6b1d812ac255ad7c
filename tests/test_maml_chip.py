"""MAML deployed on the simulated PCM chip (pcmeta.agents.maml_chip) and the sweep CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from pcmeta.agents.maml import MAML, WEIGHTS_DIR, evaluate
from pcmeta.agents.maml_chip import ChipProtocol, chip_cost, evaluate_on_chip
from pcmeta.hardware import PCMConfig
from pcmeta.tasks.omniglot import TaskSampler, class_pool



@pytest.fixture(scope="module")
def model():
    return MAML.from_weights(WEIGHTS_DIR / "paper_5w5s.npz")


@pytest.fixture(scope="module")
def pool(omniglot_dir):
    return class_pool("paper", "test", omniglot_dir)


def test_chip_protocol_in_software_equals_plain_evaluation(model, pool):
    plain = evaluate(model, TaskSampler(pool, 5, 5, 5, seed=11), tasks=20)
    chip = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=11), 20, ChipProtocol(substrate="software"))
    assert np.allclose(chip["acc"], plain, atol=1e-6)
    assert chip["acc_steps"].shape == (20, 5)
    assert np.allclose(chip["acc_steps"][:, -1], chip["acc"])
    assert chip["acc_steps"][:, 0].mean() < chip["acc_steps"][:, -1].mean() - 0.3  # adaptation is what learns


def test_ideal_pcm_makes_the_same_predictions_as_software(model, pool):
    """Acceptance: every PCM effect off, 32-bit weights -> the same predictions as software."""
    sw = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=12), 20, ChipProtocol(substrate="software"),
                          return_predictions=True)
    ideal = PCMConfig.ideal(w_max=1.0)
    pcm = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=12), 20,
                           ChipProtocol(pcm=ideal, t_adapt_s=86400.0), return_predictions=True)
    same = (sw["predictions"] == pcm["predictions"]).mean()
    assert same >= 0.995
    assert abs(sw["mean"] - pcm["mean"]) <= 0.005


def test_pcm_non_idealities_cost_accuracy_and_compensation_or_readaptation_recover(model, pool):
    base = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10, ChipProtocol(substrate="software"))
    # float weights on PCM with per-array scaling, one year of uncompensated drift of the readout
    pcm = PCMConfig(weight_bits=None, w_max=None)
    drifted = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10,
                               ChipProtocol(pcm=pcm, t_adapt_s=60.0, t_query_s=3.15e7))
    readapted = evaluate_on_chip(model, TaskSampler(pool, 5, 5, 5, seed=13), 10,
                                 ChipProtocol(pcm=pcm, t_adapt_s=60.0, t_query_s=3.15e7, readapt=True))
    assert drifted["mean"] < base["mean"]
    assert readapted["mean"] >= drifted["mean"]


def test_readout_updates_are_programming_events(model, pool):
    cost = chip_cost(model, TaskSampler(pool, 5, 5, 5, seed=14), ChipProtocol())
    assert cost["programming"]["programming_events"] > 9 * 56 * 1  # the conv layers were programmed
    assert cost["adaptation"]["programming_events"] > 0           # on-chip updates pulsed devices
    assert cost["inference"]["programming_events"] == 0
    assert cost["inference"]["mvms"] == 25 * (14 * 14 + 7 * 7 + 4 * 4 + 2 * 2) + 25  # im2col vectors + readout
    assert cost["adaptation"]["energy_J"] > 0


def test_chip_protocol_rejects_bad_input():
    with pytest.raises(ValueError, match="substrate"):
        ChipProtocol(substrate="fpga")
    with pytest.raises(ValueError, match="t_adapt_s"):
        ChipProtocol(t_adapt_s=100.0, t_query_s=10.0)
    with pytest.raises(ValueError, match="steps"):
        ChipProtocol(steps=-1)


def test_eval_cli_on_pcm_writes_json(tmp_path, omniglot_dir):
    from pcmeta.demos.cli import main

    out = tmp_path / "e.json"
    rc = main(["omniglot", "eval", "--substrate", "pcm", "--time", "1h", "--tasks", "4", "--data-dir",
               str(omniglot_dir), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["substrate"] == "pcm" and res["time_s"] == 3600.0 and res["tasks"] == 4
    assert 0.0 <= res["accuracy"] <= 1.0
    # without --weights the chip gets the weights meta-trained for 4 bits, software the float ones
    assert res["weights"].endswith("paper_5w5s_4bit.npz")
    assert main(["omniglot", "eval", "--substrate", "pcm", "--time", "soon", "--tasks", "2"]) == 2


def test_sweep_quick_writes_csv_plots_and_table(tmp_path, omniglot_dir):
    from pcmeta.demos.cli import main

    out = tmp_path / "sweep"
    rc = main(["omniglot", "sweep", "--quick", "--tasks", "3", "--data-dir", str(omniglot_dir), "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    groups = {r["group"] for r in rows}
    assert {"time", "prog_noise", "weight_bits", "adc_bits", "steps", "placement", "readout_scale"} <= groups
    conds = {r["condition"] for r in rows if r["group"] == "time"}
    assert len(conds) == 4
    assert all(r["command"].startswith("pcmeta omniglot sweep") for r in rows)
    for g in groups:
        assert (out / f"sweep_{g}.png").stat().st_size > 10_000
    cost = json.loads((out / "cost.json").read_text())
    assert cost["pcm"]["inference"]["macs"] > 0 and cost["pcm"]["inference"]["programming_events"] == 0
    assert cost["digital_baseline"]["inference"]["energy_J"] > 0
    assert "| time |" in (out / "sweep.md").read_text()


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


def test_readout_on_its_own_crossbar():
    """readout_pcm puts the readout on a separate PCM substrate with its own scale; weights beyond it fail
    loudly (no silent clipping); the CLI's 'auto' scale is the smallest power of two above max |readout|."""
    from pcmeta.agents.maml import MAMLConfig
    from pcmeta.demos.cli_omniglot import readout_scale
    from pcmeta.hardware import PCMSubstrate

    proto = ChipProtocol(pcm=PCMConfig(weight_bits=4, w_max=1.0), readout_pcm=PCMConfig(weight_bits=4, w_max=0.125))
    conv, head = proto.make_substrates(seed=3)
    assert isinstance(head, PCMSubstrate) and head is not conv
    assert head.config.w_max == 0.125 and conv.config.w_max == 1.0
    arr = head.place("readout", np.full((4, 5), 0.1))
    assert np.allclose(arr.read(ideal=True), 0.1)
    with pytest.raises(ValueError, match="exceed the fixed w_max 0.125"):
        head.place("big", np.full((4, 5), 0.2))
    same = ChipProtocol(pcm=PCMConfig(weight_bits=4, w_max=1.0)).make_substrates(seed=3)
    assert same[0] is same[1]

    with pytest.raises(ValueError, match="readout_pcm"):
        ChipProtocol(substrate="software", readout_pcm=PCMConfig(w_max=0.125))
    with pytest.raises(ValueError, match="readout_pcm"):
        ChipProtocol(readout_on_chip=False, readout_pcm=PCMConfig(w_max=0.125))

    m = MAML(MAMLConfig(bits=4), seed=0)
    with torch.no_grad():
        m.params["readout"].fill_(0.03)
        m.params["readout"][0, 0] = 0.077
    assert readout_scale(m, "auto") == 0.125
    with torch.no_grad():
        m.params["readout"][0, 0] = 3.0  # past the 4-bit range: deployed (and scaled) as 1
    assert readout_scale(m, "auto") == 1.0
    assert readout_scale(m, "0.3") == 0.3
    with pytest.raises(ValueError, match="positive number or 'auto'"):
        readout_scale(m, "-1")


def test_compare_table_is_deterministic(tmp_path, omniglot_dir):
    """Acceptance 4 of the chip issue: the same seed gives the same table (every row, every step)."""
    from pcmeta.demos.cli import main

    rows = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["omniglot", "compare", "--tasks", "2", "--shots", "5", "--data-dir", str(omniglot_dir),
                     "--out", str(out)]) == 0
        rows.append(json.loads((out / "compare.json").read_text())["rows"])
    assert rows[0] == rows[1]
    assert len(rows[0]) == 7 and any("readout w_max" in k for k in rows[0])
    other = tmp_path / "c"
    assert main(["omniglot", "compare", "--tasks", "2", "--shots", "5", "--seed", "1", "--data-dir",
                 str(omniglot_dir), "--out", str(other)]) == 0
    assert json.loads((other / "compare.json").read_text())["rows"] != rows[0]


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
