"""Speed of data-parallel MAML meta-training per number of processes (``pcmeta bench maml --procs 1,2``)."""
from __future__ import annotations

import os

from pcmeta.agents.distributed import DistributedError

_BENCH_WORKER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from pcmeta.agents.maml import preset
from pcmeta.agents.maml.training import Trainer
from pcmeta.agents import distributed
name, data_dir, run_dir, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tr = Trainer(preset(name), run_dir, data_dir, seed=0)
tr.step()  # warm-up
tr.dist.barrier()
t0 = time.perf_counter()
for _ in range(iterations):
    tr.step()
tr.dist.barrier()
wall = time.perf_counter() - t0
if tr.dist.is_main:
    print("BENCH " + json.dumps({"it_s": iterations / wall, "world": tr.dist.world_size}))
distributed.destroy()
"""


def worker_error(stderr: str) -> str:
    """The worker's own error from a failed torchrun's stderr: the last line of the first traceback (torchrun
    prints its own ChildFailedError traceback after the worker's); the stderr's tail if there is none."""
    lines = stderr.strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")), None)
    if start is not None:
        for ln in lines[start + 1:]:
            if ln and not ln.startswith((" ", "\t")) and not ln.startswith("Traceback"):
                return ln
    return stderr.strip()[-600:]


def bench_world_sizes(preset_name: str, worlds: tuple[int, ...] = (1, 2), iterations: int = 5,
                      data_dir=None, timeout_s: float = 1800.0) -> dict[int, float]:
    """Meta-iterations per second of ``preset_name``'s meta-training with each number of processes in ``worlds``
    (launched with ``torchrun --nproc-per-node N``, gloo on CPU, one thread each; the same meta-batch split
    over the processes; one untimed warm-up iteration, then ``iterations`` timed, between barriers)."""
    import json
    import subprocess
    import sys
    import tempfile

    from pcmeta.tasks.omniglot import require_data

    data = str(require_data(data_dir))  # a missing data set: one clear error here, not one per worker
    out: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "bench_worker.py")
        with open(script, "w") as f:
            f.write(_BENCH_WORKER)
        for w in worlds:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={w}", script,
                   preset_name, data, os.path.join(tmp, f"run{w}"), str(iterations)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
            if proc.returncode != 0 or not lines:
                raise DistributedError(f"the {w}-process benchmark failed (exit {proc.returncode}): "
                                       f"{worker_error(proc.stderr)}")
            out[w] = json.loads(lines[-1][6:])["it_s"]
    return out
