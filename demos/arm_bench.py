"""``pcmeta bench snn``: wall time of one one-shot episode in torch and in brian2, and of meta-training."""
from __future__ import annotations

import argparse
import time
from typing import Any

from pcmeta.demos.options import write_result


def _median_s(fn, n: int) -> float:
    """Median wall seconds of ``fn(k)`` for k = 0..n-1."""
    import numpy as np

    ts = []
    for k in range(n):
        t0 = time.perf_counter()
        fn(k)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _torch_episode(args: argparse.Namespace, figs: dict[str, Any], clock, x_lsg) -> None:
    import torch

    from pcmeta.agents import eprop

    p32 = eprop.load_weights(args.weights)
    with torch.no_grad():
        eprop.one_shot_episode(p32, clock, x_lsg[:1])  # warm-up
        figs["torch_episode_s"] = _median_s(lambda k: eprop.one_shot_episode(p32, clock, x_lsg[k:k + 1]),
                                            args.episodes)
    print(f"torch  one-shot episode (float32, 1 task):        {figs['torch_episode_s']:.3f} s "
          f"(median of {args.episodes})")


def _brian2_episode(args: argparse.Namespace, figs: dict[str, Any], clock, x_lsg) -> None:
    import torch

    from pcmeta.agents import eprop

    p64 = eprop.load_weights(args.weights, dtype=torch.float64)
    t0 = time.perf_counter()
    net = eprop.Brian2OneShot(p64, target=args.brian2_target)
    figs["brian2_build_s"] = time.perf_counter() - t0
    c64, x64 = clock.double().numpy(), x_lsg.double().numpy()
    net.episode(x64[0], c64)
    figs["brian2_first_episode_s"] = net.codegen_s
    figs["brian2_episode_s"] = _median_s(lambda k: net.episode(x64[k], c64), args.episodes)
    print(f"brian2 network build:                             {figs['brian2_build_s']:.2f} s")
    print(f"brian2 first trial (includes code generation):    {figs['brian2_first_episode_s']:.2f} s "
          f"(target {args.brian2_target})")
    print(f"brian2 one-shot episode after code generation:    {figs['brian2_episode_s']:.3f} s "
          f"(median of {args.episodes})")


def _meta_training(args: argparse.Namespace, figs: dict[str, Any]) -> None:
    """One meta-training iteration (forward + BPTT) under the default recipe's loss settings, alternating with the
    per-step autograd reference path, with the voltage regularisation from (B, T, n) records (the reference of
    its extremes path) and with the voltage regularisation off (its cost)."""
    import numpy as np
    import torch

    from pcmeta.agents import eprop
    from pcmeta.agents.eprop.losses import full_voltage_record
    from pcmeta.agents.eprop.network import per_step_autograd
    from pcmeta.tasks import trajectories as traj

    params = {k: v.clone().requires_grad_(True) for k, v in eprop.load_weights(args.weights).items()}
    tg = traj.sample_targets(args.train_batch, rng=1)
    batch = eprop.target_tensors(tg)
    clock = torch.as_tensor(traj.clock_input(batch["xyz"].shape[1]), dtype=torch.float32)
    o = eprop.MetaTrainOptions()

    def iteration(voltage_reg: float) -> None:
        loss, _ = eprop.meta_loss_tensors(params, clock, batch, robot=tg.robot, detach_reset=o.detach_reset,
                                          threshold_gradient=o.threshold_gradient, voltage_reg=voltage_reg)
        loss.backward()

    fast, per_step, full_v, no_vreg = [], [], [], []
    for _ in range(args.train_iters):  # the variants alternate, so that all see the same machine load
        fast.append(_median_s(lambda _k: iteration(o.voltage_reg), 1))
        with per_step_autograd():
            per_step.append(_median_s(lambda _k: iteration(o.voltage_reg), 1))
        with full_voltage_record():
            full_v.append(_median_s(lambda _k: iteration(o.voltage_reg), 1))
        no_vreg.append(_median_s(lambda _k: iteration(0.0), 1))
    figs["train_iter_s"], figs["train_iter_per_step_autograd_s"] = float(np.median(fast)), float(np.median(per_step))
    figs["train_iter_no_voltage_reg_s"] = float(np.median(no_vreg))
    figs["train_iter_full_voltage_record_s"] = float(np.median(full_v))
    figs["train_iters_per_s"] = 1.0 / figs["train_iter_s"]
    figs["train_batch"] = args.train_batch
    print(f"torch meta-training (batch {args.train_batch}, forward + BPTT, the default recipe's loss):   "
          f"{figs['train_iters_per_s']:.4f} it/s ({figs['train_iter_s']:.1f} s per iteration, "
          f"{args.threads} thread(s))")
    ref = figs["train_iter_per_step_autograd_s"]
    print(f"  the same with per-step autograd of W_rec (the reference path): {ref:.1f} s per iteration, "
          f"{ref / figs['train_iter_s']:.2f}x the time")
    fv = figs["train_iter_full_voltage_record_s"]
    print(f"  the same with the voltage regularisation from (B, T, n) records (its reference): {fv:.1f} s per "
          f"iteration, {fv / figs['train_iter_s']:.2f}x the time")
    nv = figs["train_iter_no_voltage_reg_s"]
    print(f"  the same without the voltage regularisation (--voltage-reg 0): {nv:.1f} s per iteration, "
          f"{nv / figs['train_iter_s']:.2f}x the time")


def run(args: argparse.Namespace) -> int:
    """The handler of ``pcmeta bench snn``."""
    import torch

    from pcmeta.agents import eprop
    from pcmeta.tasks import trajectories as traj

    # the flags are registered in pcmeta.demos.cli_snn; the same ranges as the argparse types of options.py
    torch.set_num_threads(args.threads)
    figs: dict[str, Any] = {}
    clock, x_lsg = eprop.episode_inputs(traj.sample_targets(args.episodes, rng=0))
    _torch_episode(args, figs, clock, x_lsg)
    _brian2_episode(args, figs, clock, x_lsg)
    if args.train_iters >= 1:
        _meta_training(args, figs)
    write_result(args, figs)
    return 0
