"""Evaluation of one-shot learning on many targets: per-task errors before and after the one update, in
torch (batched float, or one task at a time on a fresh chip of a :class:`pcmeta.hardware.Deployment`) or in
brian2; firing-rate health."""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from pcmeta.hardware.deployment import Deployment
from pcmeta.tasks import trajectories as traj

from .brian2_engine import Brian2OneShot
from .chips import check_engine, chip_seed, exact_float
from .config import ETA, LEARNER
from .episode import episode_inputs, one_shot_episode
from .learner import EpropLearner
from .losses import arm_losses
from .network import run_snn

__all__ = ["evaluate", "evaluate_brian2", "summarize", "firing_stats"]

#: the per-task figures of :func:`evaluate` and :func:`evaluate_brian2`
FIGURES = ("mse_omega_before", "mse_omega_after", "mse_xyz_before", "mse_xyz_after", "loss_before", "loss_after")


def summarize(values: Any) -> tuple[float, float]:
    """(mean, standard error of the mean) of a 1-D sequence."""
    a = np.asarray(values, dtype=np.float64).ravel()
    sem = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), sem


def evaluate(
    params: Mapping[str, torch.Tensor],
    targets: traj.ArmTargets,
    deployment: Deployment | None = None,
    seed: int = 0,
    *,
    batch_size: int = 100,
    eta: float = ETA,
    update_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One-shot learning on every target (demonstration, update, test); per-task errors before/after.

    Args:
        params: weight dict (tensors; their dtype sets the simulation dtype).
        targets: :class:`pcmeta.tasks.trajectories.ArmTargets`.
        deployment: where the learning network's weights live (:class:`pcmeta.hardware.Deployment`; None or
            plain float software: the float weights, ``batch_size`` tasks at a time). Otherwise task k
            (k = 1, 2, ...) runs alone on a fresh chip ``deployment.build(chip_seed(seed, k))``: the initial
            weights are programmed at time 0 (clipped and placed by the deployment's rules), the demonstration
            runs ``deployment.time_s`` later, the update is written (changed devices re-programmed) and the test
            trial runs at ``deployment.query_time``.
        seed: seed of the chips (see above).
        batch_size: tasks simulated together (float path).
        update_transform: optional map applied to dW_in and dW_rec before they are added (e.g. rounding to
            the 1/16 grid); float path only.
        progress: show a tqdm bar.

    Returns:
        dict of per-task numpy arrays mse_omega_before, mse_omega_after, mse_xyz_before, mse_xyz_after,
        loss_before, loss_after (float64).
    """
    on_chip = not exact_float(deployment)
    if on_chip and update_transform is not None:
        raise ValueError("update_transform applies to float weights only; a chip rounds its updates itself")
    dtype = params["W_in_lsg"].dtype
    dev = params["W_in_lsg"].device
    n = len(targets)
    res: dict[str, list] = {k: [] for k in FIGURES}
    step = 1 if on_chip else batch_size
    bar = tqdm(total=n, disable=not progress, desc="one-shot episodes", unit="task")
    with torch.no_grad():
        for s in range(0, n, step):
            tg = targets[s:s + step]
            clock, x_lsg = episode_inputs(tg, dtype=dtype, device=dev)
            if on_chip:
                ep = _episode_on_chip(params, clock, x_lsg, deployment, chip_seed(seed, s + 1), eta=eta)
            else:
                ep = _episode_float(params, clock, x_lsg, eta=eta, update_transform=update_transform)
            for tag in ("before", "after"):
                m = arm_losses(ep[f"omega_{tag}"], tg)
                for name in ("mse_omega", "mse_xyz", "loss"):
                    res[f"{name}_{tag}"].append(m[name])
            bar.update(len(tg))
    bar.close()
    return {k: torch.cat(v).double().cpu().numpy() for k, v in res.items()}


def _episode_on_chip(params: Mapping[str, torch.Tensor], clock: torch.Tensor, x_lsg: torch.Tensor,
                     deployment: Deployment, chip: int, *, eta: float) -> dict[str, torch.Tensor]:
    """One task on a fresh learner on the chip ``deployment.build(chip)``: program, let ``time_s`` pass,
    demonstration, update, wait until ``query_time``, test."""
    sub = deployment.build(chip)
    learner = EpropLearner(sub, params["W_in_trainee"], params["W_rec_trainee"], params["W_out_trainee"],
                           dtype=params["W_in_lsg"].dtype)
    if deployment.time_s:
        sub.elapse(deployment.time_s)
    ep = one_shot_episode(params, clock, x_lsg, eta=eta, learner=learner, test=False)
    learner.update(ep["dW_in"][0], ep["dW_rec"][0])
    if deployment.query_time > deployment.time_s:
        sub.elapse(deployment.query_time - deployment.time_s)
    ep["omega_after"] = learner.trial(clock).y
    return ep


def _episode_float(params: Mapping[str, torch.Tensor], clock: torch.Tensor, x_lsg: torch.Tensor, *, eta: float,
                   update_transform: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """A batch of tasks on float weights, the update optionally transformed (e.g. rounded) before the test."""
    ep = one_shot_episode(params, clock, x_lsg, eta=eta, test=update_transform is None)
    if update_transform is not None:
        W_in = params["W_in_trainee"] + update_transform(ep["dW_in"])
        W_rec = params["W_rec_trainee"] + update_transform(ep["dW_rec"])
        ep["omega_after"] = run_snn(LEARNER, clock, W_in, W_rec, params["W_out_trainee"]).y
    return ep


def evaluate_brian2(
    params: Mapping[str, Any],
    targets: traj.ArmTargets,
    deployment: Deployment | None = None,
    seed: int = 0,
    *,
    target: str = "numpy",
    progress: bool = False,
    net: Brian2OneShot | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` in brian2 (:class:`~pcmeta.agents.eprop.brian2_engine.Brian2OneShot`): one task after
    the other on one network, task k on the chip ``deployment.build(chip_seed(seed, k))`` (None or plain float
    software: the float64 weights).

    Returns the same per-task arrays (mse_omega_before/after, mse_xyz_before/after, loss_before/after) plus
    ``codegen_s`` (first run, includes code generation), ``build_s`` and ``episode_s`` (per-task wall times
    after the first task).
    """
    check_engine(deployment, "brian2")
    on_chip = not exact_float(deployment)
    if net is None:
        net = Brian2OneShot(params, T=targets.omega.shape[1], target=target)
    res: dict[str, list] = {k: [] for k in FIGURES}
    times = []
    for k in tqdm(range(len(targets)), disable=not progress, desc="brian2 episodes", unit="task"):
        tg = targets[k]
        clock, x_lsg = episode_inputs(tg, dtype=torch.float64)
        chip = dict(substrate=deployment.build(chip_seed(seed, k + 1)), settle_s=deployment.time_s,
                    query_wait_s=deployment.query_time - deployment.time_s) if on_chip else {}
        t0 = time.perf_counter()
        ep = net.episode(x_lsg[0].numpy(), clock.numpy(), **chip)
        times.append(time.perf_counter() - t0)
        for tag in ("before", "after"):
            m = arm_losses(torch.from_numpy(ep[f"omega_{tag}"])[None], tg)
            for name in ("mse_omega", "mse_xyz", "loss"):
                res[f"{name}_{tag}"].append(float(m[name][0]))
    out: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in res.items()}
    out["codegen_s"] = net.codegen_s
    out["build_s"] = net.build_s
    out["episode_s"] = np.asarray(times[1:] if len(times) > 1 else times)
    return out


def firing_stats(params: Mapping[str, torch.Tensor], targets: traj.ArmTargets) -> dict[str, dict[str, float]]:
    """Firing-rate health of the LSG and of the learning network (demonstration trial) on ``targets``:
    per network the mean rate (Hz), the number of neurons that never spike ("silent") and of neurons above
    150 Hz ("saturated": with 4 refractory steps the ceiling is 200 Hz). Rates are per neuron, averaged over
    the targets and the T steps of dt = 1 ms."""
    with torch.no_grad():
        clock, x_lsg = episode_inputs(targets, dtype=params["W_in_lsg"].dtype, device=params["W_in_lsg"].device)
        ep = one_shot_episode(params, clock, x_lsg, test=False)
    out = {}
    for name, z in (("lsg", ep["z_lsg"]), ("learner", ep["z_demo"])):
        r = z.mean(dim=(0, 1)) * 1e3
        out[name] = {"mean_hz": float(r.mean()), "silent": int((r == 0).sum()), "saturated": int((r > 150).sum()),
                     "neurons": int(r.numel())}
    return out
