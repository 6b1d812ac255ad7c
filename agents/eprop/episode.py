"""One one-shot episode of the arm task: demonstration trial -> learning signals -> ONE e-prop update -> test
trial, for a batch of tasks, as a pure (differentiable) function of a weight dict; and the tensors one batch
of targets contributes to it.

The learning network runs either on float tensors (meta-training and the batched evaluation), on the
authors' training-time PCM model (``trainee_noise="authors"``, :mod:`pcmeta.hardware.authors_arm`), or on a
substrate through an :class:`~pcmeta.agents.eprop.learner.EpropLearner` (one task at a time).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from pcmeta.hardware.authors_arm import read_var, training_reprogram, training_weights
from pcmeta.tasks import trajectories as traj

from .config import ETA, LEARNER, LSG, TRAINEE_NOISE
from .network import SNNRecord, run_snn
from .rule import eprop_update

__all__ = ["episode_inputs", "target_tensors", "one_shot_episode"]


def episode_inputs(targets: traj.ArmTargets, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two networks' inputs for a batch of targets: clock (T, 5) and LSG input (B, T, 53).

    The LSG input is the paper's code of the target Cartesian path (:func:`pcmeta.tasks.trajectories.lsg_input`,
    with the wrap-around the released weights need).
    """
    xyz = targets.numpy().xyz
    clock = torch.as_tensor(traj.clock_input(xyz.shape[-2]), dtype=dtype, device=device)
    x_lsg = torch.as_tensor(traj.lsg_input(xyz), dtype=dtype, device=device)
    return clock, x_lsg


def target_tensors(targets: traj.ArmTargets, dtype=torch.float32, device=None,
                   clean_code: bool = False) -> dict[str, torch.Tensor]:
    """The tensors one batch of targets contributes to an episode and its loss: omega (B, T, 2) rad/s,
    xyz (B, T, 3) m, start (2,) rad and the LSG input x_lsg (B, T, 53) (paper's code, or the clean one)."""
    tn = targets.numpy()
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    return {"omega": f(tn.omega), "xyz": f(tn.xyz), "start": f(tn.start),
            "x_lsg": f(traj.lsg_input(tn.xyz, clean=clean_code))}


def one_shot_episode(
    params: Mapping[str, Any],
    clock: torch.Tensor,
    x_lsg: torch.Tensor,
    *,
    eta: float = ETA,
    learner: Any = None,
    test: bool = True,
    detach_reset: bool = True,
    threshold_gradient: bool = True,
    trainee_noise: str = "none",
    record_v: bool = False,
    record_extremes: bool = False,
) -> dict[str, Any]:
    """Demonstration trial -> learning signals -> one e-prop update -> test trial, for a batch of tasks.

    Args:
        params: weight dict (:data:`~pcmeta.agents.eprop.config.PARAM_KEYS`) of tensors; differentiable
            w.r.t. all of them.
        clock: (T, 5) clock spikes; x_lsg: (B, T, 53) LSG input.
        eta: e-prop learning rate.
        learner: optional :class:`~pcmeta.agents.eprop.learner.EpropLearner`: the learning network runs on
            its substrate arrays and the update is written to them (then the episode is B = 1).
        test: run the test trial after the update.
        detach_reset, threshold_gradient: see :func:`~pcmeta.agents.eprop.network.run_snn` (the threshold
            gradient matters for the LSG's ALIF neurons only).
        trainee_noise: "none" (float weights) or "authors": the learning network's weights as the authors'
            training code models PCM (:func:`pcmeta.hardware.authors_arm.training_weights` per task, read
            noise on every MVM (``read_var``), the update rounded to 1/16 and re-programmed with noise
            (``training_reprogram``)); for meta-training, not with ``learner``.
        record_v: also return the LSG's and the demonstration trial's membrane potentials and thresholds
            (v_lsg, A_lsg, v_demo, A_demo; for :func:`~pcmeta.agents.eprop.losses.voltage_regularization`).
        record_extremes: also return their :class:`~pcmeta.agents.eprop.voltage.VoltageExtremes` (extremes_lsg,
            extremes_demo; the same regularisation without (B, T, n) records).

    Returns:
        dict with omega_before (B, T, 2) rad/s (the demonstration trial's output), L (B, T, 250),
        dW_in (B, 5, 250), dW_rec (B, 250, 250), omega_after (B, T, 2) if ``test``, and the spike tensors
        z_lsg, z_demo, z_test for rate regularisation.
    """
    B = x_lsg.shape[0]
    if (record_v or record_extremes) and learner is not None:
        raise ValueError("record_v / record_extremes need the learning network in torch (not an EpropLearner)")
    lsg = run_snn(LSG, x_lsg, params["W_in_lsg"], params["W_rec_lsg"], params["W_out_lsg"],
                  detach_reset=detach_reset, threshold_gradient=threshold_gradient, record_v=record_v,
                  record_extremes=record_extremes)
    if trainee_noise not in TRAINEE_NOISE:
        raise ValueError(f"trainee_noise must be one of {TRAINEE_NOISE}, got {trainee_noise!r}")
    if trainee_noise == "authors" and learner is not None:
        raise ValueError("trainee_noise='authors' is a training-time model; a learner brings its own substrate")
    noisy = _authors_weights(params, B) if trainee_noise == "authors" else None
    demo = _demonstration(params, clock, B, learner, noisy, detach_reset=detach_reset,
                          record={"record_v": record_v, "record_extremes": record_extremes})
    L = lsg.y
    dW_in, dW_rec = eprop_update(clock, demo.z, demo.psi, L, LEARNER.alpha, eta)
    out = {"omega_before": demo.y, "L": L, "dW_in": dW_in, "dW_rec": dW_rec, "z_lsg": lsg.z, "z_demo": demo.z}
    if record_v:
        out.update(v_lsg=lsg.v, A_lsg=lsg.A, v_demo=demo.v, A_demo=demo.A)
    if record_extremes:
        out.update(extremes_lsg=lsg.extremes, extremes_demo=demo.extremes)
    if test:
        if learner is not None and B != 1:
            raise ValueError("an EpropLearner runs one task at a time (B = 1)")
        after = _test_trial(params, clock, dW_in, dW_rec, learner, noisy, detach_reset=detach_reset)
        out["omega_after"] = after.y
        out["z_test"] = after.z
    return out


