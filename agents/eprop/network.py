"""The recurrent LIF/ALIF network in discrete time (dt = 1 ms per step), batched over tasks.

Neuron model (all states start at 0; one trial = T steps, t = 0..T-1; SPEC.md section 2)::

    b_t = rho b_{t-1} + z_{t-1}                         (ALIF only; rho = exp(-1/tau_a))
    A_t = v_th + beta b_t                                (LIF: beta = 0, A_t = v_th)
    v_t = alpha v_{t-1} + x_t W_in + z_{t-1} W_rec - A_t z_{t-1}      (alpha = exp(-1/tau_m))
    z_t = [v_t > A_t], forced to 0 if the neuron was refractory at t-1 (r_{t-1} > 0)
    r_t = clip(r_{t-1} + 5 z_t - 1, 0, 5)                 (a spike is followed by 4 silent steps)
    y_t = kappa y_{t-1} + z_t W_out                       (leaky readout, kappa = exp(-1/tau_out))

W_rec has no self-connections: its diagonal is ignored (masked) everywhere. A weight is a tensor
((pre, post) or per task (B, pre, post)) or a :class:`pcmeta.hardware.SynapticArray` (one ``matmul`` per
product). The spike function's gradient is the pseudo-derivative, so a trial is differentiable end to end.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pcmeta.hardware import SynapticArray

from .config import SNNConfig
from .voltage import VoltageExtremes

__all__ = ["spike_fn", "SNNRecord", "run_snn", "reference_step", "leaky_filter", "no_diag", "per_step_autograd"]


class _SpikeFn(torch.autograd.Function):
    """Heaviside of u = (v - A) / v_th with the pseudo-derivative gamma max(0, 1 - |u|) as gradient."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, gamma: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.gamma = gamma
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return g * ctx.gamma * torch.clamp(1.0 - u.abs(), min=0.0), None


def spike_fn(v: torch.Tensor, A: torch.Tensor | float, v_th: float, gamma: float) -> torch.Tensor:
    """z = [v > A] (float); its gradient w.r.t. v is (gamma / v_th) max(0, 1 - |v - A| / v_th)."""
    return _SpikeFn.apply((v - A) / v_th, gamma)


def no_diag(W: torch.Tensor) -> torch.Tensor:
    """W with its (last two axes') diagonal set to 0, out of place (keeps autograd)."""
    n = W.shape[-1]
    return W * (1.0 - torch.eye(n, dtype=W.dtype, device=W.device))


def leaky_filter(x: torch.Tensor, decay: float, dim: int = 1) -> torch.Tensor:
    """y_t = decay y_{t-1} + x_t along ``dim`` (y_{-1} = 0); differentiable."""
    xs = x.movedim(dim, 0).unbind(0)
    out = []
    y = torch.zeros_like(xs[0])
    for x_t in xs:
        y = decay * y + x_t
        out.append(y)
    return torch.stack(out, dim=0).movedim(0, dim)


def _mm(x: torch.Tensor, W: Any) -> torch.Tensor:
    """One step: x (B, n_in) or (n_in,) times W, a (n_in, n) or per-task (B, n_in, n) tensor, or a
    SynapticArray -> (B, n) or (n,)."""
    if isinstance(W, SynapticArray):
        return W.matmul(x)
    if W.dim() == 2:
        return x @ W
    if x.dim() == 1:
        return torch.matmul(x.unsqueeze(0).unsqueeze(0), W).squeeze(1)
    return torch.bmm(x.unsqueeze(1), W).squeeze(1)


def _mm_seq(x: torch.Tensor, W: Any) -> torch.Tensor:
    """A whole trial: x (B, T, n_in) or (T, n_in) times W (as in :func:`_mm`) -> (B or 1, T, n)."""
    if isinstance(W, SynapticArray):
        return W.matmul(x)
    return torch.matmul(x, W)  # broadcasting: (T, i) @ (B, i, n) -> (B, T, n); (B, T, i) @ (i, n) -> (B, T, n)


class _StepGrads:
    """The (spikes, output gradient) pairs of one trial's per-step products z_{t-1} W_rec, gathered during the
    backward pass; W_rec's gradient, their sum over steps, is then ONE product (instead of an outer product and
    an accumulation of a (B,) n x n tensor per step, the largest cost of BPTT through the test trial)."""

    def __init__(self) -> None:
        self.z: list[torch.Tensor] = []
        self.g: list[torch.Tensor] = []

    def weight_grad(self, per_task: bool) -> torch.Tensor:
        Z, G = torch.stack(self.z), torch.stack(self.g)  # (T, B, n_pre), (T, B, n_post)
        self.z, self.g = [], []
        if not per_task:
            return Z.flatten(0, 1).T @ G.flatten(0, 1)
        return torch.bmm(Z.permute(1, 2, 0), G.transpose(0, 1))  # (B, n_pre, T) @ (B, T, n_post)


