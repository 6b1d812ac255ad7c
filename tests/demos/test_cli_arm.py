"""The arm commands' deployment flags and results (pcmeta.demos.arm_options, arm_eval, arm_demo): the old flags are
aliases of ONE Deployment, every --json result records it with the command, --weights authors is found through
$PCMETA_REFERENCE_DIR (or fails in one clear line), and ``arm demo`` runs headless."""
from __future__ import annotations

import json

import pytest

from pcmeta.demos.arm_options import arm_deployment
from pcmeta.demos.cli import build_parser, main
from pcmeta.hardware.deployment import Deployment, Placement


def _dep(*argv: str):
    """The Deployment that ``pcmeta arm eval|demo ARGV`` runs on."""
    args = build_parser().parse_args(list(argv))
    return arm_deployment(args, "software" if args.command == "eval" else "pcm")


def test_aliases_give_the_same_deployment():
    paper = Deployment.preset("paper", family="arm")
    assert _dep("arm", "eval", "--pcm-preset", "authors") == _dep("arm", "eval", "--deployment", "paper") == paper
    assert _dep("arm", "eval", "--substrate", "pcm", "--pcm-preset", "authors") == paper
    assert _dep("arm", "demo", "--pcm-preset", "tuned") == _dep("arm", "eval", "--substrate", "pcm") \
        == Deployment.preset("pcm", family="arm")
    assert _dep("arm", "eval", "--substrate", "pcm-authors") == Deployment.preset("authors-model", family="arm")
    assert _dep("arm", "eval") == _dep("arm", "demo", "--substrate", "software") == Deployment.preset("software", "arm")
    assert _dep("arm", "demo") == Deployment.preset("pcm", family="arm")  # demo's default
    assert _dep("arm", "eval", "--substrate", "pcm", "--time", "1d").time_s == 86400.0


def test_override_flags_change_the_deployment(tmp_path):
    d = _dep("arm", "eval", "--deployment", "paper", "--digital-readout", "--no-compensated-update",
             "--update-rounding", "stochastic", "--w-max", "array", "--update-grid", "0.125")
    assert d.name == "paper+update-rounding+update-grid+w-max+compensated-update+digital-readout"
    assert d.placements == (Placement("*.W_out", "digital"),) and d.clip == 1.0
    c = d.pcm_config()
    assert (c.update_rounding, c.update_grid, c.w_max, c.update_frame) == ("stochastic", 0.125, None, "device")
    d = _dep("arm", "eval", "--substrate", "pcm", "--no-clip", "--w-max", "0.5")
    assert d.clip is None and d.pcm_config().w_max is None  # --no-clip: each array on its own scale, as before
    path = tmp_path / "dep.json"
    path.write_text(d.to_json())
    assert _dep("arm", "eval", "--deployment", str(path)) == d
    with pytest.raises(ValueError, match="--w-max"):
        _dep("arm", "eval", "--substrate", "pcm", "--w-max", "big")


@pytest.mark.parametrize("argv", [
    ["--deployment", "paper", "--substrate", "pcm"],                # a name and its alias
    ["--pcm-preset", "tuned", "--substrate", "software"],           # a PCM preset off PCM
    ["--update-grid", "0.1"],                                       # PCM options on software
    ["--substrate", "pcm-authors", "--drift-compensation", "none"],  # PCM options on the authors' model
    ["--digital-readout"],                                          # software has no readout to take off a chip
    ["--deployment", "nonesuch"],
    ["--substrate", "pcm-authors", "--engine", "brian2"],          # the authors' model reads noise per MVM
    ["--substrate", "pcm", "--round-update"],                       # a chip rounds its updates itself
])
def test_bad_deployment_flags_exit_2_with_one_line(argv, capsys):
    assert main(["arm", "eval", "--tasks", "1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcmeta: error:") and "\n" not in err and "Traceback" not in err


def test_json_result_records_deployment_and_command(tmp_path):
    out = tmp_path / "sub" / "eval.json"
    argv = ["arm", "eval", "--tasks", "1", "--substrate", "pcm", "--time", "1d", "--seed", "2", "--json", str(out)]
    assert main(argv) == 0
    d = json.loads(out.read_text())
    assert d["deployment"] == Deployment.preset("pcm", family="arm").with_(time_s=86400.0).to_dict()
    assert d["command"] == "pcmeta " + " ".join(argv) and d["version"]
    assert d["tasks"] == 1 and d["loss_after"] < d["loss_before"] and d["engine"] == "torch"


def test_weights_authors_through_the_reference_dir(reference_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir))
    out = tmp_path / "eval.json"
    assert main(["arm", "eval", "--tasks", "2", "--weights", "authors", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["weights"] == str(reference_dir / "authors_arm_natural_eprop.npz")
    capsys.readouterr()
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(tmp_path / "empty"))
    for cmd in (["arm", "eval", "--tasks", "1"], ["arm", "demo", "--no-video", "--plot", str(tmp_path / "p.png")]):
        assert main([*cmd, "--weights", "authors"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pcmeta: error:") and "\n" not in err
        assert "PCMETA_REFERENCE_DIR" in err and "authors_arm_natural_eprop.npz" in err


def test_arm_demo_runs_headless(tmp_path, capsys):
    from PIL import Image

    gif, js = tmp_path / "demo.gif", tmp_path / "demo.json"
    assert main(["arm", "demo", "--engine", "torch", "--every", "50", "--out", str(gif), "--json", str(js)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (644, 240)  # reset, steps 50..200 and 249; two 320 px trials
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    d = json.loads(js.read_text())
    assert d["deployment"]["name"] == "pcm" and d["command"].startswith("pcmeta arm demo")
    assert d["mse_xyz_test"] < 0.3 * d["mse_xyz_demo"]
    assert "test (after ONE update)" in capsys.readouterr().out


def test_bench_snn_times_the_default_recipe_and_its_variants(tmp_path, capsys):
    """`pcmeta bench snn` times a meta-training iteration under the default recipe's loss, the per-step autograd
    reference, the voltage regularisation's (B, T, n) reference and the same without it, side by side."""
    out = tmp_path / "bench.json"
    assert main(["bench", "snn", "--episodes", "1", "--train-batch", "1", "--train-iters", "1",
                 "--json", str(out)]) == 0
    figs = json.loads(out.read_text())
    for k in ("train_iter_s", "train_iter_per_step_autograd_s", "train_iter_no_voltage_reg_s",
              "train_iter_full_voltage_record_s"):
        assert figs[k] > 0, k
    printed = capsys.readouterr().out
    assert "without the voltage regularisation (--voltage-reg 0)" in printed and "(B, T, n) records" in printed
