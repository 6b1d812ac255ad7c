"""Losses of the arm task: per-task errors of produced joint velocities, the firing-rate and voltage
regularisation, and the outer (meta-training) loss through the one e-prop update (SPEC section 2)."""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import torch

from pcmeta.tasks import trajectories as traj

from .config import ETA, LEARNER, LSG, SNNConfig
from .episode import one_shot_episode, target_tensors
from .voltage import VoltageExtremes

__all__ = ["arm_losses", "arm_losses_tensors", "rate_regularization", "voltage_regularization",
           "voltage_regularization_of", "full_voltage_record", "VOLTAGE_REG",
           "meta_loss", "meta_loss_tensors", "META_FIGURES"]

#: Default factor of :func:`voltage_regularization` in arm meta-training (``voltage_reg``; SPEC's recipe has none):
#: with it, the CPU run of the seed whose LSG had 307 silent neurons kept its rate term at ~0.02 and its median
#: gradient norm at ~0.8-1.0 over 300 iterations (without: 0.03-0.05 and 1.3-2.1; docs/arm-training.md).
VOLTAGE_REG = 1e-3

#: the figures :func:`meta_loss_tensors` reports (in this order in meta_train's history)
META_FIGURES = ("loss", "mse_omega", "mse_xyz", "reg", "rate_lsg_hz", "rate_learner_hz")


def arm_losses(omega: torch.Tensor, targets: traj.ArmTargets) -> dict[str, torch.Tensor]:
    """Per-task errors of produced joint velocities against the targets.

    omega: (B, T, 2) rad/s. Angles = start + 0.01 cumsum(omega) (not clipped), the path from the
    differentiable kinematics. Returns per-task (B,) tensors mse_omega ((rad/s)^2, mean over steps and
    joints), mse_xyz (m^2, mean over steps and coordinates) and loss = 0.5 mse_omega + 0.5 mse_xyz.
    """
    t = target_tensors(targets, dtype=omega.dtype, device=omega.device)
    return arm_losses_tensors(omega, t["omega"], t["xyz"], t["start"], targets.robot)


def arm_losses_tensors(omega: torch.Tensor, omega_t: torch.Tensor, xyz_t: torch.Tensor, start: torch.Tensor,
                       robot: str = "scorbot") -> dict[str, torch.Tensor]:
    """:func:`arm_losses` on tensors only (no host round trip, so it can be captured in a CUDA graph):
    omega, omega_t (B, T, 2) rad/s, xyz_t (B, T, 3) m, start (2,) rad."""
    q = traj.angles_from_velocities(omega, start)
    xyz = traj.forward_kinematics(q, robot)
    mse_o = ((omega - omega_t) ** 2).mean(dim=(1, 2))
    mse_x = ((xyz - xyz_t) ** 2).mean(dim=(1, 2))
    return {"mse_omega": mse_o, "mse_xyz": mse_x, "loss": 0.5 * mse_o + 0.5 * mse_x}


BatchMean = Callable[[torch.Tensor], torch.Tensor]


def over_batch(local: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
               batch_mean: BatchMean | None = None) -> torch.Tensor:
    """``fn`` of a statistic averaged over the batch's tasks, when the batch is split over processes.

    ``local`` is the mean over this process's tasks; ``batch_mean`` (None: one process) the mean over the
    processes (an all-reduce of equal shares). The value is ``fn`` at the mean over ALL tasks, and the gradient
    is ``fn``'s gradient there times ``local``'s: averaged over the processes (as the gradient all-reduce does)
    that is exactly the gradient of the whole batch (as synchronised batch norm does for its statistics)."""
    if batch_mean is None:
        return fn(local)
    value, grad = _at_whole_batch(local.detach(), fn, batch_mean)
    return value + (grad * (local - local.detach())).sum()