class _RecurrentWeight(torch.autograd.Function):
    """Identity on W_rec whose backward returns the sum gathered by :class:`_StepGrads` (it runs after every
    step's backward, as autograd runs a node once all the gradients of its output are in)."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, grads: _StepGrads) -> torch.Tensor:  # type: ignore[override]
        ctx.grads = grads
        return W.view_as(W)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return ctx.grads.weight_grad(per_task=g.dim() == 3), None


class _RecurrentStep(torch.autograd.Function):
    """z (B, n) @ W_rec ((n, n) or per task (B, n, n)) for 0/1 spikes z; W's gradient goes to :class:`_StepGrads`.
    Per-task weights: the rows of the spiking neurons are gathered (a few % of W), not the whole W read."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, W: torch.Tensor, grads: _StepGrads) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, W)
        ctx.grads = grads
        if W.dim() == 2:
            return z @ W
        b, i = z.nonzero(as_tuple=True)
        rows = W.reshape(-1, W.shape[-1]).index_select(0, b * W.shape[1] + i)
        return torch.zeros(z.shape[0], W.shape[-1], dtype=W.dtype, device=W.device).index_add_(0, b, rows)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        z, W = ctx.saved_tensors
        ctx.grads.z.append(z)
        ctx.grads.g.append(g)
        gz = None
        if ctx.needs_input_grad[0]:
            gz = g @ W.T if W.dim() == 2 else torch.bmm(g.unsqueeze(1), W.transpose(1, 2)).squeeze(1)
        return gz, None, None


def _noise_like(var: torch.Tensor) -> torch.Tensor:
    """Gaussian noise with the given (detached) variance: sqrt(var) * N(0, 1), no gradient."""
    with torch.no_grad():
        return var.detach().clamp(min=0.0).sqrt() * torch.randn_like(var)


@dataclass
class SNNRecord:
    """What one trial of :func:`run_snn` recorded, all (B, T, .) tensors.

    Attributes:
        z: spikes (0/1) of the recurrent neurons.
        y: leaky readout (B, T, n_out) (None if no W_out was given).
        psi: pseudo-derivatives (None unless ``record_psi``).
        v: membrane potentials (None unless ``record_v``).
        A: thresholds A_t (None unless ``record_v``; LIF: constant v_th).
        extremes: the extremes of (v - A) / v_th per task and neuron (None unless ``record_extremes``).
    """

    z: torch.Tensor
    y: torch.Tensor | None = None
    psi: torch.Tensor | None = None
    v: torch.Tensor | None = None
    A: torch.Tensor | None = None
    extremes: VoltageExtremes | None = None


def run_snn(
    cfg: SNNConfig,
    x: torch.Tensor,
    W_in: Any,
    W_rec: Any,
    W_out: Any = None,
    *,
    batch: int | None = None,
    record_psi: bool = False,
    record_v: bool = False,
    record_extremes: bool = False,
    detach_reset: bool = True,
    threshold_gradient: bool = True,
    per_step_mvm: bool | None = None,
    read_var: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
) -> SNNRecord:
    """Simulate one trial of a LIF/ALIF network (module docstring), batched over tasks.

    Args:
        cfg: network constants.
        x: input spikes, (B, T, n_in) or (T, n_in) (the same input for every task).
        W_in: (n_in, n_rec) or per-task (B, n_in, n_rec) tensor, or a SynapticArray.
        W_rec: (n_rec, n_rec) or (B, n_rec, n_rec) tensor (the diagonal is masked here), or a SynapticArray
            (whose diagonal the caller must keep at 0, see :class:`~pcmeta.agents.eprop.EpropLearner`).
        W_out: readout weights (n_rec, n_out) / (B, n_rec, n_out) / SynapticArray, or None.
        batch: number of tasks B when neither x nor the weights carry it (default 1).
        record_psi, record_v: also return pseudo-derivatives / membrane potentials and thresholds.
        record_extremes: also return :class:`~pcmeta.agents.eprop.voltage.VoltageExtremes` (what the voltage
            regularisation reads, without a (B, T, n) record).
        detach_reset: stop the gradient through the reset term A_t z_{t-1} (e-prop convention; affects
            gradients only, never the forward values).
        threshold_gradient: let the gradient of the spike function reach the adaptive threshold A_t (ALIF:
            through b_t to all earlier spikes, a 600-step memory). False: the pseudo-derivative acts on v only
            and A_t enters the gradient through the reset term alone, as in the authors' TensorFlow code
            (their LSNN spike function returns no gradient for the threshold). Forward values are the same.
        per_step_mvm: compute x_t W_in and z_t W_out with one MVM per time step (default: True when the
            weight is a SynapticArray, so that e.g. PCM read noise is drawn per step; tensors use one
            batched product, which gives the same values).
        read_var: optional per-weight read-noise variances (var_in, var_rec, var_out) shaped like the
            (tensor) weights: every product x W gets fresh Gaussian noise of variance (x^2) var per output
            and time step, i.e. each weight read with independent noise on every MVM, sampled exactly in
            output space; no gradient flows through the noise (training-time model of
            :func:`pcmeta.hardware.authors_arm.training_weights`).

    Returns:
        :class:`SNNRecord` with z (B, T, n_rec), y (B, T, n_out), optional psi / v / A.
    """
    T, B = _trial_shape(cfg, x, (W_in, W_rec, W_out), batch)
    if not isinstance(W_rec, SynapticArray):
        if W_rec.shape[-2:] != (cfg.n_rec, cfg.n_rec):
            raise ValueError(f"W_rec must be ({cfg.n_rec}, {cfg.n_rec}), got {tuple(W_rec.shape)}")
        W_rec = no_diag(W_rec)
    step_in = isinstance(W_in, SynapticArray) if per_step_mvm is None else per_step_mvm
    step_out = isinstance(W_out, SynapticArray) if per_step_mvm is None else per_step_mvm
    var_in = var_rec = var_out = None
    if read_var is not None:
        if step_in or step_out or isinstance(W_rec, SynapticArray):
            raise ValueError("read_var needs tensor weights (SynapticArrays draw their own read noise)")
        var_in, var_rec, var_out = read_var
        var_rec = no_diag(var_rec)
    I_in = None if step_in else _input_currents(cfg, x, W_in, var_in, B, T)
    rec = _simulate(cfg, x, W_in, W_rec, I_in, var_rec, B, record_psi=record_psi, record_v=record_v,
                    extremes=VoltageExtremes(cfg.v_th) if record_extremes else None,
                    detach_reset=detach_reset, threshold_gradient=threshold_gradient)
    if W_out is not None:
        rec.y = _readout(cfg, rec.z, W_out, var_out, per_step=step_out)
    return rec


