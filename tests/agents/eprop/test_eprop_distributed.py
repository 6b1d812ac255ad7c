"""Data-parallel arm meta-training: 2 gloo processes splitting a batch of 2 targets give the parameters of one
process with the whole batch, and a 2-process run resumes in one process as the same run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.agents.eprop.config import PARAM_KEYS

WORKER = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from pcmeta.agents import distributed, eprop
    res = eprop.meta_train(sys.argv[1], int(sys.argv[2]), batch=2, seed=1, checkpoint_every=1, progress=True)
    assert res["world_size"] == 2, res
    distributed.destroy()
""")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path, run_dir, iterations: int) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port, procs = _free_port(), []
    for r in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(r), "LOCAL_RANK": str(r), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(run_dir), str(iterations)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    logs = []
    try:
        logs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (o, e, rc) in enumerate(logs):
        assert rc == 0, f"rank {r} failed ({rc}):\n{o}\n{e}"
    assert "meta-training" in logs[0][1] and "meta-training" not in logs[1][1]  # progress on rank 0 only


def _params(run_dir):
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return ck["params"], ck["history"], ck["iteration"]


def test_two_ranks_match_one_process_and_resume_in_one(tmp_path):
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    _two_ranks(tmp_path, ddp, 2)
    eprop.meta_train(one, 2, batch=2, seed=1, checkpoint_every=1, progress=False)
    (pd, hd, itd), (p1, h1, it1) = _params(ddp), _params(one)
    assert itd == it1 == 2
    for k in PARAM_KEYS:  # float32 sums in another order: tolerance at 1e-5 of the tensor's scale
        torch.testing.assert_close(pd[k], p1[k], rtol=1e-4, atol=1e-5 * float(p1[k].abs().max()), msg=k)
    assert all(abs(a["loss"] - b["loss"]) <= 1e-4 * abs(b["loss"]) for a, b in zip(hd, h1))
    # resumed under another world size: the same run continues
    res = eprop.meta_train(ddp, 3, batch=2, seed=1, checkpoint_every=1, progress=False, resume=True)
    eprop.meta_train(one, 3, batch=2, seed=1, checkpoint_every=1, progress=False, resume=True)
    assert res["resumed"] == 2 and res["iteration"] == 3
    (pd, hd, _), (p1, h1, _) = _params(ddp), _params(one)
    for k in PARAM_KEYS:
        torch.testing.assert_close(pd[k], p1[k], rtol=1e-4, atol=1e-5 * float(p1[k].abs().max()), msg=k)
    assert [h["iteration"] for h in hd] == [0, 1, 2]


def test_over_batch_gives_the_whole_batch_gradient_from_equal_shares():
    from pcmeta.agents.eprop.config import LSG
    from pcmeta.agents.eprop.losses import rate_regularization

    torch.manual_seed(0)
    theta = torch.randn(4, 6, 3, requires_grad=True)  # (B, T, n) "spike" probabilities through a sigmoid
    whole = rate_regularization(torch.sigmoid(theta), LSG)
    (g_whole,) = torch.autograd.grad(whole, theta)
    shares = [slice(0, 2), slice(2, 4)]
    local_rates = [torch.sigmoid(theta[s]).mean(dim=(0, 1)).detach() for s in shares]
    batch_mean = lambda t: sum(local_rates) / 2  # noqa: E731  (what the all-reduce returns on every rank)
    grads, values = torch.zeros_like(theta), []
    for s in shares:
        v = rate_regularization(torch.sigmoid(theta[s]), LSG, batch_mean=batch_mean)
        grads += torch.autograd.grad(v, theta)[0] / 2  # the gradient all-reduce: mean over ranks
        values.append(v.item())
    assert values[0] == values[1] == pytest.approx(whole.item(), rel=1e-6)
    torch.testing.assert_close(grads, g_whole, rtol=1e-5, atol=1e-9)


def test_two_local_nodes_are_one_run(tmp_path):
    """torchrun --nnodes 2 (two "machines" on this one, one process each) = one machine with 2 processes."""
    port = _free_port()
    args = ["-m", "pcmeta", "arm", "train", "--iterations", "2", "--batch", "2", "--checkpoint-every", "1",
            "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               *args, "--out", str(tmp_path / "two")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) + (p.returncode,) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert all(rc == 0 for *_, rc in outs), outs
    assert "data-parallel: 2 processes" in outs[0][0]
    eprop.meta_train(tmp_path / "one", 2, batch=2, seed=1, checkpoint_every=1, progress=False)
    (pd, _, it), (p1, _, _) = _params(tmp_path / "two"), _params(tmp_path / "one")
    assert it == 2
    for k in PARAM_KEYS:
        torch.testing.assert_close(pd[k], p1[k], rtol=1e-4, atol=1e-5 * float(p1[k].abs().max()), msg=k)
