"""Digital drift compensation: one output scale per array ("global") or per output column ("per_column").

Right after programming the controller runs ``n_calibration`` fixed random +-1 input vectors through the array
and keeps the outputs as the reference; later it runs them again and scales the outputs by
``alpha = sum|reference| / sum|now|`` (over everything for "global", per column for "per_column"), applied
digitally after the ADC (as aihwkit's ``GlobalDriftCompensation``). When the controller re-programs devices it
moves the reference by the conductance change it measures on them (:func:`moved_reference`): right after
programming minus right before (the drifted value the new target was built on, or, when targets are re-programmed
from the last target, the value right after the previous programming). The reference is thus the placement
calibration plus the change of the programmed conductances (and the drift losses new targets inherit): programming
noise cannot add up in it over repeated updates (it did when the reference moved by "new target - noisy drifted
value", whose noise never cancels once the target is clipped at +-1: alpha ran away without any drift).
"""
from __future__ import annotations

import torch

CALIBRATION_SEED = 12345


def calibration_inputs(n: int, in_features: int) -> torch.Tensor:
    """The fixed calibration inputs: (n, in_features) float64 +-1 values, the same for every array."""
    g = torch.Generator().manual_seed(CALIBRATION_SEED)
    return torch.randint(0, 2, (n, in_features), generator=g, dtype=torch.int64).to(torch.float64) * 2 - 1


def compensation_scale(reference: torch.Tensor, current: torch.Tensor, mode: str) -> torch.Tensor:
    """``alpha`` restoring the absolute sum of ``current`` to that of ``reference`` (both (n, out), e.g.
    calibration outputs, or conductance matrices): shape (1,) for ``mode="global"``, (out,) for "per_column";
    1 where ``current`` sums to 0."""
    if mode == "global":
        den = current.abs().sum()
        return (reference.abs().sum() / den).reshape(1) if den > 0 else torch.ones(1, dtype=torch.float64)
    den = current.abs().sum(dim=0)
    return torch.where(den > 0, reference.abs().sum(dim=0) / den.clamp(min=1e-30), torch.ones_like(den))


def moved_reference(reference: torch.Tensor, inputs: torch.Tensor, applied: torch.Tensor,
                    w_max: float) -> torch.Tensor:
    """The calibration reference after the programmed conductances changed by ``applied`` (in, out; units of
    w_max = normalised conductance): ``reference + inputs @ applied * w_max`` (weight units)."""
    return reference + (inputs @ applied) * w_max
