"""Where do the outlier gradients of arm meta-training come from? One task at a time.

Takes a `pcmeta arm train` run folder's current weights and settings, draws the batch of one iteration (the
run's own target stream: seed, iteration) and computes the meta-gradient of each task on its own (its task loss
and its rate term, batch of one). Prints the median and the largest per-task norm, how many tasks are above 10x the
median, and the per-matrix norms of the largest ones: in docs/arm-training.md the outliers are single tasks whose
BPTT through the LSG explodes (W_in_lsg, W_rec_lsg), not the learning network:

    python examples/arm_task_gradients.py --run runs/arm_seeds/s2 --iteration 575 --tasks 45

One thread; about 1-2 s per task on this machine.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pcmeta.agents.eprop import PARAM_KEYS
from pcmeta.agents.eprop.checkpoints import load_checkpoint_params, read_checkpoint
from pcmeta.agents.eprop.config import OLD_RUN_VALUES
from pcmeta.agents.eprop.episode import target_tensors
from pcmeta.agents.eprop.losses import meta_loss_tensors
from pcmeta.tasks import trajectories as traj


def task_gradients(run: Path, iteration: int | None, tasks: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-task gradient norms (tasks, len(PARAM_KEYS)) and task losses (tasks,) at the run's current weights,
    on the first ``tasks`` targets of iteration ``iteration``'s batch (None: the run's next iteration)."""
    ck = read_checkpoint(run / "checkpoint.pt")
    cfg = {**OLD_RUN_VALUES, **dict(ck.get("config", {}))}  # a run from before a setting: its old behaviour
    it = int(ck["iteration"]) if iteration is None else iteration
    params = {k: v.requires_grad_(True) for k, v in load_checkpoint_params(run / "checkpoint.pt").items()}
    tg = traj.sample_targets(int(cfg.get("batch", 90)), rng=np.random.default_rng([int(cfg.get("seed", 0)), it]))
    b = target_tensors(tg, clean_code=bool(cfg.get("clean_code", False)))
    clock = torch.as_tensor(traj.clock_input(b["xyz"].shape[1]), dtype=torch.float32)
    norms, losses = [], []
    for i in range(min(tasks, b["xyz"].shape[0])):
        one = {k: (v if k == "start" else v[i:i + 1]) for k, v in b.items()}
        loss, figs = meta_loss_tensors(params, clock, one, robot=tg.robot, detach_reset=bool(cfg["detach_reset"]),
                                       threshold_gradient=bool(cfg["threshold_gradient"]),
                                       voltage_reg=float(cfg["voltage_reg"]))
        grads = torch.autograd.grad(loss, [params[k] for k in PARAM_KEYS], allow_unused=True)
        norms.append([0.0 if g is None else float(g.norm()) for g in grads])
        losses.append(float(figs["loss"]))
    return it, np.array(norms), np.array(losses)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a `pcmeta arm train` run folder (read only)")
    ap.add_argument("--iteration", type=int, default=None, help="whose batch (default: the run's next iteration)")
    ap.add_argument("--tasks", type=int, default=30, help="the first this many tasks of that batch (default 30)")
    ap.add_argument("--top", type=int, default=3, help="how many of the largest tasks to show (default 3)")
    args = ap.parse_args(argv)
    if args.tasks < 2 or args.top < 1 or (args.iteration is not None and args.iteration < 0):
        ap.error("--tasks must be >= 2, --top >= 1 and --iteration >= 0")
    torch.set_num_threads(1)
    it, norms, losses = task_gradients(Path(args.run), args.iteration, args.tasks)
    total = np.sqrt((norms ** 2).sum(axis=1))
    med = float(np.median(total))
    lsg = np.sqrt((norms[:, :3] ** 2).sum(axis=1))
    print(f"{args.run}, batch of iteration {it}, {len(total)} tasks one at a time: per-task gradient norm median "
          f"{med:.3g}, max {total.max():.3g}; above 10x the median: {(total > 10 * med).sum()} task(s); "
          f"share of the LSG's matrices in the largest: {lsg[total.argmax()] / total.max():.0%}")
    print("| task | loss | " + " | ".join(PARAM_KEYS) + " | total |")
    print("|---" * (len(PARAM_KEYS) + 3) + "|")
    for i in np.argsort(-total)[:args.top]:
        print(f"| {i} | {losses[i]:.3f} | " + " | ".join(f"{x:.3g}" for x in norms[i]) + f" | {total[i]:.3g} |")
    i = int(np.argsort(total)[len(total) // 2])
    print(f"| {i} (median) | {losses[i]:.3f} | " + " | ".join(f"{x:.3g}" for x in norms[i]) + f" | {total[i]:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
