"""The learning network placed on a :mod:`pcmeta.hardware` substrate.

:class:`LearnerPlacement` is the one place where the learning network's weights meet a substrate, for both
engines (torch: :class:`EpropLearner`; brian2: :class:`~pcmeta.agents.eprop.brian2_engine.Brian2OneShot`):
W_in (5, 250), W_rec (250, 250, diagonal 0: no self-connections) and, unless ``digital_readout``, the fixed
readout W_out (250, 2) become SynapticArrays named ``{prefix}.W_in`` etc., optionally clipped first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pcmeta.hardware import Substrate, SynapticArray

from .config import LEARNER
from .network import SNNRecord, no_diag, run_snn

__all__ = ["LearnerPlacement", "EpropLearner"]


def _tensor(W: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(W) if not torch.is_tensor(W) else W.detach(), dtype=dtype)


class LearnerPlacement:
    """The learning network's initial weights and how they are placed on a substrate.

    Args:
        W_in, W_rec, W_out: initial weights (tensors or arrays, (pre, post)); W_rec's diagonal is set to 0.
        dtype: torch dtype of the placed weights.
        clip: if given, the weights are clipped to [-clip, clip] before placement (the authors' PCM model
            clips to [-1, 1]); None places them unchanged.
        digital_readout: keep W_out as a plain tensor instead of placing it on the substrate.
        prefix: name prefix of the arrays on the substrate.
    """

    def __init__(self, W_in: Any, W_rec: Any, W_out: Any, *, dtype: torch.dtype = torch.float32,
                 clip: float | None = None, digital_readout: bool = False, prefix: str = "learner"):
        self.dtype, self.clip, self.digital_readout, self.prefix = dtype, clip, digital_readout, prefix
        init = {"W_in": _tensor(W_in, dtype), "W_rec": no_diag(_tensor(W_rec, dtype)), "W_out": _tensor(W_out, dtype)}
        if clip is not None:
            init = {k: v.clamp(-clip, clip) for k, v in init.items()}
        if init["W_in"].shape != (LEARNER.n_in, LEARNER.n_rec):
            raise ValueError(f"W_in must be ({LEARNER.n_in}, {LEARNER.n_rec}), got {tuple(init['W_in'].shape)}")
        if init["W_out"].shape != (LEARNER.n_rec, LEARNER.n_out):
            raise ValueError(f"W_out must be ({LEARNER.n_rec}, {LEARNER.n_out})")
        self.initial: dict[str, torch.Tensor] = init

    @property
    def names(self) -> tuple[str, ...]:
        """The arrays that live on the substrate: W_in, W_rec and (unless digital_readout) W_out."""
        return ("W_in", "W_rec") if self.digital_readout else ("W_in", "W_rec", "W_out")

    def place(self, substrate: Substrate) -> dict[str, SynapticArray]:
        """Program the initial weights onto ``substrate`` (replacing arrays of the same names)."""
        arrays = {}
        for k in self.names:
            full = f"{self.prefix}.{k}"
            if full in substrate:
                substrate.remove(full)
            arrays[k] = substrate.place(full, self.initial[k].clone())
        return arrays

    def remove(self, substrate: Substrate) -> None:
        """Take the placed arrays off ``substrate`` (those that are there)."""
        for k in self.names:
            full = f"{self.prefix}.{k}"
            if full in substrate:
                substrate.remove(full)

    def readout(self, arrays: dict[str, SynapticArray]) -> Any:
        """W_out as the network uses it: its array, or the digital tensor."""
        return self.initial["W_out"] if self.digital_readout else arrays["W_out"]


class EpropLearner:
    """The learning network deployed on a :mod:`pcmeta.hardware` substrate (torch engine).

    Each time step is one ``matmul`` per array; :meth:`update` writes the one e-prop update with
    ``update(dW)`` (on PCM: quantized, only changed devices re-programmed). ``reset()`` re-places the initial
    weights (a fresh task).

    Args:
        substrate: a pcmeta.hardware Substrate (SoftwareSubstrate, PCMSubstrate, a Deployment's substrate).
        W_in, W_rec, W_out, digital_readout, prefix, dtype, clip: see :class:`LearnerPlacement`.
    """

    def __init__(self, substrate: Substrate, W_in: Any, W_rec: Any, W_out: Any, *, digital_readout: bool = False,
                 prefix: str = "learner", dtype=torch.float32, clip: float | None = None):
        self._attach(substrate, LearnerPlacement(W_in, W_rec, W_out, dtype=dtype, clip=clip,
                                                 digital_readout=digital_readout, prefix=prefix))

    @classmethod
    def from_placement(cls, substrate: Substrate, placement: LearnerPlacement) -> "EpropLearner":
        """A learner that places ``placement``'s weights on ``substrate``."""
        learner = cls.__new__(cls)
        learner._attach(substrate, placement)
        return learner

    def _attach(self, substrate: Substrate, placement: LearnerPlacement) -> None:
        self.substrate, self.placement = substrate, placement
        self.dtype, self.prefix, self.digital_readout = placement.dtype, placement.prefix, placement.digital_readout
        self.arrays: dict[str, SynapticArray] = {}
        self.reset()

    def reset(self) -> None:
        """(Re)place the initial weights on the substrate (programs the devices anew)."""
        self.arrays = self.placement.place(self.substrate)

    def remove(self) -> None:
        """Take the learner's arrays off its substrate."""
        self.placement.remove(self.substrate)
        self.arrays = {}

    @property
    def W_out(self) -> Any:
        return self.placement.readout(self.arrays)

    def trial(self, clock: torch.Tensor, record_psi: bool = False) -> SNNRecord:
        """One trial driven by ``clock`` (T, 5): one MVM per array per time step; returns (1, T, .) records."""
        return run_snn(LEARNER, clock.to(self.dtype), self.arrays["W_in"], self.arrays["W_rec"], self.W_out,
                       batch=1, record_psi=record_psi, per_step_mvm=True)

    def update(self, dW_in: Any, dW_rec: Any) -> None:
        """Write the one e-prop update to the substrate (diagonal of dW_rec forced to 0)."""
        dW_in = torch.as_tensor(dW_in, dtype=self.dtype).detach()
        dW_rec = no_diag(torch.as_tensor(dW_rec, dtype=self.dtype).detach())
        self.arrays["W_in"].update(dW_in)
        self.arrays["W_rec"].update(dW_rec)

    def read(self) -> dict[str, torch.Tensor]:
        """The effective weights now (from the substrate)."""
        out = {k: torch.as_tensor(a.read()) for k, a in self.arrays.items()}
        if self.digital_readout:
            out["W_out"] = self.placement.initial["W_out"]
        return out
