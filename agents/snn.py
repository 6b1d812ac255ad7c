"""The spiking one-shot learner of the arm task in PyTorch: natural e-prop with a learning-signal generator.

SPEC.md section 2 defines every equation used here; this module implements them in discrete time
(dt = 1 ms per network step), batched over tasks, in float32 (default) or float64.

Neuron model (all states start at 0; one trial = T steps, t = 0..T-1)::

    b_t = rho b_{t-1} + z_{t-1}                         (ALIF only; rho = exp(-1/tau_a))
    A_t = v_th + beta b_t                                (LIF: beta = 0, A_t = v_th)
    v_t = alpha v_{t-1} + x_t W_in + z_{t-1} W_rec - A_t z_{t-1}      (alpha = exp(-1/tau_m))
    z_t = [v_t > A_t], forced to 0 if the neuron was refractory at t-1 (r_{t-1} > 0)
    r_t = clip(r_{t-1} + 5 z_t - 1, 0, 5)                 (a spike is followed by 4 silent steps)
    y_t = kappa y_{t-1} + z_t W_out                       (leaky readout, kappa = exp(-1/tau_out))

W_rec has no self-connections: its diagonal is ignored (masked) everywhere in this module.

Natural e-prop (one update after the demonstration trial)::

    psi_{j,t} = (gamma / v_th) max(0, 1 - |v_{j,t} - A_{j,t}| / v_th),  0 where refractory at t-1
    ebar^in_t  = alpha ebar^in_{t-1} + x_t,   ebar^rec_t = alpha ebar^rec_{t-1} + z_{t-1}
    dW = -eta Ebar^T (Psi * L)                            (eta = 1e-4; L = the LSG readout at step t)

Two networks: the learning network (:data:`LEARNER`: 250 LIF, 5 clock inputs, 2 angular velocities in
rad/s out) and the learning-signal generator (:data:`LSG`: 560 LIF then 240 ALIF, 53 inputs = clock and
the 16-bit code of the target path, 250 learning signals out).

Deployment: :class:`EpropLearner` keeps the learning network's W_in and W_rec (and the fixed readout
W_out) as :class:`pcmeta.hardware` SynapticArrays: every time step is one ``matmul`` per array, the
update is one ``update(dW)``. :class:`EpropAgent` drives ``pcmeta/ArmTrajectory-v0`` (demonstration episode,
update, test episode). :data:`ARM_PCM_PRESETS` names the deployments on :class:`pcmeta.hardware.PCMSubstrate`
("authors": the authors' conventions, the reference; "tuned": unbiased update rounding, per-array scales,
drift compensation, updates written in the compensated frame); :func:`pcm_substrate_factory` builds them.
:class:`AuthorsArmPCM` is the authors' statistical arm PCM model (SPEC's reference row), as a duck-typed substrate. Meta-training: :func:`one_shot_episode` is a pure function of a parameter
dict, differentiable end to end (surrogate gradient = the pseudo-derivative above), so that BPTT through
the e-prop update is ``loss.backward()`` (:func:`meta_loss`); :func:`meta_train` is the resumable loop.
Evaluation: :func:`evaluate` (batched float, or one task at a time on a substrate); the brian2 engine is
:mod:`pcmeta.agents.snn_brian2`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from pcmeta.tasks import trajectories as traj

__all__ = [
    "SNNConfig", "LEARNER", "LSG", "ETA", "PARAM_KEYS", "SNNRecord", "spike_fn", "run_snn",
    "reference_step", "leaky_filter", "traces", "eprop_update", "load_weights", "default_weights_path",
    "resolve_weights", "authors_weights_path", "SHIPPED_WEIGHTS",
    "episode_inputs", "one_shot_episode", "arm_losses", "meta_loss", "rate_regularization",
    "EpropLearner", "EpropAgent", "evaluate", "summarize", "round_to_grid", "AuthorsArmPCM", "init_params",
    "meta_train", "save_weights_npz", "load_checkpoint_params", "ArmPCMPreset", "ARM_PCM_PRESETS",
    "pcm_substrate_factory", "TRAINEE_NOISE", "authors_training_weights", "authors_training_reprogram",
    "authors_read_var", "voltage_regularization", "run_summary",
]

#: Learning rate of the one natural e-prop update.
ETA: float = 1e-4


@dataclass(frozen=True)
class SNNConfig:
    """Constants of one recurrent LIF/ALIF network (SPEC section 2). Times in ms (= steps, dt = 1 ms).

    Attributes:
        n_in, n_rec, n_out: input lines, recurrent neurons, leaky readout units.
        n_alif: the LAST ``n_alif`` recurrent neurons are adaptive (ALIF); the others are LIF.
        v_th: base threshold (dimensionless membrane units).
        tau_m, tau_out, tau_a: membrane, readout and adaptation time constants (ms).
        beta: threshold increase per unit of adaptation variable b (ALIF only).
        n_refractory: refractory constant (5: a spike is followed by 4 silent steps).
        gamma: pseudo-derivative dampening factor.
        rate_target_hz: firing-rate regularisation target (Hz); rate_lambda its weight (meta-training only).
    """

    n_in: int
    n_rec: int
    n_out: int
    n_alif: int = 0
    v_th: float = 0.6
    tau_m: float = 20.0
    tau_out: float = 20.0
    tau_a: float = 600.0
    beta: float = 1.6
    n_refractory: int = 5
    gamma: float = 0.3
    rate_target_hz: float = 20.0
    rate_lambda: float = 0.25

    @property
    def alpha(self) -> float:
        """Membrane decay per step, exp(-1/tau_m)."""
        return math.exp(-1.0 / self.tau_m)

    @property
    def kappa(self) -> float:
        """Readout decay per step, exp(-1/tau_out)."""
        return math.exp(-1.0 / self.tau_out)

    @property
    def rho(self) -> float:
        """Adaptation decay per step, exp(-1/tau_a)."""
        return math.exp(-1.0 / self.tau_a)

    def beta_vector(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """Per-neuron beta, (n_rec,): 0 for the LIF neurons, ``beta`` for the last ``n_alif``."""
        b = torch.zeros(self.n_rec, dtype=dtype, device=device)
        if self.n_alif:
            b[self.n_rec - self.n_alif:] = self.beta
        return b


#: The learning network (trainee): 250 LIF, 5 clock inputs, 2 joint angular velocities (rad/s) out.
LEARNER = SNNConfig(n_in=traj.N_CLOCK, n_rec=250, n_out=2, n_alif=0, v_th=0.6, rate_target_hz=20.0,
                    rate_lambda=0.25)
#: The learning-signal generator: 560 LIF then 240 ALIF, 53 inputs, 250 learning signals out.
LSG = SNNConfig(n_in=traj.N_CLOCK + 3 * traj.N_BITS, n_rec=800, n_out=250, n_alif=240, v_th=1.3, beta=1.6,
                tau_a=600.0, rate_target_hz=10.0, rate_lambda=0.25)

#: Keys of a weight dict (the released .npz layout; every matrix is (pre, post)).
PARAM_KEYS = ("W_in_lsg", "W_rec_lsg", "W_out_lsg", "W_in_trainee", "W_rec_trainee", "W_out_trainee")


# ---------------------------------------------------------------------------------------------------------
# neuron dynamics
# ---------------------------------------------------------------------------------------------------------
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


def _is_array(W: Any) -> bool:
    """True for a substrate SynapticArray (anything with ``matmul`` and ``read``), False for a tensor."""
    return hasattr(W, "matmul") and hasattr(W, "read") and not isinstance(W, torch.Tensor)


def _mm(x: torch.Tensor, W: Any) -> torch.Tensor:
    """One step: x (B, n_in) or (n_in,) times W, a (n_in, n) or per-task (B, n_in, n) tensor, or a
    SynapticArray -> (B, n) or (n,)."""
    if _is_array(W):
        return W.matmul(x)
    if W.dim() == 2:
        return x @ W
    if x.dim() == 1:
        return torch.matmul(x.unsqueeze(0).unsqueeze(0), W).squeeze(1)
    return torch.bmm(x.unsqueeze(1), W).squeeze(1)


def _mm_seq(x: torch.Tensor, W: Any) -> torch.Tensor:
    """A whole trial: x (B, T, n_in) or (T, n_in) times W (as in :func:`_mm`) -> (B or 1, T, n)."""
    if _is_array(W):
        return W.matmul(x)
    return torch.matmul(x, W)  # broadcasting: (T, i) @ (B, i, n) -> (B, T, n); (B, T, i) @ (i, n) -> (B, T, n)


def _noise_like(var: torch.Tensor) -> torch.Tensor:
    """Gaussian noise with the given (detached) variance: sqrt(var) * N(0, 1), no gradient."""
    with torch.no_grad():
        return var.detach().clamp(min=0.0).sqrt() * torch.randn_like(var)


def _no_diag(W: torch.Tensor) -> torch.Tensor:
    """W with its (last two axes') diagonal set to 0, out of place (keeps autograd)."""
    n = W.shape[-1]
    return W * (1.0 - torch.eye(n, dtype=W.dtype, device=W.device))


@dataclass
class SNNRecord:
    """What one trial of :func:`run_snn` recorded, all (B, T, .) tensors.

    Attributes:
        z: spikes (0/1) of the recurrent neurons.
        y: leaky readout (B, T, n_out) (None if no W_out was given).
        psi: pseudo-derivatives (None unless ``record_psi``).
        v: membrane potentials (None unless ``record_v``).
        A: thresholds A_t (None unless ``record_v``; LIF: constant v_th).
    """

    z: torch.Tensor
    y: torch.Tensor | None = None
    psi: torch.Tensor | None = None
    v: torch.Tensor | None = None
    A: torch.Tensor | None = None


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
            (whose diagonal the caller must keep at 0, see :class:`EpropLearner`).
        W_out: readout weights (n_rec, n_out) / (B, n_rec, n_out) / SynapticArray, or None.
        batch: number of tasks B when neither x nor the weights carry it (default 1).
        record_psi, record_v: also return pseudo-derivatives / membrane potentials and thresholds.
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
            :func:`authors_training_weights`).

    Returns:
        :class:`SNNRecord` with z (B, T, n_rec), y (B, T, n_out), optional psi / v / A.
    """
    if x.dim() not in (2, 3) or x.shape[-1] != cfg.n_in:
        raise ValueError(f"x must have shape (B, T, {cfg.n_in}) or (T, {cfg.n_in}), got {tuple(x.shape)}")
    T = x.shape[-2]
    B = x.shape[0] if x.dim() == 3 else None
    for W in (W_in, W_rec, W_out):
        if isinstance(W, torch.Tensor) and W.dim() == 3:
            if B is not None and W.shape[0] != B:
                raise ValueError(f"per-task weights have batch {W.shape[0]} but x has batch {B}")
            B = W.shape[0]
    if B is None:
        B = 1 if batch is None else int(batch)
    dtype, dev = x.dtype, x.device
    if not torch.is_floating_point(x):
        raise ValueError("x must be a floating-point tensor of 0/1 spikes")
    if not _is_array(W_rec):
        if W_rec.shape[-2:] != (cfg.n_rec, cfg.n_rec):
            raise ValueError(f"W_rec must be ({cfg.n_rec}, {cfg.n_rec}), got {tuple(W_rec.shape)}")
        W_rec = _no_diag(W_rec)
    step_in = _is_array(W_in) if per_step_mvm is None else per_step_mvm
    step_out = _is_array(W_out) if per_step_mvm is None else per_step_mvm
    # unbind: one view per step whose backward is a single stack (indexing I_in[:, t] in the loop would
    # allocate and accumulate a full (B, T, n) gradient per step in BPTT)
    if read_var is not None:
        if step_in or step_out or _is_array(W_rec):
            raise ValueError("read_var needs tensor weights (SynapticArrays draw their own read noise)")
        var_in, var_rec, var_out = read_var
        var_rec = _no_diag(var_rec)
    I_in = None
    if not step_in:
        I_in = _mm_seq(x, W_in).expand(B, T, cfg.n_rec)
        if read_var is not None:
            I_in = I_in + _noise_like(_mm_seq(x * x, var_in).expand(B, T, cfg.n_rec))
        I_in = I_in.unbind(1)

    alpha, rho = cfg.alpha, cfg.rho
    beta = cfg.beta_vector(dtype, dev) if cfg.n_alif else None
    v = torch.zeros(B, cfg.n_rec, dtype=dtype, device=dev)
    z = torch.zeros_like(v)
    r = torch.zeros_like(v)
    b = torch.zeros_like(v) if cfg.n_alif else None
    zs, psis, vs, As = [], [], [], []
    for t in range(T):
        if cfg.n_alif:
            b = rho * b + z
            A = cfg.v_th + beta * b
        else:
            A = cfg.v_th
        i_t = _mm(x[..., t, :], W_in) if step_in else I_in[t]
        i_rec = _mm(z, W_rec)
        if read_var is not None:
            i_rec = i_rec + _noise_like(_mm(z * z, var_rec))
        z_reset = z.detach() if detach_reset else z
        v = alpha * v + i_t + i_rec - A * z_reset
        free = (r <= 0).to(dtype)  # not refractory at t-1
        A_spk = A.detach() if (not threshold_gradient and torch.is_tensor(A)) else A
        z = spike_fn(v, A_spk, cfg.v_th, cfg.gamma) * free
        r = torch.clamp(r + 5.0 * z.detach() - 1.0, 0.0, float(cfg.n_refractory))
        zs.append(z)
        if record_psi:
            psis.append(free * (cfg.gamma / cfg.v_th) * torch.clamp(1.0 - (v - A).abs() / cfg.v_th, min=0.0))
        if record_v:
            vs.append(v)
            As.append(A if torch.is_tensor(A) else torch.full_like(v, A))
    Z = torch.stack(zs, dim=1)
    rec = SNNRecord(z=Z)
    if record_psi:
        rec.psi = torch.stack(psis, dim=1)
    if record_v:
        rec.v = torch.stack(vs, dim=1)
        rec.A = torch.stack(As, dim=1)
    if W_out is not None:
        if step_out:
            cur = torch.stack([_mm(Z[:, t], W_out) for t in range(T)], dim=1)
        else:
            cur = _mm_seq(Z, W_out)
            if read_var is not None and var_out is not None:
                cur = cur + _noise_like(_mm_seq(Z * Z, var_out))
        rec.y = leaky_filter(cur, cfg.kappa)
    return rec


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


def leaky_filter(x: torch.Tensor, decay: float, dim: int = 1) -> torch.Tensor:
    """y_t = decay y_{t-1} + x_t along ``dim`` (y_{-1} = 0); differentiable."""
    xs = x.movedim(dim, 0).unbind(0)
    out = []
    y = torch.zeros_like(xs[0])
    for x_t in xs:
        y = decay * y + x_t
        out.append(y)
    return torch.stack(out, dim=0).movedim(0, dim)


def traces(x: torch.Tensor, z: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Presynaptic eligibility traces: ebar^in_t = alpha ebar^in_{t-1} + x_t and
    ebar^rec_t = alpha ebar^rec_{t-1} + z_{t-1} (exactly the inputs that entered v_t).

    x (B, T, n_in) or (T, n_in); z (B, T, n_rec). Returns (Ebar_in, Ebar_rec), (B or 1, T, .).
    """
    if x.dim() == 2:
        x = x.unsqueeze(0)
    z_prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
    return leaky_filter(x, alpha), leaky_filter(z_prev, alpha)


