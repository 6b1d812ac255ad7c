"""examples/convert_your_model.py runs as a user would run it, and its story holds."""
import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "convert_your_model.py"


def test_convert_your_model_example_runs_and_hwa_helps(capsys):
    results = runpy.run_path(str(EXAMPLE))["main"]()
    out = capsys.readouterr().out
    assert "programming events" in out
    assert results["software"] > 0.95
    assert all(0.0 <= v <= 1.0 for v in results.values())
    # the chip costs accuracy, drift costs more over time, hardware-aware training recovers part of it
    assert results["plain 1s"] < results["software"] and results["plain 1y"] <= results["plain 1s"]
    assert results["HWA 1d"] > results["plain 1d"] + 0.05
