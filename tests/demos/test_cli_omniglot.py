"""``pcmeta omniglot eval|compare|sweep``: deployments, result files, weights by name, clear errors."""
from __future__ import annotations

import csv
import json
import os

from pcmeta.demos.cli import main
from pcmeta.hardware import Deployment


def _eval(tmp_path, omniglot_dir, *extra: str, name: str = "e.json", tasks: int = 5) -> dict:
    out = tmp_path / name
    rc = main(["omniglot", "eval", "--tasks", str(tasks), "--data-dir", str(omniglot_dir), "--json", str(out),
               *extra])
    assert rc == 0
    return json.loads(out.read_text())


def _error(capsys, *argv: str) -> str:
    """The one-line error of a command that must fail with exit status 2."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcmeta: error: ") and len(err.splitlines()) == 1, err
    return err


def test_substrate_pcm_is_the_pcm_preset_and_paper_the_shared_scale(tmp_path, omniglot_dir):
    """--substrate pcm = --deployment pcm (the readout on its own crossbar scale, the documented default);
    --deployment paper keeps every layer on w_max 1. Both take the 4-bit weights and adapt 1 min after
    programming; each result records its deployment and the command."""
    alias = _eval(tmp_path, omniglot_dir, "--substrate", "pcm", name="alias.json")
    pcm = _eval(tmp_path, omniglot_dir, "--deployment", "pcm", name="pcm.json")
    paper = _eval(tmp_path, omniglot_dir, "--deployment", "paper", name="paper.json")
    both = _eval(tmp_path, omniglot_dir, "--substrate", "pcm", "--deployment", "paper", name="both.json")
    assert both["deployment"] == paper["deployment"] and both["accuracy"] == paper["accuracy"]
    assert Deployment.from_dict(alias["deployment"]) == Deployment.preset("pcm", family="omniglot")
    assert alias["deployment"] == pcm["deployment"] and alias["accuracy"] == pcm["accuracy"]
    assert Deployment.from_dict(paper["deployment"]) == Deployment.preset("paper", family="omniglot")
    assert pcm["readout_w_max"] == 0.125 and paper["readout_w_max"] == 1.0
    for res in (pcm, paper):
        assert res["substrate"] == "pcm" and res["time_s"] == 60.0 and res["weight_bits"] == 4
        assert res["weights"].endswith("paper_5w5s_4bit.npz") and 0.0 <= res["accuracy"] <= 1.0
    assert paper["command"].startswith("pcmeta omniglot eval --tasks 5") and "--deployment paper" in paper["command"]
    assert "version" in paper


def test_overrides_and_deployment_files(tmp_path, omniglot_dir):
    """--time (the one parser), --drift-compensation and --readout-w-max change the deployment; a JSON file
    written by Deployment.to_json is a deployment too; the software alias maps --bits 4 to software-4bit."""
    res = _eval(tmp_path, omniglot_dir, "--deployment", "paper", "--time", "1h", "--drift-compensation", "global",
                "--readout-w-max", "0.25")
    dep = Deployment.from_dict(res["deployment"])
    assert dep.time_s == 3600.0 and dep.config["drift_compensation"] == "global"
    assert dep.placements[0].match == "readout*" and dep.placements[0].config == {"w_max": 0.25}
    assert res["readout_w_max"] == 0.25 and res["drift_compensation"] == "global"
    f = tmp_path / "dep.json"
    f.write_text(dep.to_json())
    again = _eval(tmp_path, omniglot_dir, "--deployment", str(f), name="again.json")
    assert again["deployment"] == res["deployment"] and again["accuracy"] == res["accuracy"]
    sw = _eval(tmp_path, omniglot_dir, "--substrate", "software", "--bits", "4", name="sw.json")
    assert sw["deployment"]["name"] == "software-4bit" and sw["deployment"]["config"] == {"bits": 4}
    assert sw["weights"].endswith("paper_5w5s.npz")
    plain = _eval(tmp_path, omniglot_dir, name="plain.json")
    assert plain["deployment"]["name"] == "software" and plain["substrate"] == "software"


def test_authors_weights(tmp_path, omniglot_dir, reference_dir, monkeypatch, capsys):
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir))
    res = _eval(tmp_path, omniglot_dir, "--weights", "authors")
    assert res["weights"].endswith("authors_omniglot_maml.npz") and res["accuracy"] > 0.5
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(tmp_path / "nowhere"))
    err = _error(capsys, "omniglot", "eval", "--weights", "authors", "--tasks", "2", "--data-dir", str(omniglot_dir))
    assert "PCMETA_REFERENCE_DIR" in err and "authors_omniglot_maml.npz" in err


def test_bad_deployments_are_one_line_errors(tmp_path, omniglot_dir, capsys):
    d = ["--tasks", "2", "--data-dir", str(omniglot_dir)]
    err = _error(capsys, "omniglot", "eval", "--deployment", "fpga", *d)
    assert "no deployment preset 'fpga'" in err and "paper" in err
    assert "no such file" in _error(capsys, "omniglot", "eval", "--deployment", str(tmp_path / "x.json"), *d)
    assert "cannot read the duration" in _error(capsys, "omniglot", "eval", "--substrate", "pcm", "--time", "soon", *d)
    assert "contradicts" in _error(capsys, "omniglot", "eval", "--substrate", "software", "--deployment", "paper", *d)
    assert "chip deployment" in _error(capsys, "omniglot", "eval", "--readout-w-max", "0.5", *d)
    assert "'arm'" not in _error(capsys, "omniglot", "eval", "--deployment", "authors-model", *d)
    assert "positive number or 'auto'" in _error(capsys, "omniglot", "eval", "--substrate", "pcm", "--readout-w-max",
                                                 "-1", *d)


def test_compare_table_is_deterministic_and_records_deployments(tmp_path, omniglot_dir):
    """The same seed gives the same table (every row, every step); compare.json records each row's deployment."""
    rows = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["omniglot", "compare", "--tasks", "2", "--shots", "5", "--data-dir", str(omniglot_dir),
                     "--out", str(out)]) == 0
        res = json.loads((out / "compare.json").read_text())
        rows.append(res["rows"])
    assert rows[0] == rows[1]
    assert len(rows[0]) == 7 and any("readout w_max 0.125" in k for k in rows[0])
    assert res["deployments"]["PCM, 1 day"]["time_s"] == 86400.0 and res["command"].startswith("pcmeta omniglot")
    assert res["deployments"]["PCM, 1 min, readout w_max 0.125"]["name"] == "pcm"
    other = tmp_path / "c"
    assert main(["omniglot", "compare", "--tasks", "2", "--shots", "5", "--seed", "1", "--data-dir",
                 str(omniglot_dir), "--out", str(other)]) == 0
    assert json.loads((other / "compare.json").read_text())["rows"] != rows[0]


