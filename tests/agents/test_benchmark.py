"""pcmeta as a benchmark: definitions, the run record, bad agents, an outside agent (CLI and Python), grids."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pcmeta.agents.baselines import PixelPrototypeAgent, RandomAgent
from pcmeta.agents.benchmark import RECORD_KEYS, run
from pcmeta.agents.benchmark_grid import StaleRecords, expand_grid, load_records, record_path, run_grid
from pcmeta.agents.shipped import WEIGHTS_DIR
from pcmeta.files import file_sha256
from pcmeta.tasks.benchmarks import BENCHMARKS, get_benchmark
from prototype_learner import PrototypeLearner

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_benchmark_task_sets_are_fixed_and_distinct(omniglot_dir):
    b = get_benchmark("omniglot-5w1s-v0")
    t1, t2 = b.tasks(3, data_dir=omniglot_dir), b.tasks(3, data_dir=omniglot_dir)
    assert all(np.array_equal(a.support_x, c.support_x) for a, c in zip(t1, t2))
    assert t1[0].support_x.shape == (5, 28, 28) and t1[0].query_x.shape == (25, 28, 28)
    # a slice of the set is the same tasks as the set's head
    assert np.array_equal(b.tasks(2, data_dir=omniglot_dir, start=1)[0].query_x, t1[1].query_x)
    val = b.tasks(1, part="val", data_dir=omniglot_dir)[0]
    assert not np.array_equal(val.support_x, t1[0].support_x)
    assert {x.name for x in BENCHMARKS.values()} >= {"omniglot-5w1s-v0", "omniglot-5w5s-v0", "omniglot-20w1s-v0",
                                                    "omniglot-classic-5w1s-v0", "arm-oneshot-v0"}
    with pytest.raises(ValueError, match="no benchmark 'nope'"):
        get_benchmark("nope")


def test_record_of_a_chip_run_has_the_keys_and_the_costs(omniglot_dir):
    rec = run("maml-4bit", "omniglot-5w5s-v0", "pcm", time="1d", tasks=6, seed=0, data_dir=omniglot_dir)
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["time_s"] == 86400.0 and rec["metric"] == "accuracy" and 0.7 < rec["value"] <= 1.0
    assert rec["n_tasks"] == 6 and rec["n_failed"] == 0 and len(rec["values"]) == 6
    adapt, predict = rec["cost"]["adapt"], rec["cost"]["predict"]
    assert adapt["programming_events"] > 0 and predict["programming_events"] == 0  # the readout update's pulses
    assert adapt["mvms"] > 0 and adapt["energy_J"] > 0 and predict["energy_J"] > 0
    assert rec["footprint"]["devices"] == 2 * rec["footprint"]["weights"] > 0 and rec["footprint"]["tiles"] >= 5
    sw = run("maml-4bit", "omniglot-5w5s-v0", "software", tasks=6, seed=0, data_dir=omniglot_dir)
    assert sw["cost"]["adapt"]["programming_events"] == 0 and sw["footprint"]["devices"] == 0


def test_spiking_agent_reports_activity_and_arm_metrics():
    rec = run("eprop", "arm-oneshot-v0", "software", tasks=2, seed=0)
    assert rec["metric"] == "loss" and rec["value"] > 0
    assert set(rec["secondary"]) == {"mse_omega", "mse_xyz"}
    act = rec["activity"]
    assert 0.5 < act["activation_sparsity"] < 1.0 and act["synaptic_ops"] > act["spikes"] > 0
    none = run("arm-no-adapt", "arm-oneshot-v0", "software", tasks=2, seed=0)
    assert none["value"] > rec["value"]  # the one update helps


class _Bad(PixelPrototypeAgent):
    """Fails in one of several ways on some tasks."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.n = how, 0

    def predict(self, task):
        self.n += 1
        scores = super().predict(task)
        if self.n % 2:
            return scores
        if self.how == "shape":
            return scores[:, :3]
        if self.how == "nan":
            return np.full_like(scores, np.nan)
        if self.how == "raise":
            raise RuntimeError("my agent broke")
        time.sleep(2.0)  # "slow"
        return scores


@pytest.mark.parametrize("how, reason", [("shape", "expected shape (25, 5), got (25, 3)"),
                                         ("nan", "NaN or inf"), ("raise", "RuntimeError: my agent broke"),
                                         ("slow", "time limit of 0.5 s")])
