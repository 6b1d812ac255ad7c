"""Few-shot evaluation of a MAML model: per-task query accuracy over many tasks, and its confidence interval."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pcmeta.agents.evaluation import mean_ci95  # noqa: F401 (re-exported: the one mean and 95 % CI)

if TYPE_CHECKING:
    from .deployed import DeployedCNN
    from .model import MAML


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
