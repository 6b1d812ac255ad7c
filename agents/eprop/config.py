"""Constants of the spiking learner: the neuron model's parameters, the two networks, the weight layout.

SPEC.md section 2 defines every number here. Times are in ms (= steps, dt = 1 ms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pcmeta.tasks import trajectories as traj

__all__ = ["ETA", "SNNConfig", "LEARNER", "LSG", "PARAM_KEYS", "TRAINEE_NOISE", "OLD_RUN_VALUES"]

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

#: Noise models of the learning network during meta-training (:func:`~pcmeta.agents.eprop.meta_train`
#: ``trainee_noise``): "none" (float weights) or "authors" (the authors' training-time PCM model,
#: :mod:`pcmeta.hardware.authors_arm`).
TRAINEE_NOISE = ("none", "authors")

#: A meta-training setting's value in runs from before the setting existed (their behaviour then): what a
#: checkpoint's ``config`` lacks is read as this (resume, ``pcmeta arm runs``, the examples).
OLD_RUN_VALUES = {"detach_reset": True, "readout_lr_factor": 1.0, "clip_grad_norm": None, "clip_grad_relative": None,
                  "skip_grad_relative": None, "voltage_reg": 0.0, "trainee_noise": "none", "threshold_gradient": True}
