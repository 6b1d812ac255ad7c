"""Data-parallel MAML meta-training (pcmeta.agents.distributed): 2 gloo processes on CPU with a meta-batch
of 2 x B tasks match one process with the same 2B tasks (meta-gradient, parameters after 3 iterations)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from pcmeta.agents.maml import preset
from pcmeta.agents.distributed import DistContext
from pcmeta.agents.maml.training import RUN_FILES, Trainer

B = 2  # tasks per rank
CFG = dict(channels=8, meta_batch=2 * B, iterations=3)

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from pcmeta.agents.maml import preset
    from pcmeta.agents.maml.training import Trainer
    from pcmeta.agents import distributed

    data_dir, run_dir, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    tr = Trainer(preset("paper-5w1s", **cfg), run_dir, data_dir, seed=3, eval_every=3, eval_tasks=4,
                 log_every=1, checkpoint_every=2)
    assert tr.dist.world_size == 2, tr.dist
    tr.step()  # iteration 1 (outside train(): the run folder is not held yet)
    grads = {k: p.grad.clone() for k, p in tr.model.params.items()}
    res = tr.train(progress=True)
    torch.save({"grads": grads, "params": {k: v.detach().clone() for k, v in tr.model.params.items()},
                "history": res["history"], "sampler": tr.sampler.get_state()}, f"{out}.{tr.dist.rank}.pt")
    distributed.destroy()
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(tmp_path, omniglot_dir, cfg: dict, world: int = 2) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_dir, out = tmp_path / "run-ddp", tmp_path / "out"
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
               "RANK": str(r), "LOCAL_RANK": str(r), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(omniglot_dir), str(run_dir), str(out),
                                       json.dumps(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    logs = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=120)
            logs.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (rc, o, e) in enumerate(logs):
        assert rc == 0, f"rank {r} failed ({rc}):\n{o}\n{e}"
    assert "meta-train" in logs[0][2] and "meta-train" not in logs[1][2]  # progress bar on rank 0 only
    return [torch.load(f"{out}.{r}.pt") for r in range(world)], run_dir


def test_two_ranks_match_one_process(tmp_path, omniglot_dir):
    ranks, ddp_dir = _run_ranks(tmp_path, omniglot_dir, CFG)

    ref = Trainer(preset("paper-5w1s", **CFG), tmp_path / "run-one", omniglot_dir, seed=3, eval_every=3,
                  eval_tasks=4, log_every=1, checkpoint_every=2, dist=DistContext())
    ref.step()
    ref_grads = {k: p.grad.clone() for k, p in ref.model.params.items()}
    ref_out = ref.train(progress=False)

    for r, got in enumerate(ranks):
        for k, g in ref_grads.items():
            # rtol 1e-5, with an absolute floor at 1e-5 of the tensor's largest entry: float32 sums in another
            # order (per rank, then across ranks) move entries near zero (cancellation) by ~1e-7 absolute
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()),
                                       msg=lambda m, k=k, r=r: f"rank {r} gradient {k}: {m}")
        for k, v in ref.model.params.items():
            torch.testing.assert_close(got["params"][k], v.detach(), rtol=0, atol=1e-6, msg=f"rank {r} param {k}")
        assert got["sampler"] == ref.sampler.get_state()
    # every rank holds identical parameters
    for k in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k])
    # logged loss/accuracy are the means over all 2B tasks, as in one process
    h0, hr = ranks[0]["history"], ref_out["history"]
    assert [h["iteration"] for h in h0] == [h["iteration"] for h in hr] == [2, 3]
    for a, b in zip(h0, hr):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["acc"] == pytest.approx(b["acc"], abs=1e-6)
    assert h0[-1]["val_acc"] == pytest.approx(hr[-1]["val_acc"], abs=1e-6)  # validation on rank 0
    assert "val_acc" not in ranks[1]["history"][-1]
    # rank 0 alone wrote the run folder: its files once (one log line per record, no duplicates)
    assert sorted(p.name for p in ddp_dir.iterdir() if not p.name.startswith(".")) == sorted(RUN_FILES)
    log = (ddp_dir / "train.log").read_text().splitlines()
    assert len([ln for ln in log if ln.startswith("{")]) == 2 and len([ln for ln in log if ln.startswith("#")]) == 1
    ck = torch.load(ddp_dir / "ckpt.pt", weights_only=False)
    assert ck["iteration"] == 3 and ck["sampler_state"] == ref.sampler.get_state()
    for k, v in ref.model.params.items():
        torch.testing.assert_close(ck["params"][k], v.detach(), rtol=0, atol=1e-6)


def test_meta_batch_must_divide_world_size(tmp_path, omniglot_dir):
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        Trainer(preset("paper-5w1s", channels=8, meta_batch=3), tmp_path, omniglot_dir,
                dist=DistContext(rank=0, world_size=2))


def test_shards_are_disjoint_and_cover_the_batch():
    sl = [DistContext(r, 4).shard(8) for r in range(4)]
    assert [list(range(8))[s] for s in sl] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_single_process_without_torchrun(tmp_path, omniglot_dir, monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    tr = Trainer(preset("paper-5w1s", channels=8, meta_batch=3), tmp_path, omniglot_dir)
    assert not tr.dist.enabled and tr.dist.is_main and not torch.distributed.is_initialized()


def test_a_two_rank_run_resumes_in_one_process(tmp_path, omniglot_dir):
    """Resuming with another world size continues the same run: the tasks come from one stream whatever the
    world size, so 3 iterations on 2 ranks + 2 in one process = 5 iterations in one process."""
    _, ddp_dir = _run_ranks(tmp_path, omniglot_dir, CFG)
    five = {**CFG, "iterations": 5}
    resumed = Trainer(preset("paper-5w1s", **five), ddp_dir, omniglot_dir, seed=3, eval_every=3, eval_tasks=4,
                      log_every=1, checkpoint_every=2, dist=DistContext())
    assert resumed.resume() and resumed.state.iteration == 3
    out = resumed.train(progress=False)
    ref = Trainer(preset("paper-5w1s", **five), tmp_path / "run-one", omniglot_dir, seed=3, eval_every=3,
                  eval_tasks=4, log_every=1, checkpoint_every=2, dist=DistContext())
    ref_out = ref.train(progress=False)
    assert resumed.state.iteration == ref.state.iteration == 5
    for k, v in ref.model.params.items():
        torch.testing.assert_close(resumed.model.params[k].detach(), v.detach(), rtol=0, atol=1e-5)
    # the same curve (the 2-rank worker ran iteration 1 outside train(), unlogged)
    ref_loss = {h["iteration"]: h["loss"] for h in ref_out["history"]}
    assert [h["iteration"] for h in out["history"]] == [2, 3, 4, 5]
    assert [h["loss"] for h in out["history"]] == pytest.approx([ref_loss[i] for i in (2, 3, 4, 5)], rel=1e-4)


def test_speed_benchmark_over_world_sizes(omniglot_dir):
    from pcmeta.agents.maml.distributed_bench import bench_world_sizes

    r = bench_world_sizes("paper-5w1s", (1, 2), iterations=1, data_dir=omniglot_dir, timeout_s=300)
    assert set(r) == {1, 2} and all(v > 0 for v in r.values())


def test_speed_benchmark_names_a_missing_data_set_and_a_workers_error(tmp_path):
    from pcmeta.agents.maml.distributed_bench import bench_world_sizes, worker_error
    from pcmeta.tasks.omniglot import OmniglotDataError

    with pytest.raises(OmniglotDataError, match="Omniglot not found: expected .*images_background.zip"):
        bench_world_sizes("paper-5w1s", (1,), iterations=1, data_dir=tmp_path)
    stderr = ("Traceback (most recent call last):\n  File \"w.py\", line 9, in <module>\n    x()\n"
              "ValueError: unknown preset 'p'\nE1207 failed (exitcode: 1)\nTraceback (most recent call last):\n"
              "  File \"run.py\", line 1, in <module>\ntorch.distributed.elastic.ChildFailedError: \n=====\n")
    assert worker_error(stderr) == "ValueError: unknown preset 'p'"
    assert worker_error("no traceback at all") == "no traceback at all"