def _trial_shape(cfg: SNNConfig, x: torch.Tensor, weights: tuple, batch: int | None) -> tuple[int, int]:
    """(T, B) of a trial: checks x and that per-task weights agree with x on the batch."""
    if x.dim() not in (2, 3) or x.shape[-1] != cfg.n_in:
        raise ValueError(f"x must have shape (B, T, {cfg.n_in}) or (T, {cfg.n_in}), got {tuple(x.shape)}")
    T = x.shape[-2]
    B = x.shape[0] if x.dim() == 3 else None
    for W in weights:
        if isinstance(W, torch.Tensor) and W.dim() == 3:
            if B is not None and W.shape[0] != B:
                raise ValueError(f"per-task weights have batch {W.shape[0]} but x has batch {B}")
            B = W.shape[0]
    if B is None:
        B = 1 if batch is None else int(batch)
    if not torch.is_floating_point(x):
        raise ValueError("x must be a floating-point tensor of 0/1 spikes")
    return T, B


def _input_currents(cfg: SNNConfig, x: torch.Tensor, W_in: Any, var_in: torch.Tensor | None, B: int,
                    T: int) -> tuple[torch.Tensor, ...]:
    """x_t W_in for every step in one batched product (plus read noise if ``var_in``), one view per step.

    unbind: one view per step whose backward is a single stack (indexing I_in[:, t] in the loop would
    allocate and accumulate a full (B, T, n) gradient per step in BPTT)."""
    I_in = _mm_seq(x, W_in).expand(B, T, cfg.n_rec)
    if var_in is not None:
        I_in = I_in + _noise_like(_mm_seq(x * x, var_in).expand(B, T, cfg.n_rec))
    return I_in.unbind(1)