def test_sweep_quick_writes_csv_plots_and_table(tmp_path, omniglot_dir, capsys):
    out = tmp_path / "sweep"
    rc = main(["omniglot", "sweep", "--quick", "--tasks", "3", "--data-dir", str(omniglot_dir), "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    groups = {r["group"] for r in rows}
    assert {"time", "prog_noise", "weight_bits", "adc_bits", "steps", "placement", "readout_scale"} <= groups
    assert len({r["condition"] for r in rows if r["group"] == "time"}) == 4
    assert all(r["command"].startswith("pcmeta omniglot sweep") for r in rows)
    placed = {r["condition"]: Deployment.from_dict(json.loads(r["deployment"])) for r in rows
              if r["group"] == "placement"}
    assert placed["readout alone on PCM"].placements[0].match == "conv*"
    assert placed["conv on PCM, readout digital"].placements[0].where == "digital"
    for g in groups:
        assert (out / f"sweep_{g}.png").stat().st_size > 10_000
    cost = json.loads((out / "cost.json").read_text())
    assert cost["pcm"]["inference"]["macs"] > 0 and cost["pcm"]["inference"]["programming_events"] == 0
    assert cost["digital_baseline"]["inference"]["energy_J"] > 0 and cost["deployment"]["name"] == "paper"
    assert "| time |" in (out / "sweep.md").read_text()
    # the points are independent jobs: a rerun skips those done; two workers write the serial result
    n_points = len(list((out / "points").glob("[0-9]*.json")))
    (out / "points" / "0.json").unlink()
    assert main(["omniglot", "sweep", "--quick", "--tasks", "3", "--data-dir", str(omniglot_dir), "--out",
                 str(out)]) == 0
    assert list(csv.DictReader(open(out / "sweep.csv"))) == rows and len(list((out / "points").glob("[0-9]*.json"))) \
        == n_points
    assert main(["omniglot", "sweep", "--quick", "--tasks", "2", "--data-dir", str(omniglot_dir), "--out",
                 str(out)]) == 2
    assert "holds sweep points made with other settings (tasks)" in capsys.readouterr().err
    # a weights file replaced since (its SHA-256), or a deployment the code now builds otherwise: refused too
    stamp, point = out / "points" / "settings.json", out / "points" / "1.json"
    settings = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**settings, "weights_sha256": "0" * 64}))
    again = ["omniglot", "sweep", "--quick", "--tasks", "3", "--data-dir", str(omniglot_dir), "--out", str(out)]
    assert main(again) == 2 and "other settings (weights_sha256)" in capsys.readouterr().err
    stamp.write_text(json.dumps(settings))
    rows_1 = json.loads(point.read_text())
    point.write_text(json.dumps([{**rows_1[0], "deployment": rows_1[0]["deployment"].replace("1", "2", 1)}]))
    assert main(again) == 2 and "1.json was made under another deployment" in capsys.readouterr().err


def test_sweep_points_shared_by_two_torchrun_workers(tmp_path, omniglot_dir):
    import subprocess
    import sys

    serial, shared = tmp_path / "serial", tmp_path / "shared"
    args = ["omniglot", "sweep", "--quick", "--tasks", "2", "--data-dir", str(omniglot_dir)]
    assert main([*args, "--out", str(serial)]) == 0
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pcmeta", *args, "--out", str(shared)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    strip = lambda p: [{k: v for k, v in r.items() if k != "command"} for r in csv.DictReader(open(p))]  # noqa: E731
    assert strip(shared / "sweep.csv") == strip(serial / "sweep.csv")
