"""examples/ppo_on_pcm.py --quick: a stable-baselines3 PPO policy trained on the arm env, run on the simulated chip."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("stable_baselines3")

REPO = Path(__file__).resolve().parents[2]



def test_quick_run_writes_csv_png_and_resumes(tmp_path, capsys, load_example):
    script = load_example("ppo_on_pcm")
    out = tmp_path / "ppo"
    n = torch.get_num_threads()
    try:
        script.main(["--out", str(out), "--quick"])
    finally:
        torch.set_num_threads(n)
    with open(out / "returns.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["time_s", "time", "compensation", "mean_return", "ci95", "n_episodes", "n_chips"]
    # 2 times x (chip with global / no compensation, float and random references)
    assert len(rows) == 2 * 4
    assert {(r["time"], r["compensation"]) for r in rows} == {
        (t, c) for t in ("1s", "1y") for c in ("global", "none", "float", "random")}
    for r in rows:
        ret, ci = float(r["mean_return"]), float(r["ci95"])
        assert math.isfinite(ret) and ret <= 0.0, r  # reward = minus a squared distance
        assert math.isfinite(ci) and ci >= 0.0, r
        assert float(r["time_s"]) in (1.0, 365 * 86400.0), r
        assert int(r["n_episodes"]) == 3, r
        assert int(r["n_chips"]) == (1 if r["compensation"] in ("global", "none") else 0), r
    float_rows = [r for r in rows if r["compensation"] == "float"]
    assert float_rows[0]["mean_return"] == float_rows[1]["mean_return"]  # the reference is one evaluation
    assert (out / "returns.png").stat().st_size > 1000
    timing = json.loads((out / "timing.json").read_text())
    assert all(math.isfinite(timing[f"ratio_{k}"]) and timing[f"ratio_{k}"] > 0 for k in ("batch", "single", "episode"))
    assert (out / "ppo_policy.zip").is_file()
    assert "ratio" in capsys.readouterr().out

    # resumable: the trained agent is loaded, not trained again
    try:
        script.main(["--out", str(out), "--quick"])
    finally:
        torch.set_num_threads(n)
    printed = capsys.readouterr().out
    assert "loaded " in printed and "training PPO" not in printed