def _at_whole_batch(local: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                    batch_mean: BatchMean | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn, its gradient) at the mean over all tasks of the detached statistic ``local`` (see :func:`over_batch`)."""
    whole = (local if batch_mean is None else batch_mean(local)).detach().requires_grad_(True)
    with torch.enable_grad():
        value = fn(whole)
        (grad,) = torch.autograd.grad(value, whole)
    return value.detach(), grad


def rate_regularization(z: torch.Tensor, cfg: SNNConfig, dt_s: float = 1e-3,
                        batch_mean: BatchMean | None = None) -> torch.Tensor:
    """Firing-rate regularisation: lambda * sum_j (r_j - f_target dt)^2, where r_j is neuron j's spike count
    per step averaged over the batch AND the time steps (the population of tasks shares one rate per neuron,
    as in the authors' training), f_target = ``cfg.rate_target_hz``, lambda = ``cfg.rate_lambda``.
    z: (B, T, n) spikes; ``batch_mean``: see :func:`over_batch` (a batch split over processes)."""
    target = cfg.rate_target_hz * dt_s
    return over_batch(z.mean(dim=(0, 1)), lambda rate: cfg.rate_lambda * ((rate - target) ** 2).sum(), batch_mean)


def _silent_penalty(m: torch.Tensor) -> torch.Tensor:
    """sum_j relu(-1 - m_j)^2: the voltage regularisation's term on each neuron's task-averaged maximum."""
    return (torch.relu(-1.0 - m) ** 2).sum()


def _saturated_penalty(n: torch.Tensor) -> torch.Tensor:
    """sum_j relu(n_j - 1)^2: its term on each neuron's task-averaged non-refractory minimum."""
    return (torch.relu(n - 1.0) ** 2).sum()


def voltage_regularization(v: torch.Tensor, A: torch.Tensor, z: torch.Tensor, cfg: SNNConfig,
                           batch_mean: BatchMean | None = None) -> torch.Tensor:
    """Keeps neurons where the surrogate gradient can reach them: sum over neurons of
    relu(-1 - m_j)^2 + relu(n_j - 1)^2, with m_j the task-averaged maximum over the trial of (v - A) / v_th
    (m_j < -1: the neuron never comes within v_th of its threshold, its pseudo-derivative is 0 on every step:
    silent for good) and n_j the task-averaged minimum of (v - A) / v_th over the steps where the neuron is
    not refractory (n_j > 1: always more than v_th above threshold, saturated for good). The rate
    regularisation cannot move either kind (its gradient passes through the pseudo-derivative); this term's
    gradient acts on v directly. 0 for every neuron whose voltage enters the surrogate's support.
    v, A, z: (B, T, n) from :func:`~pcmeta.agents.eprop.network.run_snn` (``record_v``); ``batch_mean``: see
    :func:`over_batch`. The same from a trial's :class:`~pcmeta.agents.eprop.voltage.VoltageExtremes`,
    without the (B, T, n) records: :func:`voltage_regularization_of`."""
    d = (v - A) / cfg.v_th
    m = d.amax(dim=1).mean(dim=0)
    # refractory at t: a spike in t-4..t-1 (window k of the left-padded spikes covers exactly those steps)
    k = cfg.n_refractory - 1
    zp = torch.nn.functional.pad(z.detach().transpose(1, 2), (k, 0))  # (B, n, T + k)
    refr = torch.nn.functional.max_pool1d(zp, k, stride=1)[..., :-1].transpose(1, 2)  # (B, T, n)
    n = torch.where(refr > 0, torch.full_like(d, float("inf")), d).amin(dim=1)
    n = torch.where(torch.isfinite(n), n, torch.zeros_like(n)).mean(dim=0)
    return over_batch(m, _silent_penalty, batch_mean) + over_batch(n, _saturated_penalty, batch_mean)


def voltage_regularization_of(extremes: VoltageExtremes, batch_mean: BatchMean | None = None) -> torch.Tensor:
    """:func:`voltage_regularization` from the extremes a trial gathered (``run_snn(..., record_extremes=True)``):
    the same value, and the same gradient, taken at the (task, step, neuron) of each penalised extreme only
    (where steps tie for an extreme, on the first of them; the (B, T, n) version spreads it over them, as
    ``amax`` does). It needs the indices on the host, so the CUDA-graph path keeps the (B, T, n) version."""
    fin = torch.isfinite(extremes.min)
    B = fin.shape[0]
    m = extremes.max.mean(dim=0)
    n = torch.where(fin, extremes.min, torch.zeros_like(extremes.min)).mean(dim=0)
    value_m, grad_m = _at_whole_batch(m, _silent_penalty, batch_mean)
    value_n, grad_n = _at_whole_batch(n, _saturated_penalty, batch_mean)
    w_max = (grad_m / B).expand(B, -1)
    w_min = torch.where(fin, (grad_n / B).expand(B, -1), torch.zeros_like(extremes.min))
    linear = extremes.gather(w_max, w_min)
    return value_m + value_n + (linear - linear.detach())


_FULL_VOLTAGE_RECORD = [False]


@contextlib.contextmanager
def full_voltage_record():
    """Within it, :func:`meta_loss_tensors` takes the voltage regularisation from (B, T, n) records on a CPU too
    (the reference its extremes path is tested and benchmarked against, ``pcmeta bench snn``)."""
    _FULL_VOLTAGE_RECORD.append(True)
    try:
        yield
    finally:
        _FULL_VOLTAGE_RECORD.pop()


def meta_loss(params: Mapping[str, torch.Tensor], targets: traj.ArmTargets, *, eta: float = ETA,
              clean_code: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """The outer loss of meta-training on a batch of targets (SPEC section 2), differentiable through the
    update (BPTT): mean over tasks of 0.5 MSE_omega + 0.5 MSE_xyz on the test trial, plus the firing-rate
    regularisation of the LSG and of the learning network (demonstration and test trials).

    Returns (loss, figures) where figures holds floats for logging.
    """
    dtype = params["W_in_lsg"].dtype
    dev = params["W_in_lsg"].device
    t = target_tensors(targets, dtype=dtype, device=dev, clean_code=clean_code)
    clock = torch.as_tensor(traj.clock_input(t["xyz"].shape[-2]), dtype=dtype, device=dev)
    loss, figs = meta_loss_tensors(params, clock, t, robot=targets.robot, eta=eta)
    return loss, {k: float(v) for k, v in figs.items()}


def meta_loss_tensors(params: Mapping[str, torch.Tensor], clock: torch.Tensor, batch: Mapping[str, torch.Tensor],
                      *, robot: str = "scorbot", eta: float = ETA, detach_reset: bool = True,
                      trainee_noise: str = "none", voltage_reg: float = 0.0, threshold_gradient: bool = True,
                      batch_mean: BatchMean | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`meta_loss` on tensors only: ``batch`` is :func:`~pcmeta.agents.eprop.episode.target_tensors`'
    dict, ``clock`` (T, 5). On a CUDA device nothing here leaves it, so one call plus ``backward()`` can be
    captured in a CUDA graph. ``detach_reset``: see :func:`~pcmeta.agents.eprop.network.run_snn` (False: the
    gradient also flows through the reset term, as in the authors' TensorFlow code); ``threshold_gradient``: see
    ``run_snn``; ``trainee_noise``: see :func:`~pcmeta.agents.eprop.episode.one_shot_episode`; ``voltage_reg``:
    factor of :func:`voltage_regularization` of both networks (LSG and demonstration trial), added to the loss (0: off;
    on a CPU from the trials' extremes, :func:`voltage_regularization_of`, unless :func:`full_voltage_record`);
    ``batch_mean``: the mean over processes when the batch is split over them (:func:`over_batch`: the
    regularisers then see the whole batch's statistics; the figures are this process's share's except "reg").
    Returns (loss, figures as 0-d tensors, keys :data:`META_FIGURES`)."""
    from_extremes = clock.device.type == "cpu" and not _FULL_VOLTAGE_RECORD[-1]
    ep = one_shot_episode(params, clock, batch["x_lsg"], eta=eta, detach_reset=detach_reset,
                          threshold_gradient=threshold_gradient, trainee_noise=trainee_noise,
                          record_v=voltage_reg > 0 and not from_extremes,
                          record_extremes=voltage_reg > 0 and from_extremes)
    task = arm_losses_tensors(ep["omega_after"], batch["omega"], batch["xyz"], batch["start"], robot)
    # the learning network's rate is taken over its demonstration and test trials together
    bm = batch_mean
    reg = (rate_regularization(ep["z_lsg"], LSG, batch_mean=bm)
           + rate_regularization(torch.cat([ep["z_demo"], ep["z_test"]], dim=1), LEARNER, batch_mean=bm))
    loss = task["loss"].mean() + reg
    if voltage_reg > 0 and from_extremes:
        loss = loss + voltage_reg * (voltage_regularization_of(ep["extremes_lsg"], bm)
                                     + voltage_regularization_of(ep["extremes_demo"], bm))
    elif voltage_reg > 0:
        loss = loss + voltage_reg * (voltage_regularization(ep["v_lsg"], ep["A_lsg"], ep["z_lsg"], LSG, bm)
                                     + voltage_regularization(ep["v_demo"], ep["A_demo"], ep["z_demo"], LEARNER, bm))
    with torch.no_grad():
        figs = {"loss": task["loss"].mean(), "mse_omega": task["mse_omega"].mean(),
                "mse_xyz": task["mse_xyz"].mean(), "reg": reg.detach(),
                "rate_lsg_hz": ep["z_lsg"].mean() * 1e3, "rate_learner_hz": ep["z_test"].mean() * 1e3}
    return loss, figs
