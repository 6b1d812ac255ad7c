"""Few-shot evaluation of a MAML model: per-task query accuracy over many tasks, and its confidence interval."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .deployed import DeployedCNN
    from .model import MAML


def mean_ci95(acc: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (1.96 standard errors) of per-task accuracies."""
    acc = np.asarray(acc, float)
    if acc.size < 2:
        return float(acc.mean()), float("nan")
    return float(acc.mean()), float(1.96 * acc.std(ddof=1) / math.sqrt(acc.size))


def evaluate(model: MAML, sampler, tasks: int = 1000, steps: int | None = None, batch: int = 50,
             progress: bool = False, deployed: "DeployedCNN | None" = None) -> np.ndarray:
    """Per-task query accuracy over ``tasks`` tasks from ``sampler`` (batched, no grad).

    With ``deployed``, each task runs through the substrate path (:class:`DeployedCNN`) instead.
    """
    accs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tasks, desc="eval", unit="task")
    done = 0
    while done < tasks:
        b = min(batch, tasks - done)
        sx, sy, qx, qy = sampler.sample(b).torch(model.device)
        if deployed is None:
            accs.append(model.evaluate(sx, sy, qx, qy, steps).cpu().numpy())
        else:
            for t in range(b):
                deployed.adapt(sx[t], sy[t], steps)
                accs.append(np.array([(deployed.predict(qx[t]).argmax(-1) == qy[t]).float().mean().item()]))
        done += b
        if bar is not None:
            bar.update(b)
            bar.set_postfix(acc=f"{np.concatenate(accs).mean():.4f}")
    if bar is not None:
        bar.close()
    return np.concatenate(accs)