def test_bad_agents_fail_their_tasks_with_the_reason_and_the_run_goes_on(omniglot_dir, how, reason):
    rec = run(_Bad(how), "omniglot-5w5s-v0", tasks=4, data_dir=omniglot_dir, time_limit_s=0.5, agent_name=how)
    assert rec["n_failed"] == 2 and len(rec["values"]) == 2
    assert any(reason in r for r in rec["failures"]), rec["failures"]
    assert rec["value"] > 0.3 and rec["agent"] == how


def test_an_outside_agent_runs_through_the_python_api_and_the_cli(omniglot_dir, tmp_path):
    api = run(PrototypeLearner(), "omniglot-5w1s-v0", tasks=5, data_dir=omniglot_dir)
    ours = run(PixelPrototypeAgent(), "omniglot-5w1s-v0", tasks=5, data_dir=omniglot_dir)
    assert api["values"] == pytest.approx(ours["values"])  # the same learner, written outside pcmeta
    out = tmp_path / "rec.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pcmeta", "benchmark", "run", "--agent", "prototype_learner:PrototypeLearner",
           "--benchmark", "omniglot-5w1s-v0", "--tasks", "5", "--data-dir", str(omniglot_dir), "--json", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    assert rec["agent"] == "prototype_learner:PrototypeLearner" and rec["values"] == pytest.approx(api["values"])
    assert rec["command"].startswith("pcmeta benchmark run") and rec["version"]
    bad = subprocess.run(cmd[:6] + ["nowhere:agent"] + cmd[7:], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "cannot load agent 'nowhere:agent'" in bad.stderr


def test_grid_resumes_and_two_workers_write_the_serial_records(omniglot_dir, tmp_path):
    points = expand_grid(["omniglot-5w1s-v0", "omniglot-20w1s-v0", "arm-oneshot-v0"],
                         ["random", "pixel-prototype", "maml"], ["software", "pcm"], times=["1min", "1d"])
    # deployment-independent agents run in software only; MAML has no 20-way weights (recorded as unavailable)
    assert [p.agent for p in points].count("random") == 2 and all(p.benchmark != "arm-oneshot-v0" for p in points)
    serial, shared = tmp_path / "serial", tmp_path / "shared"
    c = run_grid(points, serial, tasks=3, data_dir=omniglot_dir, progress=False)
    assert c == {"done": 7, "skipped": 0, "unavailable": 3, "stale": 0}
    assert run_grid(points, serial, tasks=3, data_dir=omniglot_dir, progress=False)["skipped"] == 10
    for rank in (0, 1):
        run_grid(points, shared, tasks=3, data_dir=omniglot_dir, progress=False, rank=rank, world=2)
    a, b = load_records([serial]), load_records([shared])
    assert len(a) == len(b) == 7
    key = lambda r: (r["benchmark"], r["agent"], r["deployment"], r["time_s"])  # noqa: E731
    assert sorted((key(r), r["values"]) for r in a) == sorted((key(r), r["values"]) for r in b)


def test_grid_refuses_stale_records_and_reruns_them_when_asked(omniglot_dir, tmp_path):
    points = expand_grid(["omniglot-5w5s-v0"], ["maml", "random"], ["software", "pcm"], times=["1d"])
    assert run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False)["done"] == 3
    maml_sw, maml_pcm = (p for p in points if p.agent == "maml")
    rec = json.loads(record_path(tmp_path, maml_sw).read_text())
    assert rec["weights_sha256"] == file_sha256(WEIGHTS_DIR / "paper_5w5s.npz")
    assert json.loads(record_path(tmp_path, points[-1]).read_text())["weights_sha256"] is None  # random: no file
    # another task count: every record is stale, nothing runs
    with pytest.raises(StaleRecords, match="3 record.*ran on 2 tasks, 3 asked for"):
        run_grid(points, tmp_path, tasks=3, data_dir=omniglot_dir, progress=False)

    def tamper(point, **change):
        path = record_path(tmp_path, point)
        r = json.loads(path.read_text())
        r.update(change)
        for k in [k for k, v in change.items() if v is None]:
            del r[k]
        path.write_text(json.dumps(r))

    tamper(maml_sw, weights_sha256="0" * 64)  # as if the shipped file had been replaced since
    with pytest.raises(StaleRecords, match=r"1 record.*made with other weights \(SHA-256 000000000000"):
        run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False)
    tamper(maml_sw, weights_sha256=None)  # a record of an older pcmeta
    with pytest.raises(StaleRecords, match="no weights fingerprint"):
        run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False)
    config = json.loads(record_path(tmp_path, maml_pcm).read_text())["deployment_config"]
    tamper(maml_pcm, deployment_config={**config, "config": {**config["config"], "weight_bits": 8}})
    with pytest.raises(StaleRecords, match="2 record.*deployment settings differ from the preset's now in config.weight_bits"):
        run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False)
    c = run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False, stale="rerun")
    assert c == {"done": 2, "skipped": 1, "unavailable": 0, "stale": 2}
    assert run_grid(points, tmp_path, tasks=2, data_dir=omniglot_dir, progress=False)["skipped"] == 3
    assert json.loads(record_path(tmp_path, maml_sw).read_text())["weights_sha256"] == rec["weights_sha256"]


