"""examples/benchmark_agent.py runs through the benchmark harness as docs/benchmark.md tells a user to."""
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_agent_through_the_cli_on_software_and_pcm(omniglot_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    values = {}
    for dep in ("software", "pcm"):
        out = tmp_path / f"{dep}.json"
        cmd = [sys.executable, "-m", "pcmeta", "benchmark", "run", "--agent", "benchmark_agent:make_agent",
               "--benchmark", "omniglot-5w5s-v0", "--deployment", dep, "--time", "1d", "--tasks", "12",
               "--data-dir", str(omniglot_dir), "--json", str(out), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        rec = json.loads(out.read_text())
        assert rec["n_failed"] == 0 and rec["agent"] == "benchmark_agent:make_agent"
        values[dep] = rec["value"]
        if dep == "pcm":  # its weights really are on the chip
            assert rec["footprint"]["devices"] > 2 * 784 * 128 and rec["cost"]["adapt"]["programming_events"] > 0
    assert values["software"] > 0.45  # chance is 0.2
    assert abs(values["pcm"] - values["software"]) < 0.1