def eprop_update(
    x: torch.Tensor, z: torch.Tensor, psi: torch.Tensor, L: torch.Tensor, alpha: float, eta: float = ETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """The natural e-prop update dW = -eta Ebar^T (Psi * L) for W_in and W_rec (diagonal of dW_rec = 0).

    x: (B, T, n_in) or (T, n_in) inputs; z, psi, L: (B, T, n_rec) spikes, pseudo-derivatives and learning
    signals of the same trial. Returns dW_in (B, n_in, n_rec) and dW_rec (B, n_rec, n_rec).
    """
    e_in, e_rec = traces(x, z, alpha)
    g = psi * L
    dW_in = -eta * torch.einsum("bti,btj->bij", e_in.expand(g.shape[0], -1, -1), g)
    dW_rec = -eta * torch.einsum("bti,btj->bij", e_rec, g)
    return dW_in, _no_diag(dW_rec)


# ---------------------------------------------------------------------------------------------------------
# weights, inputs, the one-shot episode and its losses
# ---------------------------------------------------------------------------------------------------------
#: pcmeta's own meta-trained arm weights, shipped as package data (agents/weights/arm_eprop.md says how made)
SHIPPED_WEIGHTS: Path = Path(__file__).resolve().parent / "weights" / "arm_eprop.npz"


def authors_weights_path() -> Path:
    """The authors' released weights: ../shared/reference/authors_arm_natural_eprop.npz beside the repo."""
    repo = Path(__file__).resolve().parents[1]
    return repo.parent / "shared" / "reference" / "authors_arm_natural_eprop.npz"


def default_weights_path() -> Path:
    """The weights used when none are named: pcmeta's own shipped :data:`SHIPPED_WEIGHTS`."""
    return SHIPPED_WEIGHTS


def resolve_weights(name: str | Path | None) -> Path:
    """A weights argument as a path: None -> the shipped pcmeta weights; "pcmeta" -> the same; "authors" -> the
    authors' released file (:func:`authors_weights_path`); anything else is a path to an .npz."""
    if name is None or str(name) == "pcmeta":
        return default_weights_path()
    if str(name) == "authors":
        return authors_weights_path()
    return Path(name)


def load_weights(path: str | Path | None = None, dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
    """Load a weight .npz in the released layout (:data:`PARAM_KEYS`, each (pre, post)) as tensors.

    ``path``: a file, or a name of :func:`resolve_weights` (None / "pcmeta": the shipped weights, "authors": the
    released ones). Raises FileNotFoundError / ValueError with the expected layout when the file is missing or
    a key or shape does not fit.
    """
    p = resolve_weights(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"arm weights not found at {p}: pass --weights PATH.npz (keys {', '.join(PARAM_KEYS)}), 'pcmeta' (the "
            f"shipped ones) or 'authors' (../shared/reference/authors_arm_natural_eprop.npz)")
    with np.load(p) as d:
        missing = [k for k in PARAM_KEYS if k not in d]
        if missing:
            raise ValueError(f"{p} lacks the keys {missing}; expected {list(PARAM_KEYS)}")
        out = {k: torch.as_tensor(np.asarray(d[k]), dtype=dtype, device=device) for k in PARAM_KEYS}
    shapes = {
        "W_in_lsg": (LSG.n_in, LSG.n_rec), "W_rec_lsg": (LSG.n_rec, LSG.n_rec), "W_out_lsg": (LSG.n_rec, LSG.n_out),
        "W_in_trainee": (LEARNER.n_in, LEARNER.n_rec), "W_rec_trainee": (LEARNER.n_rec, LEARNER.n_rec),
        "W_out_trainee": (LEARNER.n_rec, LEARNER.n_out),
    }
    for k, s in shapes.items():
        if tuple(out[k].shape) != s:
            raise ValueError(f"{p}: {k} has shape {tuple(out[k].shape)}, expected {s}")
    return out


def episode_inputs(targets: traj.ArmTargets, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two networks' inputs for a batch of targets: clock (T, 5) and LSG input (B, T, 53).

    The LSG input is the paper's code of the target Cartesian path (:func:`pcmeta.tasks.trajectories.lsg_input`,
    with the wrap-around the released weights need).
    """
    xyz = targets.numpy().xyz
    clock = torch.as_tensor(traj.clock_input(xyz.shape[-2]), dtype=dtype, device=device)
    x_lsg = torch.as_tensor(traj.lsg_input(xyz), dtype=dtype, device=device)
    return clock, x_lsg


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
) -> dict[str, torch.Tensor]:
    """Demonstration trial -> learning signals -> one e-prop update -> test trial, for a batch of tasks.

    Args:
        params: weight dict (:data:`PARAM_KEYS`) of tensors; differentiable w.r.t. all of them.
        clock: (T, 5) clock spikes; x_lsg: (B, T, 53) LSG input.
        eta: e-prop learning rate.
        learner: optional :class:`EpropLearner`: the learning network runs on its substrate arrays and
            the update is written to them (then the episode is B = 1 at a time, see :func:`evaluate`).
        test: run the test trial after the update.
        detach_reset, threshold_gradient: see :func:`run_snn` (the threshold gradient matters for the LSG's
            ALIF neurons only).
        trainee_noise: "none" (float weights) or "authors": the learning network's weights as the authors'
            training code models PCM (:func:`authors_training_weights` per task, read noise on every MVM
            (:func:`authors_read_var`), the update rounded to 1/16 and re-programmed with noise
            (:func:`authors_training_reprogram`)); for meta-training, not with ``learner``.
        record_v: also return the LSG's and the demonstration trial's membrane potentials and thresholds
            (v_lsg, A_lsg, v_demo, A_demo; for :func:`voltage_regularization`).

    Returns:
        dict with omega_before (B, T, 2) rad/s (the demonstration trial's output), L (B, T, 250),
        dW_in (B, 5, 250), dW_rec (B, 250, 250), omega_after (B, T, 2) if ``test``, and the spike tensors
        z_lsg, z_demo, z_test for rate regularisation.
    """
    B = x_lsg.shape[0]
    lsg = run_snn(LSG, x_lsg, params["W_in_lsg"], params["W_rec_lsg"], params["W_out_lsg"],
                  detach_reset=detach_reset, threshold_gradient=threshold_gradient, record_v=record_v)
    if trainee_noise not in TRAINEE_NOISE:
        raise ValueError(f"trainee_noise must be one of {TRAINEE_NOISE}, got {trainee_noise!r}")
    noisy = trainee_noise == "authors"
    if noisy and learner is not None:
        raise ValueError("trainee_noise='authors' is a training-time model; a learner brings its own substrate")
    if noisy:
        w_in = authors_training_weights(params["W_in_trainee"], B)
        w_rec = authors_training_weights(params["W_rec_trainee"], B)
        w_out = authors_training_weights(params["W_out_trainee"], B)
        var_out = authors_read_var(w_out)
        demo = run_snn(LEARNER, clock, w_in, w_rec, w_out, record_psi=True, detach_reset=detach_reset,
                       read_var=(authors_read_var(w_in), authors_read_var(w_rec), var_out), record_v=record_v)
    elif learner is not None:
        demo = learner.trial(clock, record_psi=True)
    else:
        demo = run_snn(LEARNER, clock, params["W_in_trainee"], params["W_rec_trainee"], params["W_out_trainee"],
                       batch=B, record_psi=True, detach_reset=detach_reset, record_v=record_v)
    L = lsg.y
    dW_in, dW_rec = eprop_update(clock, demo.z, demo.psi, L, LEARNER.alpha, eta)
    out = {"omega_before": demo.y, "L": L, "dW_in": dW_in, "dW_rec": dW_rec, "z_lsg": lsg.z, "z_demo": demo.z}
    if record_v:
        if demo.v is None:
            raise ValueError("record_v needs the learning network in torch (not an EpropLearner)")
        out.update(v_lsg=lsg.v, A_lsg=lsg.A, v_demo=demo.v, A_demo=demo.A)
    if test:
        if learner is not None:
            if B != 1:
                raise ValueError("an EpropLearner runs one task at a time (B = 1)")
            learner.update(dW_in[0], dW_rec[0])
            after = learner.trial(clock)
        elif noisy:
            w_in = authors_training_reprogram(w_in, dW_in)
            w_rec = authors_training_reprogram(w_rec, dW_rec)
            after = run_snn(LEARNER, clock, w_in, w_rec, w_out, detach_reset=detach_reset,
                            read_var=(authors_read_var(w_in), authors_read_var(w_rec), var_out))
        else:
            W_in = params["W_in_trainee"] + dW_in
            W_rec = params["W_rec_trainee"] + dW_rec
            after = run_snn(LEARNER, clock, W_in, W_rec, params["W_out_trainee"], detach_reset=detach_reset)
        out["omega_after"] = after.y
        out["z_test"] = after.z
    return out


def arm_losses(omega: torch.Tensor, targets: traj.ArmTargets) -> dict[str, torch.Tensor]:
    """Per-task errors of produced joint velocities against the targets.

    omega: (B, T, 2) rad/s. Angles = start + 0.01 cumsum(omega) (not clipped), the path from the
    differentiable kinematics. Returns per-task (B,) tensors mse_omega ((rad/s)^2, mean over steps and
    joints), mse_xyz (m^2, mean over steps and coordinates) and loss = 0.5 mse_omega + 0.5 mse_xyz.
    """
    t = target_tensors(targets, dtype=omega.dtype, device=omega.device)
    return arm_losses_tensors(omega, t["omega"], t["xyz"], t["start"], targets.robot)


def target_tensors(targets: traj.ArmTargets, dtype=torch.float32, device=None,
                   clean_code: bool = False) -> dict[str, torch.Tensor]:
    """The tensors one batch of targets contributes to an episode and its loss: omega (B, T, 2) rad/s,
    xyz (B, T, 3) m, start (2,) rad and the LSG input x_lsg (B, T, 53) (paper's code, or the clean one)."""
    tn = targets.numpy()
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    return {"omega": f(tn.omega), "xyz": f(tn.xyz), "start": f(tn.start),
            "x_lsg": f(traj.lsg_input(tn.xyz, clean=clean_code))}


def arm_losses_tensors(omega: torch.Tensor, omega_t: torch.Tensor, xyz_t: torch.Tensor, start: torch.Tensor,
                       robot: str = "scorbot") -> dict[str, torch.Tensor]:
    """:func:`arm_losses` on tensors only (no host round trip, so it can be captured in a CUDA graph):
    omega, omega_t (B, T, 2) rad/s, xyz_t (B, T, 3) m, start (2,) rad."""
    q = traj.angles_from_velocities(omega, start)
    xyz = traj.forward_kinematics(q, robot)
    mse_o = ((omega - omega_t) ** 2).mean(dim=(1, 2))
    mse_x = ((xyz - xyz_t) ** 2).mean(dim=(1, 2))
    return {"mse_omega": mse_o, "mse_xyz": mse_x, "loss": 0.5 * mse_o + 0.5 * mse_x}


def rate_regularization(z: torch.Tensor, cfg: SNNConfig, dt_s: float = 1e-3) -> torch.Tensor:
    """Firing-rate regularisation: lambda * sum_j (r_j - f_target dt)^2, where r_j is neuron j's spike count
    per step averaged over the batch AND the time steps (the population of tasks shares one rate per neuron,
    as in the authors' training), f_target = ``cfg.rate_target_hz``, lambda = ``cfg.rate_lambda``.
    z: (B, T, n) spikes."""
    rate = z.mean(dim=(0, 1))  # (n,): spikes per step
    target = cfg.rate_target_hz * dt_s
    return cfg.rate_lambda * ((rate - target) ** 2).sum()


def voltage_regularization(v: torch.Tensor, A: torch.Tensor, z: torch.Tensor, cfg: SNNConfig) -> torch.Tensor:
    """Keeps neurons where the surrogate gradient can reach them: sum over neurons of
    relu(-1 - m_j)^2 + relu(n_j - 1)^2, with m_j the task-averaged maximum over the trial of (v - A) / v_th
    (m_j < -1: the neuron never comes within v_th of its threshold, its pseudo-derivative is 0 on every step:
    silent for good) and n_j the task-averaged minimum of (v - A) / v_th over the steps where the neuron is
    not refractory (n_j > 1: always more than v_th above threshold, saturated for good). The rate
    regularisation cannot move either kind (its gradient passes through the pseudo-derivative); this term's
    gradient acts on v directly. 0 for every neuron whose voltage enters the surrogate's support.
    v, A, z: (B, T, n) from :func:`run_snn` (``record_v``)."""
    d = (v - A) / cfg.v_th
    m = d.amax(dim=1).mean(dim=0)
    # refractory at t: a spike in t-4..t-1 (window k of the left-padded spikes covers exactly those steps)
    k = cfg.n_refractory - 1
    zp = torch.nn.functional.pad(z.detach().transpose(1, 2), (k, 0))  # (B, n, T + k)
    refr = torch.nn.functional.max_pool1d(zp, k, stride=1)[..., :-1].transpose(1, 2)  # (B, T, n)
    n = torch.where(refr > 0, torch.full_like(d, float("inf")), d).amin(dim=1)
    n = torch.where(torch.isfinite(n), n, torch.zeros_like(n)).mean(dim=0)
    return (torch.relu(-1.0 - m) ** 2).sum() + (torch.relu(n - 1.0) ** 2).sum()


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


#: the figures :func:`meta_loss_tensors` reports (in this order in :func:`meta_train`'s history)
META_FIGURES = ("loss", "mse_omega", "mse_xyz", "reg", "rate_lsg_hz", "rate_learner_hz")


def meta_loss_tensors(params: Mapping[str, torch.Tensor], clock: torch.Tensor, batch: Mapping[str, torch.Tensor],
                      *, robot: str = "scorbot", eta: float = ETA, detach_reset: bool = True,
                      trainee_noise: str = "none", voltage_reg: float = 0.0, threshold_gradient: bool = True
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`meta_loss` on tensors only: ``batch`` is :func:`target_tensors`' dict, ``clock`` (T, 5).
    Nothing here leaves the device, so one call plus ``backward()`` can be captured in a CUDA graph.
    ``detach_reset``: see :func:`run_snn` (False: the gradient also flows through the reset term, as in the
    authors' TensorFlow code); ``threshold_gradient``: see :func:`run_snn`; ``trainee_noise``: see
    :func:`one_shot_episode`; ``voltage_reg``: factor of :func:`voltage_regularization` of both networks (LSG
    and demonstration trial), added to the loss (0: off).
    Returns (loss, figures as 0-d tensors, keys :data:`META_FIGURES`)."""
    ep = one_shot_episode(params, clock, batch["x_lsg"], eta=eta, detach_reset=detach_reset,
                          threshold_gradient=threshold_gradient, trainee_noise=trainee_noise,
                          record_v=voltage_reg > 0)
    task = arm_losses_tensors(ep["omega_after"], batch["omega"], batch["xyz"], batch["start"], robot)
    # the learning network's rate is taken over its demonstration and test trials together
    reg = (rate_regularization(ep["z_lsg"], LSG)
           + rate_regularization(torch.cat([ep["z_demo"], ep["z_test"]], dim=1), LEARNER))
    loss = task["loss"].mean() + reg
    if voltage_reg > 0:
        loss = loss + voltage_reg * (voltage_regularization(ep["v_lsg"], ep["A_lsg"], ep["z_lsg"], LSG)
                                     + voltage_regularization(ep["v_demo"], ep["A_demo"], ep["z_demo"], LEARNER))
    with torch.no_grad():
        figs = {"loss": task["loss"].mean(), "mse_omega": task["mse_omega"].mean(),
                "mse_xyz": task["mse_xyz"].mean(), "reg": reg.detach(),
                "rate_lsg_hz": ep["z_lsg"].mean() * 1e3, "rate_learner_hz": ep["z_test"].mean() * 1e3}
    return loss, figs


# ---------------------------------------------------------------------------------------------------------
# deployment on a substrate
# ---------------------------------------------------------------------------------------------------------
class EpropLearner:
    """The learning network deployed on a :mod:`pcmeta.hardware` substrate.

    W_in (5, 250), W_rec (250, 250, diagonal 0: no self-connections) and, unless ``digital_readout``, the
    fixed readout W_out (250, 2) are SynapticArrays of ``substrate``; each time step is one ``matmul`` per
    array; :meth:`update` writes the one e-prop update with ``update(dW)`` (on PCM: quantized, only changed
    devices re-programmed). ``reset()`` re-places the initial weights (a fresh task).

    Args:
        substrate: a pcmeta.hardware Substrate (SoftwareSubstrate, PCMSubstrate).
        W_in, W_rec, W_out: initial weights (tensors or arrays, (pre, post)).
        digital_readout: keep W_out as a plain tensor instead of placing it on the substrate.
        prefix: name prefix of the arrays on the substrate.
        clip: if given, the initial weights are clipped to [-clip, clip] before placement (the authors' PCM
            model clips to [-1, 1]); None places them unchanged.
    """

    def __init__(self, substrate: Any, W_in: Any, W_rec: Any, W_out: Any, *, digital_readout: bool = False,
                 prefix: str = "learner", dtype=torch.float32, clip: float | None = None):
        self.substrate = substrate
        self.dtype = dtype
        self.prefix = prefix
        self.digital_readout = digital_readout
        t = lambda W: torch.as_tensor(np.asarray(W) if not torch.is_tensor(W) else W.detach(), dtype=dtype)  # noqa
        self._init = {"W_in": t(W_in), "W_rec": _no_diag(t(W_rec)), "W_out": t(W_out)}
        if clip is not None:
            self._init = {k: v.clamp(-clip, clip) for k, v in self._init.items()}
        if self._init["W_in"].shape != (LEARNER.n_in, LEARNER.n_rec):
            raise ValueError(f"W_in must be ({LEARNER.n_in}, {LEARNER.n_rec}), got {tuple(self._init['W_in'].shape)}")
        if self._init["W_out"].shape != (LEARNER.n_rec, LEARNER.n_out):
            raise ValueError(f"W_out must be ({LEARNER.n_rec}, {LEARNER.n_out})")
        self.arrays: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """(Re)place the initial weights on the substrate (programs the devices anew)."""
        names = ["W_in", "W_rec"] + ([] if self.digital_readout else ["W_out"])
        for k in names:
            full = f"{self.prefix}.{k}"
            if full in self.substrate:
                self.substrate.remove(full)
            self.arrays[k] = self.substrate.place(full, self._init[k].clone())

    @property
    def W_out(self) -> Any:
        return self._init["W_out"] if self.digital_readout else self.arrays["W_out"]

    def trial(self, clock: torch.Tensor, record_psi: bool = False) -> SNNRecord:
        """One trial driven by ``clock`` (T, 5): one MVM per array per time step; returns (1, T, .) records."""
        return run_snn(LEARNER, clock.to(self.dtype), self.arrays["W_in"], self.arrays["W_rec"], self.W_out,
                       batch=1, record_psi=record_psi, per_step_mvm=True)

    def update(self, dW_in: Any, dW_rec: Any) -> None:
        """Write the one e-prop update to the substrate (diagonal of dW_rec forced to 0)."""
        dW_in = torch.as_tensor(dW_in, dtype=self.dtype).detach()
        dW_rec = _no_diag(torch.as_tensor(dW_rec, dtype=self.dtype).detach())
        self.arrays["W_in"].update(dW_in)
        self.arrays["W_rec"].update(dW_rec)

    def read(self) -> dict[str, torch.Tensor]:
        """The effective weights now (from the substrate)."""
        out = {k: torch.as_tensor(a.read()) for k, a in self.arrays.items()}
        if self.digital_readout:
            out["W_out"] = self._init["W_out"]
        return out


def summarize(values: Any) -> tuple[float, float]:
    """(mean, standard error of the mean) of a 1-D sequence."""
    a = np.asarray(values, dtype=np.float64).ravel()
    sem = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), sem


def evaluate(
    params: Mapping[str, torch.Tensor],
    targets: traj.ArmTargets,
    *,
    batch_size: int = 100,
    eta: float = ETA,
    update_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    substrate_factory: Callable[[], Any] | None = None,
    digital_readout: bool = False,
    settle_s: float = 0.0,
    clip: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One-shot learning on every target (demonstration, update, test); per-task errors before/after.

    Args:
        params: weight dict (tensors; their dtype sets the simulation dtype).
        targets: :class:`pcmeta.tasks.trajectories.ArmTargets`.
        batch_size: tasks simulated together (float path).
        update_transform: optional map applied to dW_in and dW_rec before they are added (e.g. rounding to
            the 1/16 grid); float path only.
        substrate_factory: when given, each task runs on a fresh :class:`EpropLearner` on
            ``substrate_factory()`` (one task at a time): the initial weights are programmed at time 0,
            ``settle_s`` seconds of simulated time pass (drift), then the demonstration trial runs, the update
            is written (changed devices re-programmed) and the test trial follows immediately.
        digital_readout: keep the fixed readout W_out off the substrate (substrate path only).
        clip: clip the learner's initial weights to [-clip, clip] before placing them (substrate path only).
        progress: show a tqdm bar.

    Returns:
        dict of per-task numpy arrays mse_omega_before, mse_omega_after, mse_xyz_before, mse_xyz_after,
        loss_before, loss_after (float64).
    """
    from tqdm.auto import tqdm

    dtype = params["W_in_lsg"].dtype
    dev = params["W_in_lsg"].device
    n = len(targets)
    res: dict[str, list] = {k: [] for k in ("mse_omega_before", "mse_omega_after", "mse_xyz_before",
                                             "mse_xyz_after", "loss_before", "loss_after")}
    step = batch_size if substrate_factory is None else 1
    bar = tqdm(total=n, disable=not progress, desc="one-shot episodes", unit="task")
    with torch.no_grad():
        for s in range(0, n, step):
            tg = targets[s:s + step]
            clock, x_lsg = episode_inputs(tg, dtype=dtype, device=dev)
            if substrate_factory is not None:
                sub = substrate_factory()
                learner = EpropLearner(sub, params["W_in_trainee"], params["W_rec_trainee"],
                                       params["W_out_trainee"], digital_readout=digital_readout, dtype=dtype,
                                       clip=clip)
                if settle_s:
                    sub.elapse(settle_s)
                ep = one_shot_episode(params, clock, x_lsg, eta=eta, learner=learner, test=False)
                learner.update(ep["dW_in"][0], ep["dW_rec"][0])
                ep["omega_after"] = learner.trial(clock).y
            else:
                ep = one_shot_episode(params, clock, x_lsg, eta=eta, test=update_transform is None)
                if update_transform is not None:
                    W_in = params["W_in_trainee"] + update_transform(ep["dW_in"])
                    W_rec = params["W_rec_trainee"] + update_transform(ep["dW_rec"])
                    ep["omega_after"] = run_snn(LEARNER, clock, W_in, W_rec, params["W_out_trainee"]).y
            before = arm_losses(ep["omega_before"], tg)
            after = arm_losses(ep["omega_after"], tg)
            res["mse_omega_before"].append(before["mse_omega"])
            res["mse_xyz_before"].append(before["mse_xyz"])
            res["loss_before"].append(before["loss"])
            res["mse_omega_after"].append(after["mse_omega"])
            res["mse_xyz_after"].append(after["mse_xyz"])
            res["loss_after"].append(after["loss"])
            bar.update(len(tg))
    bar.close()
    return {k: torch.cat(v).double().cpu().numpy() for k, v in res.items()}


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


def round_to_grid(dW: torch.Tensor, step: float = 1.0 / 16) -> torch.Tensor:
    """dW rounded to multiples of ``step`` (round half to even, as the authors' PCM model)."""
    return torch.round(dW / step) * step


class EpropAgent:
    """The one-shot spiking learner as an agent for ``pcmeta/ArmTrajectory-v0`` (or any env with the same
    task dicts and 2-D joint-velocity actions).

    On a new task: episode 1 is the demonstration (the learning network runs on its clock and its output
    joint velocities drive the arm, while the LSG sees the task's target path and emits learning signals),
    then ONE e-prop update is written to the learning network's weights on ``substrate``, then episode 2 is
    the test trial with the updated weights. The network is open-loop (driven by the clock only), so each
    episode is the network's whole output sequence, executed step by step in the environment.

    Args:
        params: weight dict (:data:`PARAM_KEYS`), numpy or torch.
        substrate: a pcmeta.hardware Substrate for the learning network (default: exact SoftwareSubstrate).
        substrate_factory: alternatively, a callable giving a fresh substrate per task (a fresh chip).
        engine: "torch" (float32, one substrate MVM per step) or "brian2" (float64, weights read per trial).
        settle_s: simulated seconds between programming and the demonstration (PCM drift).
        digital_readout, clip: as in :func:`evaluate`.
        brian2_target: brian2 code-generation target.
    """

    def __init__(self, params: Mapping[str, Any], substrate: Any = None, *, substrate_factory: Callable[[], Any]
                 | None = None, engine: str = "torch", settle_s: float = 0.0, digital_readout: bool = False,
                 clip: float | None = None, brian2_target: str = "numpy"):
        if engine not in ("torch", "brian2"):
            raise ValueError(f"engine must be 'torch' or 'brian2', got {engine!r}")
        if substrate is not None and substrate_factory is not None:
            raise ValueError("give either substrate or substrate_factory, not both")
        self.engine = engine
        dtype = torch.float64 if engine == "brian2" else torch.float32
        self.params = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, dtype=dtype)
                       for k, v in params.items()}
        if substrate is None and substrate_factory is None:
            from pcmeta.hardware import SoftwareSubstrate

            substrate = SoftwareSubstrate()
        self.substrate = substrate
        self.substrate_factory = substrate_factory
        self.settle_s = float(settle_s)
        self.digital_readout = digital_readout
        self.clip = clip
        self._b2 = None
        if engine == "brian2":
            from pcmeta.agents.snn_brian2 import Brian2OneShot

            self._b2 = Brian2OneShot(self.params, target=brian2_target)

    def learn(self, task: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Demonstration -> update -> test for one task dict (keys omega (T, 2), q, xyz (T, 3), start).

        Returns the network outputs omega_demo, omega_test (T, 2) in rad/s and the update dW_in, dW_rec.
        """
        xyz = np.asarray(task["xyz"], dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"task['xyz'] must have shape (T, 3) in m, got {xyz.shape}")
        sub = self.substrate_factory() if self.substrate_factory is not None else self.substrate
        x_lsg = traj.lsg_input(xyz[None])
        clock = traj.clock_input(xyz.shape[0])
        if self.engine == "brian2":
            ep = self._b2.episode(x_lsg[0].astype(np.float64), clock.astype(np.float64), substrate=sub,
                                  digital_readout=self.digital_readout, settle_s=self.settle_s, clip=self.clip)
            return {"omega_demo": ep["omega_before"], "omega_test": ep["omega_after"], "dW_in": ep["dW_in"],
                    "dW_rec": ep["dW_rec"]}
        p = self.params
        dt = p["W_in_lsg"].dtype
        learner = EpropLearner(sub, p["W_in_trainee"], p["W_rec_trainee"], p["W_out_trainee"],
                               digital_readout=self.digital_readout, dtype=dt, clip=self.clip,
                               prefix=f"learner{id(self) % 10**6}")
        try:
            if self.settle_s:
                sub.elapse(self.settle_s)
            with torch.no_grad():
                ep = one_shot_episode(p, torch.as_tensor(clock, dtype=dt), torch.as_tensor(x_lsg, dtype=dt),
                                      learner=learner)
        finally:
            for k in list(learner.arrays):
                sub.remove(f"{learner.prefix}.{k}")
        return {"omega_demo": ep["omega_before"][0].double().numpy(), "omega_test": ep["omega_after"][0].double().numpy(),
                "dW_in": ep["dW_in"][0].double().numpy(), "dW_rec": ep["dW_rec"][0].double().numpy()}

    @staticmethod
    def execute(env: Any, task: Mapping[str, Any], omega: np.ndarray) -> np.ndarray:
        """Run one env episode on ``task`` applying ``omega`` (T, 2) rad/s; returns the executed path (T, 3) m
        (the effector position after each step from the environment's physics: observation entries 4:7)."""
        env.unwrapped.set_task(dict(task))
        env.reset()
        path = []
        for t in range(omega.shape[0]):
            obs, _, _, _, _ = env.step(np.asarray(omega[t], dtype=np.float32))
            path.append(np.asarray(obs[4:7], dtype=np.float64))
        return np.asarray(path)

    def one_shot(self, env: Any, task: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Learn a task in one shot and execute both episodes in ``env``.

        ``task`` defaults to a new one from ``env.unwrapped.sample_tasks(1)``. Returns omega_demo/test (T, 2),
        xyz_demo/test (T, 3, executed by the env), the task, and the MSEs against the target
        (mse_omega_demo/test in (rad/s)^2, mse_xyz_demo/test in m^2, the executed paths).
        """
        if task is None:
            task = env.unwrapped.sample_tasks(1)[0]
        out: dict[str, Any] = {"task": task, **self.learn(task)}
        for tag in ("demo", "test"):
            om = out[f"omega_{tag}"]
            out[f"xyz_{tag}"] = self.execute(env, task, om)
            out[f"mse_omega_{tag}"] = float(np.mean((om - np.asarray(task["omega"])) ** 2))
            out[f"mse_xyz_{tag}"] = float(np.mean((out[f"xyz_{tag}"] - np.asarray(task["xyz"])) ** 2))
        return out



# ---------------------------------------------------------------------------------------------------------
# deployment presets for pcmeta.hardware's PCMSubstrate
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmPCMPreset:
    """How the learning network is deployed on a :class:`pcmeta.hardware.PCMSubstrate`.

    Attributes:
        name: preset name (a key of :data:`ARM_PCM_PRESETS`).
        description: one line for help texts and reports.
        pcm: :class:`pcmeta.hardware.PCMConfig` fields (the seed is set per task).
        digital_readout: keep the fixed readout W_out off the chip (a digital 250 x 2 product).
        compensated_update: write the update in the drift-compensated frame (``PCMConfig.update_frame =
            "compensated"``: ``dW / alpha`` is written so that the effective weights move by dW; without it,
            one day after programming (alpha ~ 1.5) the one e-prop update is 1.5x too large: float, update
            x 1.5: loss 0.0235 instead of 0.0101); only has an effect with drift compensation.
        clip: the initial weights are clipped to [-clip, clip] before placement (None: unchanged).
    """

    name: str
    description: str
    pcm: Mapping[str, Any]
    digital_readout: bool = False
    compensated_update: bool = False
    clip: float | None = 1.0

    def config(self, **overrides: Any):
        """The preset's :class:`pcmeta.hardware.PCMConfig`, with ``overrides`` (None values are ignored)."""
        from pcmeta.hardware import PCMConfig

        kw = dict(self.pcm)
        kw["update_frame"] = "compensated" if self.compensated_update else "device"
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return PCMConfig(**kw)


#: The authors' arm PCM conventions on the physical model (SPEC section 2): w_max = 1 for every array (weights
#: clipped to [-1, 1], g_max = 25 uS), the update rounded to the nearest multiple of 1/16 (1.5625 uS, round half
#: to even), a changed device re-programmed to its drifted value + dW, no drift compensation, the readout on PCM,
#: read noise on every MVM, ideal converters and no output noise (their model has none).
_AUTHORS_PCM = dict(w_max=1.0, weight_bits=None, update_grid=1.0 / 16, update_rounding="nearest",
                    update_base="drifted", dac_bits=None, adc_bits=None, out_noise=0.0, read_noise="per_mvm",
                    drift_compensation="none")

#: Named deployments (``pcmeta arm eval/demo --pcm-preset``). "authors" is the reference; "tuned" keeps the
#: device physics, the 1/16 device step and the periphery of "authors" and changes only what the chip's
#: controller does with them:
#:
#: - the update is rounded to the 1/16 grid *stochastically* (unbiased: E[dW_q] = dW). Nearest rounding zeroes
#:   the ~95 % of entries below 1/32 and with them most of the update's effect (float + nearest: loss 0.027-0.031;
#:   float + stochastic: 0.0108, as float 0.0101, 200 targets);
#: - every array is mapped with its own scale (w_max = None: max|W| -> g_max after clipping to [-1, 1]; for the
#:   released weights W_in and W_rec keep w_max = 1, so the update grid is unchanged, and the tiny readout
#:   (max|W_out| = 0.033) uses the full conductance range instead of 3 % of it, where programming noise
#:   (0.26 uS ~ 0.01 in weight units) is as large as the weights themselves);
#: - global drift compensation (one digital output scale per array, calibrated right after programming);
#: - the update is written in the compensated frame (dW / alpha, ``PCMConfig(update_frame="compensated")``),
#:   so that the effective weights change by dW and not by alpha dW (alpha ~ 1.07 after 1 minute, ~ 1.5 after
#:   1 day).
ARM_PCM_PRESETS: dict[str, ArmPCMPreset] = {
    "authors": ArmPCMPreset(
        "authors", "the authors' arm PCM conventions: nearest rounding to 1/16, no drift compensation, "
                   "w_max = 1 for every array (readout on PCM)", _AUTHORS_PCM),
    "tuned": ArmPCMPreset(
        "tuned", "stochastic rounding to 1/16, per-array w_max (readout on its own scale), global drift "
                 "compensation, update written in the compensated frame",
        {**_AUTHORS_PCM, "update_rounding": "stochastic", "w_max": None, "drift_compensation": "global"},
        compensated_update=True),
}


def pcm_substrate_factory(preset: str | ArmPCMPreset = "authors", seed: int = 0,
                          **overrides: Any) -> Callable[[], Any]:
    """A factory of fresh PCM substrates (one chip per task) deployed as ``preset`` (:data:`ARM_PCM_PRESETS`).

    ``overrides`` are PCMConfig fields (None = the preset's value). The k-th substrate gets the seed
    ``seed * 100003 + k`` (k = 1, 2, ...). Use the preset's ``digital_readout`` and ``clip`` with it.
    """
    from pcmeta.hardware import PCMSubstrate

    p = ARM_PCM_PRESETS[preset] if isinstance(preset, str) else preset
    cfg = p.config(**overrides)
    counter = {"k": 0}

    def make() -> Any:
        counter["k"] += 1
        return PCMSubstrate(cfg.replace(seed=int(seed) * 100003 + counter["k"]))

    return make


# ---------------------------------------------------------------------------------------------------------
# the authors' arm PCM model (for the reference row of SPEC section 2)
# ---------------------------------------------------------------------------------------------------------
class AuthorsArmPCM:
    """The statistical PCM model of the authors' arm experiment, as a duck-typed substrate (``place``,
    ``matmul``, ``update``, ``read``, ``remove``, ``elapse``) so that :class:`EpropLearner` runs on it.

    It reproduces the SPEC section 2 row "PCM model as in the authors' code" (reference loss 0.109) and is
    NOT the physical model of :mod:`pcmeta.hardware` (use ``PCMSubstrate`` for that). Its conventions
    (g_max = 25 uS, w_max = 1, drift evaluated at t / t0 = 32, no drift compensation):

    - placing W: every weight is clipped to [-1, 1], gets uniform noise U(-0.01, 0.01) and drift
      ``clip(W 32^-nu) - W`` with nu = |N(mu(|W|), sigma(|W|))| (the drift term is computed from the
      UNCLIPPED W, as the authors did: a weight far above 1 lands near 1 + clip(W 32^-nu) - W); no
      programming noise; the result is clipped to [-1, 1].
    - every MVM reads the clipped weights with fresh 1/f read noise (Q_s from the conductance in uS,
      t / t0 = 32, two devices per weight).
    - ``update(dW)``: dW rounded to multiples of 1/16 (half to even); the changed weights are re-programmed
      to (current value + dW) with programming noise and a fresh drift 32^-nu; unchanged weights stay.
    - ``elapse`` is accepted and ignored (the model has one fixed time point).

    Args:
        seed: seed of all random draws.
        t_ratio: the drift time ratio t / t0 (32 in the authors' code).
    """

    G_MAX = 25.0

    def __init__(self, seed: int = 0, t_ratio: float = 32.0):
        self.generator = torch.Generator().manual_seed(int(seed))
        self.t_ratio = float(t_ratio)
        self.arrays: dict[str, "_AuthorsArmArray"] = {}
        self.time_s = 0.0

    def place(self, name: str, W: Any) -> "_AuthorsArmArray":
        if name in self.arrays:
            raise ValueError(f"an array named {name!r} is already placed")
        arr = _AuthorsArmArray(self, name, W)
        self.arrays[name] = arr
        return arr

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def remove(self, name: str) -> None:
        del self.arrays[name]

    def elapse(self, seconds: float) -> None:
        self.time_s += float(seconds)

    def report(self) -> dict:
        return {"substrate": "authors-arm-pcm", "t_ratio": self.t_ratio,
                "arrays": {k: {"shape": a.shape, "updates": a.updates} for k, a in self.arrays.items()}}

    # -- the model's pieces (w in weight units = conductance / g_max)
    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float64)

    def _drift(self, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        lg = torch.log(w.abs())  # -inf for 0: mu and sigma then sit at their upper clip bounds
        mu = torch.clamp(-0.0155 * lg + 0.0244, 0.049, 0.1)
        sig = torch.clamp(-0.0125 * lg - 0.0059, 0.008, 0.045)
        nu = (mu + sig * self._randn(w.shape)).abs()
        if mask is not None:
            nu = nu * mask
        return torch.clamp(w * self.t_ratio ** (-nu), -1.0, 1.0) - w

    def _split_noise(self, w: torch.Tensor, noise_uS: torch.Tensor) -> torch.Tensor:
        return _split_device_noise(w, noise_uS, self.G_MAX)

    def _prog_noise(self, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _authors_prog_noise(w, mask, self._randn(w.shape))

    def _read(self, w: torch.Tensor) -> torch.Tensor:
        wc = w.clamp(-1.0, 1.0)
        g = (wc * self.G_MAX).abs()
        q_s = torch.clamp(0.0088 / g ** 0.65, max=0.2)  # g in uS (as the authors); g = 0 gives inf -> 0.2
        t_read = 250e-9
        sigma = g * q_s * math.sqrt(math.log((self.t_ratio + t_read) / t_read)) * math.sqrt(0.5)
        return self._split_noise(wc, sigma * self._randn(w.shape)).clamp(-1.0, 1.0)


class _AuthorsArmArray:
    def __init__(self, sub: AuthorsArmPCM, name: str, W: Any):
        self.substrate, self.name = sub, name
        self._numpy = not torch.is_tensor(W)
        W = torch.as_tensor(np.asarray(W) if self._numpy else W.detach(), dtype=torch.float64)
        if W.dim() != 2:
            raise ValueError(f"{name}: W must be 2-D (in, out), got shape {tuple(W.shape)}")
        self.shape = tuple(W.shape)
        uni = (torch.rand(W.shape, generator=sub.generator, dtype=torch.float64) * 2 - 1) * 0.01
        self.w = torch.clamp(W.clamp(-1.0, 1.0) + uni + sub._drift(W, None), -1.0, 1.0)
        self.updates = 0

    def matmul(self, x: Any) -> Any:
        """x @ (weights read with fresh noise). One noise sample per call, shared by a batch (as the authors'
        model); only rows with a non-zero input are read (the others cannot affect the result)."""
        xt = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
        x2 = xt.reshape(-1, self.shape[0]).to(torch.float64)
        rows = torch.nonzero((x2 != 0).any(dim=0)).ravel()
        y = x2[:, rows] @ self.substrate._read(self.w[rows])
        y = y.reshape(*xt.shape[:-1], self.shape[1])
        return y.numpy() if not torch.is_tensor(x) else y.to(xt.dtype)

    def update(self, dW: Any) -> None:
        d = torch.as_tensor(np.asarray(dW) if not torch.is_tensor(dW) else dW.detach(), dtype=torch.float64)
        if tuple(d.shape) != self.shape:
            raise ValueError(f"{self.name}: dW must have shape {self.shape}, got {tuple(d.shape)}")
        dq = torch.round(d * 16.0) / 16.0
        mask = (dq != 0).to(torch.float64)
        w1 = self.w + dq
        sub = self.substrate
        self.w = torch.clamp(w1.clamp(-1.0, 1.0) + sub._prog_noise(w1, mask) + sub._drift(w1, mask), -1.0, 1.0)
        self.updates += 1

    def read(self) -> Any:
        return self.w.numpy().copy() if self._numpy else self.w.clone()


# ---------------------------------------------------------------------------------------------------------
# the authors' training-time model of the learning network's PCM weights (differentiable, batched)
# ---------------------------------------------------------------------------------------------------------
#: Noise models of the learning network during meta-training (:func:`meta_train` ``trainee_noise``).
TRAINEE_NOISE = ("none", "authors")


def _ste_clip(w: torch.Tensor) -> torch.Tensor:
    """Clip to [-1, 1] with the gradient of the identity (straight-through), as the authors' training code."""
    return w + (w.clamp(-1.0, 1.0) - w).detach()


def _authors_drift_factor(w: torch.Tensor, mask: torch.Tensor | None = None,
                          t_ratio: float = 32.0) -> torch.Tensor:
    """(t / t0)^-nu per weight, nu = |N(mu(|w|), sigma(|w|))| as :class:`AuthorsArmPCM`; 1 where ``mask`` is 0.
    No gradient (the authors stop it at nu; the factor multiplies the weight, which keeps its gradient)."""
    with torch.no_grad():
        lg = torch.log(w.detach().abs())
        mu = torch.clamp(-0.0155 * lg + 0.0244, 0.049, 0.1)
        sig = torch.clamp(-0.0125 * lg - 0.0059, 0.008, 0.045)
        nu = (mu + sig * torch.randn_like(mu)).abs()
        if mask is not None:
            nu = nu * mask
        return t_ratio ** (-nu)


def _split_device_noise(w: torch.Tensor, noise_uS: torch.Tensor, g_max: float) -> torch.Tensor:
    """Add noise (uS) to the device carrying each weight (G+ or G-), clip it to [0, g_max], back to weights."""
    g = w * g_max
    pos, neg = g.clamp(min=0.0), g.clamp(max=0.0)
    pos = torch.clamp(pos + noise_uS * (pos != 0), 0.0, g_max)
    neg = torch.clamp(neg + noise_uS * (neg != 0), -g_max, 0.0)
    return (pos + neg) / g_max


def _authors_prog_noise(w: torch.Tensor, mask: torch.Tensor, normal: torch.Tensor | None = None) -> torch.Tensor:
    """Programming noise of the re-programmed weights (``mask``), in weight units, no gradient: the device
    carrying each weight (G+ or G-) gets N(0, sigma_p(g)) uS and is clipped to [0, g_max]. ``normal``: the
    standard normal draws (default: from torch's global RNG)."""
    with torch.no_grad():
        w = w.detach()
        sigma = torch.clamp(-1.1731 * w.abs() ** 2 + 1.9650 * w.abs() + 0.2635, min=0.0)
        n = torch.randn_like(w) if normal is None else normal
        return _split_device_noise(w, mask * sigma * n, AuthorsArmPCM.G_MAX) - w


def authors_read_var(w: torch.Tensor, t_ratio: float = 32.0) -> torch.Tensor:
    """Per-weight variance (weight units^2) of the authors' 1/f read noise on one read of the weights w:
    sigma = g Q_s sqrt(ln((t/t0 + t_r) / t_r)) / sqrt(2) (two devices per weight), g = |clip(w)| g_max in uS,
    Q_s = min(0.0088 / g^0.65, 0.2). No gradient. (The authors clip each noisy device at G >= 0; sampling the
    noise in output space, as :func:`run_snn` does, omits that clip.)"""
    with torch.no_grad():
        g = w.detach().clamp(-1.0, 1.0).abs() * AuthorsArmPCM.G_MAX
        q_s = torch.clamp(0.0088 / g ** 0.65, max=0.2)
        t_read = 250e-9
        sigma = g * q_s * math.sqrt(math.log((t_ratio + t_read) / t_read) * 0.5) / AuthorsArmPCM.G_MAX
        return sigma * sigma


def authors_training_weights(W: torch.Tensor, batch: int) -> torch.Tensor:
    """The learning network's weights W (in, out) as the authors' training code programs them, once per task:
    ``clip(clip(W) + U(-0.01, 0.01) + clip(W 32^-nu) - W)`` (drift at t / t0 = 32, nu drawn per weight and
    task), every clip straight-through. Returns (batch, in, out), differentiable w.r.t. W (d/dW = 32^-nu)."""
    Wb = W.expand(batch, *W.shape)
    u = (torch.rand_like(Wb) * 2 - 1) * 0.01
    return _ste_clip(_ste_clip(Wb) + u + (_ste_clip(Wb * _authors_drift_factor(Wb)) - Wb))


def authors_training_reprogram(w: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
    """One update as the authors' training code writes it: dW rounded to the nearest 1/16 (half to even,
    straight-through gradient); the changed weights re-programmed to w + dW_q with programming noise (no
    gradient) and a fresh drift 32^-nu; unchanged weights kept. w, dW: (batch, in, out)."""
    dq = dW + (torch.round(dW * 16.0) / 16.0 - dW).detach()
    mask = (dq.detach() != 0).to(w.dtype)
    w1 = w + dq
    drift = _ste_clip(w1 * _authors_drift_factor(w1, mask)) - w1
    return _ste_clip(_ste_clip(w1) + _authors_prog_noise(w1, mask) + drift)


# ---------------------------------------------------------------------------------------------------------
# meta-training (BPTT through the one e-prop update)
# ---------------------------------------------------------------------------------------------------------
def init_params(seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random initial weights with the authors' scales: inputs and recurrent N(0, 1/n_pre), the LSG readout
    Glorot-uniform, the learning network's readout N(0, 1/n) * (1 - kappa)."""
    g = torch.Generator().manual_seed(int(seed))
    n = lambda a, b: torch.randn(a, b, generator=g, dtype=torch.float64) / math.sqrt(a)  # noqa: E731
    lim = math.sqrt(6.0 / (LSG.n_rec + LSG.n_out))
    p = {
        "W_in_lsg": n(LSG.n_in, LSG.n_rec), "W_rec_lsg": n(LSG.n_rec, LSG.n_rec),
        "W_out_lsg": (torch.rand(LSG.n_rec, LSG.n_out, generator=g, dtype=torch.float64) * 2 - 1) * lim,
        "W_in_trainee": n(LEARNER.n_in, LEARNER.n_rec), "W_rec_trainee": n(LEARNER.n_rec, LEARNER.n_rec),
        "W_out_trainee": n(LEARNER.n_rec, LEARNER.n_out) * (1.0 - LEARNER.kappa),
    }
    return {k: v.to(dtype) for k, v in p.items()}


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def run_summary(run_dir: str | Path, window: int = 25, n_targets: int = 10) -> dict[str, Any]:
    """What a :func:`meta_train` run folder holds: its options, iterations done, the mean loss over windows of
    ``window`` iterations (iterations [k window, (k + 1) window)), the largest logged gradient norm and the
    firing health (:func:`firing_stats`) of its current weights on ``n_targets`` fixed targets (seed 0)."""
    p = Path(run_dir) / "checkpoint.pt"
    if not p.is_file():
        raise FileNotFoundError(f"no meta-training checkpoint at {p}")
    ck = torch.load(p, map_location="cpu", weights_only=True)
    if "history" not in ck or "params" not in ck:
        raise ValueError(f"{p} is not a pcmeta arm checkpoint")
    h = ck["history"]
    loss = np.array([x["loss"] for x in h], dtype=float)
    gn = [x["grad_norm"] for x in h if "grad_norm" in x and math.isfinite(x["grad_norm"])]
    windows = {f"{k}-{k + window}": float(loss[k:k + window].mean()) for k in range(0, len(loss) - window + 1, window)}
    tg = traj.sample_targets(n_targets, rng=np.random.default_rng(0))
    params = {k: ck["params"][k].float() for k in PARAM_KEYS}
    # runs from before an option ran with what is now its non-default value or its old default
    config = {"detach_reset": True, "readout_lr_factor": 1.0, "clip_grad_norm": None, "voltage_reg": 0.0,
              "trainee_noise": "none", "threshold_gradient": True, **dict(ck.get("config", {}))}
    return {"run": str(run_dir), "config": config, "iterations": int(ck["iteration"]), "best": ck.get("best", {}),
            "loss_windows": windows, "loss_last": float(loss[-window:].mean()) if len(loss) else float("nan"),
            "max_grad_norm": max(gn) if gn else None, "firing": firing_stats(params, tg)}


def save_weights_npz(params: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a weight dict in the released .npz layout (float32, (pre, post)), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: params[k].detach().cpu().float().numpy() for k in PARAM_KEYS})
    tmp.replace(path)


def load_checkpoint_params(path: str | Path, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The parameters of a :func:`meta_train` checkpoint (``checkpoint.pt``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    ck = torch.load(p, map_location="cpu", weights_only=True)
    if "params" not in ck:
        raise ValueError(f"{p} is not a pcmeta arm checkpoint (no 'params')")
    return {k: ck["params"][k].to(dtype) for k in PARAM_KEYS}


#: Default lr factor of the learning network's readout in :func:`meta_train`: 1, one lr for every matrix as
#: in the authors' code (1 - kappa, Adam on the readout in the filter's units, stalled learning in a CPU run:
#: loss 0.31 after 150 iterations against 0.10 with 1; see the README).
READOUT_LR_FACTOR = 1.0


def meta_train(
    out_dir: str | Path,
    iterations: int,
    *,
    batch: int = 90,
    lr: float = 1.5e-3,
    lr_decay: float = 0.99,
    decay_every: int = 500,
    seed: int = 0,
    init: str = "random",
    init_weights: str | Path | None = None,
    clean_code: bool = False,
    device: str = "cpu",
    checkpoint_every: int = 25,
    resume: bool = False,
    progress: bool = True,
    time_limit_s: float | None = None,
    cuda_graph: bool | None = None,
    clip_grad_norm: float | None = None,
    readout_lr_factor: float | None = None,
    detach_reset: bool = False,
    trainee_noise: str = "none",
    voltage_reg: float = 0.0,
    threshold_gradient: bool = False,
    best_window: int = 25,
) -> dict[str, Any]:
    """Meta-train the LSG and the learning network's initial weights (SPEC section 2, outer loop).

    Each iteration draws ``batch`` new targets (from a generator seeded by (seed, iteration), so a resumed
    run sees the same data), runs demonstration -> update -> test, and takes one Adam step on
    :func:`meta_loss` (lr decayed by ``lr_decay`` every ``decay_every`` iterations). Every
    ``checkpoint_every`` iterations ``out_dir/checkpoint.pt`` (parameters, optimizer, history) and
    ``out_dir/weights.npz`` (released layout) are written atomically; ``resume`` continues from the
    checkpoint. ``init``: "random" (:func:`init_params`) or "weights" (``init_weights`` .npz).

    ``time_limit_s``: stop (after a checkpoint) once this much wall time has passed; a later ``resume``
    goes on. ``cuda_graph`` (default: on for a CUDA device): capture forward + BPTT backward of one
    iteration once as a CUDA graph and replay it (the 3 x 249 time steps launch ~10^4 small kernels per
    iteration; replay removes the launch overhead); the next batch is drawn on the CPU while the GPU runs.
    Same arithmetic as the eager loop; Adam and the lr schedule run eagerly. ``clip_grad_norm``: scale the
    gradient (all parameters together) down to this L2 norm before the Adam step (None: no clipping); the
    norm before clipping is logged as ``grad_norm`` in the history either way.

    ``readout_lr_factor``: the learning rate of the learning network's readout ``W_out_trainee`` is
    ``lr * readout_lr_factor`` (default :data:`READOUT_LR_FACTOR` = 1: one lr for all, as the authors). Its
    weights are ~0.003-0.01, 20-50x smaller than the other matrices', so a full-lr Adam step moves them by up
    to half their size; 1 - kappa (Adam in the units where the leaky filter carries the (1 - kappa)) or 0.25
    slow that down. A resumed run keeps the factor it was started with.

    ``detach_reset``: stop the BPTT gradient through the reset term ``A_t z_{t-1}`` (the e-prop convention);
    default False: it flows, as in the authors' TensorFlow training code (in a CPU run it learned about twice
    as fast over the first 100 iterations). Forward values are the same either way. A resumed run keeps its
    setting (runs from before the option: True).

    ``trainee_noise``: "none" (float learning network) or "authors": the learning network's weights as the
    authors' training code models PCM (see :func:`one_shot_episode`); the noise comes from torch's global
    RNG, re-seeded from (seed, iteration) before every eager iteration so that a resumed run draws the same
    noise (CUDA-graph replays draw fresh noise from the device generator instead). A resumed run keeps it.

    ``voltage_reg``: factor of :func:`voltage_regularization` in the loss (0: off, SPEC's recipe); it keeps
    neurons from going silent or saturated for good, which the rate regularisation cannot undo. A resumed run
    keeps it.

    ``threshold_gradient``: let the spike function's gradient reach the LSG's adaptive thresholds (see
    :func:`run_snn`); default False, as the authors' code (the path through the 600-ms adaptation variable
    made the gradient 4.6-9x larger at the checkpoints of three CPU runs that collapsed). A
    resumed run keeps its setting (runs from before the option: True).

    ``best_window``: every ``best_window`` iterations the mean task loss of the last ``best_window``
    iterations (each on fresh targets, so an unbiased estimate) is compared with the best so far; when it is
    lower, the current weights are written to ``out_dir/best.npz`` (the checkpoint records its iteration
    and loss as ``best``). Runs that later degrade keep their best weights.

    Returns a dict with the final iteration, the history (per-iteration loss figures), the wall time (s)
    and the paths.
    """
    import time

    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    out = Path(out_dir)
    ck_path, w_path, best_path = out / "checkpoint.pt", out / "weights.npz", out / "best.npz"
    if not (isinstance(best_window, int) and best_window >= 1):
        raise ValueError(f"best_window must be a positive integer, got {best_window!r}")
    dev = torch.device(device)
    if cuda_graph is None:
        cuda_graph = dev.type == "cuda"
    if cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph needs a CUDA device, got {device!r}")
    if resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        params = {k: ck["params"][k].to(dev).requires_grad_(True) for k in PARAM_KEYS}
        start, history = int(ck["iteration"]), list(ck["history"])
    else:
        if resume:
            raise FileNotFoundError(f"--resume: no checkpoint at {ck_path}")
        if init == "random":
            p0 = init_params(seed)
        elif init == "weights":
            p0 = load_weights(init_weights)
        else:
            raise ValueError(f"init must be 'random' or 'weights', got {init!r}")
        params = {k: p0[k].to(dev).requires_grad_(True) for k in PARAM_KEYS}
        start, history, ck = 0, [], None
    best = dict(ck.get("best", {})) if ck is not None else {}
    if ck is not None:  # a resumed run keeps its options (runs from before an option: its old behaviour)
        ck_cfg = ck.get("config", {})
        own = float(ck_cfg.get("readout_lr_factor", 1.0))
        if readout_lr_factor is not None and float(readout_lr_factor) != own:
            raise ValueError(f"{ck_path} was started with readout_lr_factor {own:g}; resume it without the option "
                             f"or with the same value (got {readout_lr_factor!r})")
        readout_lr_factor = own
        detach_reset = bool(ck_cfg.get("detach_reset", True))
        trainee_noise = str(ck_cfg.get("trainee_noise", "none"))
        voltage_reg = float(ck_cfg.get("voltage_reg", 0.0))
        threshold_gradient = bool(ck_cfg.get("threshold_gradient", True))
    elif readout_lr_factor is None:
        readout_lr_factor = READOUT_LR_FACTOR
    if trainee_noise not in TRAINEE_NOISE:
        raise ValueError(f"trainee_noise must be one of {TRAINEE_NOISE}, got {trainee_noise!r}")
    if not (voltage_reg >= 0 and math.isfinite(voltage_reg)):
        raise ValueError(f"voltage_reg must be a finite number >= 0, got {voltage_reg!r}")
    if not (readout_lr_factor > 0 and math.isfinite(readout_lr_factor)):
        raise ValueError(f"readout_lr_factor must be a positive number, got {readout_lr_factor!r}")
    if ck is not None and len(ck["optimizer"]["param_groups"]) == 1:
        opt = torch.optim.Adam([params[k] for k in PARAM_KEYS], lr=lr)  # a run from before per-matrix groups
    else:
        opt = torch.optim.Adam([{"params": [params[k]], "lr": lr * (readout_lr_factor if k == "W_out_trainee"
                                                                   else 1.0)} for k in PARAM_KEYS], lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_every, gamma=lr_decay)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
    dtype = params["W_in_lsg"].dtype
    clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=dtype, device=dev)

    def draw(it: int) -> tuple[str, dict[str, torch.Tensor]]:
        tg = traj.sample_targets(batch, rng=np.random.default_rng([seed, it]))
        return tg.robot, target_tensors(tg, dtype=dtype, clean_code=clean_code)  # on the CPU

    pending: list[torch.Tensor] = []  # per-iteration figures still on the device

    def flush() -> None:
        for row in pending:
            vals = row.tolist()
            history.append({**dict(zip(META_FIGURES + ("grad_norm",), vals[1:])), "iteration": int(vals[0])})
        pending.clear()

    def save(it: int) -> None:
        flush()
        _atomic_save({"params": {k: v.detach().cpu() for k, v in params.items()}, "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "iteration": it, "history": history,
                      "config": {"batch": batch, "lr": lr, "lr_decay": lr_decay, "decay_every": decay_every,
                                 "seed": seed, "init": init, "clean_code": clean_code,
                                 "clip_grad_norm": clip_grad_norm, "readout_lr_factor": readout_lr_factor,
                                 "detach_reset": detach_reset, "trainee_noise": trainee_noise,
                                 "voltage_reg": voltage_reg, "threshold_gradient": threshold_gradient},
                      "best": best},
                     ck_path)
        save_weights_npz(params, w_path)

    def track_best(it: int) -> None:
        flush()
        recent = history[-best_window:]  # history holds consecutive iterations; check the window is complete
        if len(recent) < best_window or recent[0]["iteration"] != it - best_window:
            return
        window = float(np.mean([h["loss"] for h in recent]))
        if math.isfinite(window) and window < best.get("window_loss", math.inf):
            save_weights_npz(params, best_path)
            best.update(iteration=it, window_loss=window, window=best_window)

    nxt = draw(start) if start < iterations else None
    graph = static = static_figs = None
    if cuda_graph and nxt is not None:
        robot, b0 = nxt
        static = {k: v.to(dev) for k, v in b0.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (autograd and cuBLAS workspaces) before capture
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                meta_loss_tensors(params, clock, static, robot=robot, detach_reset=detach_reset,
                                  trainee_noise=trainee_noise, voltage_reg=voltage_reg,
                                  threshold_gradient=threshold_gradient)[0].backward()
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss, static_figs = meta_loss_tensors(params, clock, static, robot=robot,
                                                         detach_reset=detach_reset, trainee_noise=trainee_noise,
                                                         voltage_reg=voltage_reg,
                                                         threshold_gradient=threshold_gradient)
            static_loss.backward()

    bar = tqdm(range(start, iterations), initial=start, total=iterations, disable=not progress,
               desc="meta-training", unit="it")
    it_done = start
    for it in bar:
        if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
            break
        robot, b = nxt
        if graph is not None:
            for k, v in b.items():
                static[k].copy_(v)  # stream-ordered after the previous replay
            graph.replay()
            figs = static_figs
        else:
            if trainee_noise != "none":
                torch.manual_seed(int(np.random.SeedSequence([seed, it, 1]).generate_state(1)[0]))
            loss, figs = meta_loss_tensors(params, clock, {k: v.to(dev) for k, v in b.items()}, robot=robot,
                                           detach_reset=detach_reset, trainee_noise=trainee_noise,
                                           voltage_reg=voltage_reg, threshold_gradient=threshold_gradient)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_([params[k] for k in PARAM_KEYS],
                                               math.inf if clip_grad_norm is None else clip_grad_norm)
        opt.step()
        sched.step()
        pending.append(torch.stack([torch.tensor(float(it), dtype=dtype, device=dev)]
                                   + [figs[k].detach().to(dtype) for k in META_FIGURES]
                                   + [gnorm.detach().to(dtype)]).clone())
        it_done = it + 1
        if it_done < iterations:
            nxt = draw(it_done)  # on the CPU while the GPU works (graph path)
        if it_done % best_window == 0:
            track_best(it_done)
        if (it_done % checkpoint_every == 0) or it_done == iterations:
            save(it_done)
        if progress and (graph is None or it_done % 10 == 0):
            flush()
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", reg=f"{history[-1]['reg']:.4f}")
    bar.close()
    if it_done % checkpoint_every and it_done != iterations and it_done > start:
        save(it_done)  # stopped by the time limit between checkpoints
    flush()
    if start >= iterations and not ck_path.is_file():
        save(start)
    return {"iteration": max(start, it_done), "history": history, "checkpoint": str(ck_path),
            "weights": str(w_path), "wall_s": time.perf_counter() - t_start, "cuda_graph": graph is not None,
            "best": dict(best), "best_weights": str(best_path) if best else None}