def test_cli_names_stale_records_and_reruns_them_with_rerun_stale(omniglot_dir, tmp_path):
    cmd = [sys.executable, "-m", "pcmeta", "benchmark", "run", "--agent", "random", "--benchmark",
           "omniglot-5w1s-v0", "--data-dir", str(omniglot_dir), "--out", str(tmp_path), "--no-progress", "--tasks"]
    assert subprocess.run(cmd + ["2"], capture_output=True, text=True, timeout=300).returncode == 0
    bad = subprocess.run(cmd + ["3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "ran on 2 tasks, 3 asked for" in bad.stderr and "--rerun-stale" in bad.stderr
    ok = subprocess.run(cmd + ["3", "--rerun-stale"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "1 points run (1 of them stale records replaced)" in ok.stdout
    assert json.loads(next(tmp_path.glob("*.json")).read_text())["n_tasks"] == 3


def test_report_writes_a_leaderboard_and_plots(omniglot_dir, tmp_path):
    from pcmeta.demos.benchmark_report import write_report

    for agent in (RandomAgent(), PixelPrototypeAgent()):
        rec = run(agent, "omniglot-5w5s-v0", tasks=4, data_dir=omniglot_dir)
        (tmp_path / f"{rec['agent']}.json").write_text(json.dumps(rec))
    paths = write_report([tmp_path], tmp_path / "report")
    md = paths[0].read_text()
    assert "| PixelPrototypeAgent | software |" in md and "| RandomAgent | software |" in md
    assert md.index("PixelPrototypeAgent") < md.index("RandomAgent")  # best first
    assert paths[1].suffix == ".png" and paths[1].stat().st_size > 1000
    rec = run("maml", "omniglot-5w5s-v0", tasks=2, data_dir=omniglot_dir)
    (tmp_path / "maml.json").write_text(json.dumps(rec))
    sha = file_sha256(WEIGHTS_DIR / "paper_5w5s.npz")
    assert f"| {sha[:10]} |" in write_report([tmp_path], tmp_path / "report")[0].read_text()
    (tmp_path / "maml_seed1.json").write_text(json.dumps({**rec, "seed": 1, "weights_sha256": "f" * 64}))
    with pytest.raises(ValueError, match=f"records of maml were made with different weights files \\({sha[:10]}, "
                                         "ffffffffff\\)"):
        write_report([tmp_path], tmp_path / "report")


def test_the_env_episode_loop_scores_like_the_harness(omniglot_dir):
    from pcmeta.agents import EpropAgent
    from pcmeta.agents.benchmark_env import env_scores

    for query_batch in (False, True):
        res = env_scores(PixelPrototypeAgent(), "omniglot-5w1s-v0", 6, data_dir=omniglot_dir, query_batch=query_batch)
        assert res.values.tolist() == pytest.approx(run(PixelPrototypeAgent(), "omniglot-5w1s-v0", tasks=6,
                                                        data_dir=omniglot_dir)["values"])
    arm = env_scores(EpropAgent.from_weights(), "arm-oneshot-v0", 2)
    assert arm.values.tolist() == pytest.approx(run("eprop", "arm-oneshot-v0", tasks=2)["values"], rel=1e-6)

    class StandStill:  # an RL-style policy: act(obs) only
        def act(self, obs):
            return np.zeros(2, np.float32)

    still = env_scores(StandStill(), "arm-oneshot-v0", 2)
    assert still.mean > 5 * arm.mean  # not moving is far worse than one-shot learning