def _authors_weights(params: Mapping[str, Any], B: int) -> dict[str, torch.Tensor]:
    """The learning network's weights as the authors' training code programs them, per task, and the read
    noise variance of the (fixed) readout."""
    w = {k: training_weights(params[f"W_{k}_trainee"], B) for k in ("in", "rec", "out")}
    w["var_out"] = read_var(w["out"])
    return w


def _demonstration(params: Mapping[str, Any], clock: torch.Tensor, B: int, learner: Any,
                   noisy: dict[str, torch.Tensor] | None, *, detach_reset: bool, record: dict[str, bool]) -> SNNRecord:
    """The learning network's demonstration trial (pseudo-derivatives recorded for the update; ``record``: the
    other records :func:`~pcmeta.agents.eprop.network.run_snn` takes, for the torch network)."""
    if noisy is not None:
        return run_snn(LEARNER, clock, noisy["in"], noisy["rec"], noisy["out"], record_psi=True,
                       detach_reset=detach_reset, **record,
                       read_var=(read_var(noisy["in"]), read_var(noisy["rec"]), noisy["var_out"]))
    if learner is not None:
        return learner.trial(clock, record_psi=True)
    return run_snn(LEARNER, clock, params["W_in_trainee"], params["W_rec_trainee"], params["W_out_trainee"],
                   batch=B, record_psi=True, detach_reset=detach_reset, **record)


def _test_trial(params: Mapping[str, Any], clock: torch.Tensor, dW_in: torch.Tensor, dW_rec: torch.Tensor,
                learner: Any, noisy: dict[str, torch.Tensor] | None, *, detach_reset: bool) -> SNNRecord:
    """The update written to the learning network's weights, then its test trial."""
    if learner is not None:
        learner.update(dW_in[0], dW_rec[0])
        return learner.trial(clock)
    if noisy is not None:
        w_in = training_reprogram(noisy["in"], dW_in)
        w_rec = training_reprogram(noisy["rec"], dW_rec)
        return run_snn(LEARNER, clock, w_in, w_rec, noisy["out"], detach_reset=detach_reset,
                       read_var=(read_var(w_in), read_var(w_rec), noisy["var_out"]))
    W_in = params["W_in_trainee"] + dW_in
    W_rec = params["W_rec_trainee"] + dW_rec
    return run_snn(LEARNER, clock, W_in, W_rec, params["W_out_trainee"], detach_reset=detach_reset)

