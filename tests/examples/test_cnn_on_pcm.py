"""examples/cnn_on_pcm.py --quick: a LeNet trained plainly and noise-aware, run on the simulated chip."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _data_dir() -> Path:
    d = Path(os.environ.get("PCMETA_DATA_DIR") or REPO.parent / "shared" / "data" / "omniglot")
    if not (d / "images_background.zip").exists() and not (d / "images_background").is_dir():
        pytest.skip(f"Omniglot background set not found in {d} (set PCMETA_DATA_DIR)")
    return d



def test_quick_run_writes_csv_png_and_resumes(tmp_path, capsys, load_example):
    data, script = _data_dir(), load_example("cnn_on_pcm")
    out = tmp_path / "cnn"
    n = torch.get_num_threads()
    try:
        script.main(["--out", str(out), "--data-dir", str(data), "--quick"])
    finally:
        torch.set_num_threads(n)
    with open(out / "accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "time_s", "time", "compensation", "accuracy", "ci95", "n_seeds"]
    # 2 models x 2 times x (float reference, global, none)
    assert len(rows) == 2 * 2 * 3
    assert {(r["model"], r["compensation"]) for r in rows} == {
        (m, c) for m in ("plain", "hwa") for c in ("float", "global", "none")}
    assert {r["time"] for r in rows} == {"1s", "1y"}
    for r in rows:
        acc, ci = float(r["accuracy"]), float(r["ci95"])
        assert math.isfinite(acc) and 0.0 <= acc <= 1.0, r
        assert math.isfinite(float(r["time_s"])) and float(r["time_s"]) > 0, r
        assert int(r["n_seeds"]) == 1 and math.isnan(ci), r  # one chip seed: no confidence interval
    assert (out / "accuracy.png").stat().st_size > 1000
    for name in ("plain.pt", "hwa.pt", "timing.json"):
        assert (out / name).is_file()
    assert "ratio" in capsys.readouterr().out

    # resumable: the trained weights are loaded, not trained again
    script.main(["--out", str(out), "--data-dir", str(data), "--quick"])
    printed = capsys.readouterr().out
    loaded = [line for line in printed.splitlines() if line.startswith("loaded ")]
    assert len(loaded) == 3 and "epoch 1/1" not in printed  # base.pt, plain.pt, hwa.pt