def _simulate(cfg: SNNConfig, x: torch.Tensor, W_in: Any, W_rec: Any, I_in: tuple | None,
              var_rec: torch.Tensor | None, B: int, *, record_psi: bool, record_v: bool,
              extremes: VoltageExtremes | None, detach_reset: bool, threshold_gradient: bool) -> SNNRecord:
    """The time loop of :func:`run_snn` (I_in None: one W_in MVM per step); returns z and the records
    (``extremes``: updated every step and returned as the record's)."""
    dtype, dev = x.dtype, x.device
    alpha, rho = cfg.alpha, cfg.rho
    beta = cfg.beta_vector(dtype, dev) if cfg.n_alif else None
    v = torch.zeros(B, cfg.n_rec, dtype=dtype, device=dev)
    z = torch.zeros_like(v)
    r = torch.zeros_like(v)
    b = torch.zeros_like(v) if cfg.n_alif else None
    zs, psis, vs, As = [], [], [], []
    grads = W_rec_g = None
    if _lazy_weight_grad(W_rec):
        grads = _StepGrads()
        W_rec_g = _RecurrentWeight.apply(W_rec, grads)
    for t in range(x.shape[-2]):
        if cfg.n_alif:
            b = rho * b + z
            A = cfg.v_th + beta * b
        else:
            A = cfg.v_th
        i_t = _mm(x[..., t, :], W_in) if I_in is None else I_in[t]
        i_rec = _RecurrentStep.apply(z, W_rec_g, grads) if grads is not None else _mm(z, W_rec)
        if var_rec is not None:
            i_rec = i_rec + _noise_like(_mm(z * z, var_rec))
        z_reset = z.detach() if detach_reset else z
        v = alpha * v + i_t + i_rec - A * z_reset
        free = (r <= 0).to(dtype)  # not refractory at t-1
        A_spk = A.detach() if (not threshold_gradient and torch.is_tensor(A)) else A
        z = spike_fn(v, A_spk, cfg.v_th, cfg.gamma) * free
        r = torch.clamp(r + 5.0 * z.detach() - 1.0, 0.0, float(cfg.n_refractory))
        zs.append(z)
        if extremes is not None:
            extremes.update(v, A, free)
        if record_psi:
            psis.append(free * (cfg.gamma / cfg.v_th) * torch.clamp(1.0 - (v - A).abs() / cfg.v_th, min=0.0))
        if record_v:
            vs.append(v)
            As.append(A if torch.is_tensor(A) else torch.full_like(v, A))
    rec = SNNRecord(z=torch.stack(zs, dim=1), extremes=extremes)
    if record_psi:
        rec.psi = torch.stack(psis, dim=1)
    if record_v:
        rec.v = torch.stack(vs, dim=1)
        rec.A = torch.stack(As, dim=1)
    return rec


_PER_STEP_AUTOGRAD = [False]


@contextlib.contextmanager
def per_step_autograd():
    """Within it, the time loop differentiates every step's z_{t-1} W_rec by autograd (the reference the CPU fast
    path is tested and benchmarked against, ``pcmeta bench snn``)."""
    _PER_STEP_AUTOGRAD.append(True)
    try:
        yield
    finally:
        _PER_STEP_AUTOGRAD.pop()


def _lazy_weight_grad(W: Any) -> bool:
    """Whether the time loop takes the :class:`_RecurrentStep` path: a CPU tensor W_rec that needs a gradient
    (the CUDA path keeps one autograd product per step, as checked on a GPU), outside :func:`per_step_autograd`."""
    return (isinstance(W, torch.Tensor) and W.device.type == "cpu" and W.requires_grad
            and torch.is_grad_enabled() and not _PER_STEP_AUTOGRAD[-1])


def _readout(cfg: SNNConfig, Z: torch.Tensor, W_out: Any, var_out: torch.Tensor | None, *,
             per_step: bool) -> torch.Tensor:
    """The leaky readout y of spikes Z (B, T, n_rec): one MVM per step, or one batched product (+ noise)."""
    if per_step:
        cur = torch.stack([_mm(Z[:, t], W_out) for t in range(Z.shape[1])], dim=1)
    else:
        cur = _mm_seq(Z, W_out)
        if var_out is not None:
            cur = cur + _noise_like(_mm_seq(Z * Z, var_out))
    return leaky_filter(cur, cfg.kappa)


def reference_step(cfg: SNNConfig, state: dict, x_t: np.ndarray, W_in: np.ndarray, W_rec: np.ndarray) -> dict:
    """One time step written neuron by neuron in plain Python/numpy float64 (slow; for tests only).

    ``state`` holds v, z, r, b (each (n_rec,)); returns the new state plus psi and A for this step.
    Follows SPEC section 2 literally, one neuron at a time, as an independent check of :func:`run_snn`.
    """
    n = cfg.n_rec
    new = {k: np.zeros(n) for k in ("v", "z", "r", "b", "psi", "A")}
    for j in range(n):
        is_alif = j >= n - cfg.n_alif
        b = cfg.rho * state["b"][j] + state["z"][j] if is_alif else 0.0
        A = cfg.v_th + cfg.beta * b if is_alif else cfg.v_th
        cur = sum(x_t[i] * W_in[i, j] for i in range(cfg.n_in))
        cur += sum(state["z"][i] * W_rec[i, j] for i in range(n) if i != j)
        v = cfg.alpha * state["v"][j] + cur - A * state["z"][j]
        refractory = state["r"][j] > 0
        z = 0.0 if refractory else float(v > A)
        psi = 0.0 if refractory else (cfg.gamma / cfg.v_th) * max(0.0, 1.0 - abs(v - A) / cfg.v_th)
        r = min(max(state["r"][j] + 5 * z - 1, 0), cfg.n_refractory)
        for k, val in zip(("v", "z", "r", "b", "psi", "A"), (v, z, r, b, psi, A)):
            new[k][j] = val
    return new
