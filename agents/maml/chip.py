"""MAML on a chip (the paper's hardware protocol): program the meta-trained CNN onto a :class:`Deployment`,
adapt the readout there, classify at the deployment's times.

The protocol of the paper's hardware experiment (Ortner et al., section "few-shot image classification"),
with time made explicit by the :class:`~pcmeta.hardware.Deployment`:

1. At ``t = 0`` the four conv layers (im2col matrices; a 3x3x56 kernel is 504 rows = 2 tiles) and the
   readout's meta-learned initial value are placed on ``deployment.build(seed)``, whose placement rules say
   where each array lives (e.g. the readout on its own crossbar scale, or in digital float).
2. At ``deployment.time_s`` the support images pass through the crossbars (batch-norm with the support set's
   own statistics, ReLU and max-pooling digital), the readout gradient of the cross-entropy is computed
   digitally, and each of the ``steps`` SGD steps is written with ``arr.update(-lr * grad)`` (on PCM:
   stochastically rounded to the update grid, only the devices that change re-programmed).
3. At ``deployment.query_time`` (default: right after adapting) the query images are classified through the
   crossbars (batch statistics of the query pass, as in the paper's protocol).
4. Optionally (``readapt=True``), at ``deployment.query_time`` the readout is first adapted again with
   ``steps`` fresh on-chip steps on a NEW support set of the same classes (other drawings): the paper's
   mechanism, on-chip learning compensating the chip's non-idealities, tested against drift.

Every batch of tasks gets a freshly built chip (``deployment.build(seed * 100003 + batch index)``), so
results average over chip instances and time only moves forward within a batch. The readout of each task
is its own array, ``readout<i>``: a placement rule for the readout must match those names as well as
``readout`` (:data:`READOUT`, ``"readout*"``, as the omniglot presets do); :func:`place_readout` sets it.
"""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from pcmeta.hardware import Deployment, Placement

from .evaluation import mean_ci95

if TYPE_CHECKING:
    from .model import MAML

#: Placement pattern of the readout: the network's ``readout`` and each task's ``readout<i>``.
READOUT = "readout*"


def place_readout(deployment: Deployment, placement: Placement | None) -> Deployment:
    """``deployment`` with its readout rule (a rule matching ``readout0`` but not ``conv1``) replaced by
    ``placement`` (put first; None: the readout shares the main substrate), e.g.
    ``place_readout(dep, Placement(READOUT, "own", {"w_max": 0.125}))``."""
    def is_readout_rule(p: Placement) -> bool:
        return fnmatch.fnmatchcase("readout0", p.match) and not fnmatch.fnmatchcase("conv1", p.match)

    rules = tuple(p for p in deployment.placements if not is_readout_rule(p))
    return deployment.with_(placements=(() if placement is None else (placement,)) + rules)


def _check(model: MAML, deployment: Deployment, steps: int) -> None:
    if model.cfg.arch != "paper":
        raise ValueError("the chip protocol adapts the readout only: it needs a 'paper' architecture model")
    if not isinstance(deployment, Deployment):
        raise TypeError(f"deployment must be a pcmeta.hardware.Deployment, got {type(deployment).__name__}")
    if deployment.substrate not in ("software", "pcm"):
        raise ValueError(f"deployment {deployment.name!r}: the chip protocol runs on 'software' or 'pcm' "
                         f"substrates, not {deployment.substrate!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")


def _program(model: MAML, sub, n_tasks: int):
    """Place the network on ``sub`` at its current time; each of ``n_tasks`` tasks gets its own readout
    ``readout<i>`` at the meta-learned value. Returns (DeployedCNN, readout arrays)."""
    net = model.deploy(sub)                     # conv layers and the network's readout
    home = net.head.substrate
    sub.remove("readout")                       # each task gets its own readout array below
    W0 = net.params["readout"]                  # the deployed (for a bits model: clipped) readout
    heads = [sub.place(f"readout{t}", W0.clone()) for t in range(n_tasks)]
    if heads and heads[0].substrate is not home:
        raise ValueError(f"deployment {sub.deployment.name!r}: its rules place 'readout' and the per-task "
                         f"readouts 'readout<i>' on different substrates; match them both (e.g. {READOUT!r})")
    return net, heads


def _adapt(heads: list, f: torch.Tensor, y: torch.Tensor, n_way: int, steps: int, lr: float,
           record=None) -> None:
    """``steps`` SGD steps of each task's readout on its support features f (T, n, C), labels y (T, n).

    The gradient of the mean cross-entropy w.r.t. the readout, f^T (softmax(f W) - Y) / n, is computed
    digitally from logits read through the chip; the step is written with ``update``. ``record(s)`` is
    called after each step s = 1..steps.
    """
    Y = F.one_hot(y, n_way).to(f.dtype)
    for s in range(1, steps + 1):
        for t, h in enumerate(heads):
            G = (torch.softmax(h.matmul(f[t]), -1) - Y[t]) / f.shape[1]
            h.update(-lr * (f[t].t() @ G))
        if record is not None:
            record(s)


def _accuracy(heads: list, fq: torch.Tensor, qy: torch.Tensor) -> np.ndarray:
    return np.array([(h.matmul(fq[t]).argmax(-1) == qy[t]).float().mean().item() for t, h in enumerate(heads)])


def _run_batch(model: MAML, sub, sampler, tb, steps: int, lr: float, readapt: bool, per_step: bool,
               want_predictions: bool) -> dict:
    """The protocol on one batch of tasks ``tb`` and one chip ``sub``."""
    dep, n_way = sub.deployment, model.cfg.n_way
    sx, sy, qx, qy = (torch.as_tensor(a) for a in (tb.support_x, tb.support_y, tb.query_x, tb.query_y))
    net, heads = _program(model, sub, sx.shape[0])
    sub.elapse(dep.time_s)
    fs, _ = net.features(sx)
    out = {"acc_steps": None}
    if per_step:
        fq, _ = net.features(qx)
        rows = [_accuracy(heads, fq, qy)]
        _adapt(heads, fs, sy, n_way, steps, lr, record=lambda s: rows.append(_accuracy(heads, fq, qy)))
        out["acc_steps"] = np.stack(rows, 1)
    else:
        _adapt(heads, fs, sy, n_way, steps, lr)
        sub.elapse(dep.query_time - dep.time_s)
        if readapt:
            tb2 = _new_support(sampler, tb)
            fs2, _ = net.features(torch.as_tensor(tb2.support_x))
            _adapt(heads, fs2, torch.as_tensor(tb2.support_y), n_way, steps, lr)
        fq, _ = net.features(qx)
    out["acc"] = _accuracy(heads, fq, qy)
    if want_predictions:
        out["predictions"] = np.stack([h.matmul(fq[t]).argmax(-1).numpy() for t, h in enumerate(heads)])
    out["readout_w_max"] = getattr(heads[0], "w_max", None) if heads else None
    return out


@torch.no_grad()
def evaluate_on_chip(model: MAML, sampler, tasks: int, deployment: Deployment, seed: int = 0, steps: int = 4,
                     lr: float | None = None, readapt: bool = False, batch: int = 50, progress: bool = False,
                     return_predictions: bool = False) -> dict:
    """Run the chip protocol on ``tasks`` tasks drawn from ``sampler`` under ``deployment``.

    ``steps`` on-chip SGD steps of the readout with learning rate ``lr`` (None: the model's inner lr);
    ``readapt``: adapt again on a new support set at ``deployment.query_time`` (see the module docstring).

    Returns ``{"acc": (tasks,) accuracy after the last step, "acc_steps": (tasks, steps+1) accuracy after
    0..steps steps (only when the queries are answered right after adapting and not ``readapt``; else None),
    "mean", "ci95", "readout_w_max" (the weight at g_max of the crossbar the readouts live on; None in
    software), "report" (``report()`` of the last chip)}``, plus ``"predictions"`` (tasks, N*Q) if asked.
    """
    _check(model, deployment, steps)
    lr = model.cfg.inner_lr if lr is None else lr
    per_step = deployment.query_time == deployment.time_s and not readapt
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tasks, desc="chip eval", unit="task", leave=False)
    runs, done, b_idx, sub = [], 0, 0, None
    while done < tasks:
        B = min(batch, tasks - done)
        sub = deployment.build(seed * 100003 + b_idx)
        runs.append(_run_batch(model, sub, sampler, sampler.sample(B), steps, lr, readapt, per_step,
                               return_predictions))
        done, b_idx = done + B, b_idx + 1
        if bar is not None:
            bar.update(B)
            bar.set_postfix(acc=f"{np.concatenate([r['acc'] for r in runs]).mean():.4f}")
    if bar is not None:
        bar.close()
    acc = np.concatenate([r["acc"] for r in runs])
    mean, ci = mean_ci95(acc)
    out = {"acc": acc, "acc_steps": np.concatenate([r["acc_steps"] for r in runs]) if per_step else None,
           "mean": mean, "ci95": ci, "readout_w_max": runs[-1]["readout_w_max"] if runs else None,
           "report": None if sub is None else sub.report()}
    if return_predictions:
        out["predictions"] = np.concatenate([r["predictions"] for r in runs])
    return out


def _new_support(sampler, tb):
    """The same tasks (classes, rotations, queries) with a new support set of other drawings."""
    K = sampler.k_shot
    used = tb.drawings  # (B, N, K+Q)
    B, N, _ = used.shape
    new = np.empty_like(used)
    for b in range(B):
        for n in range(N):
            free = np.setdiff1d(np.arange(20), used[b, n])
            if free.size < K:
                raise ValueError(f"re-adaptation needs {K} unused drawings per class, only {free.size} left")
            new[b, n, :K] = free[:K]
            new[b, n, K:] = used[b, n, K:]
    return sampler.build(tb.classes, tb.rotations, new)


def _chip_totals(sub) -> dict:
    """MVMs, MACs, programming events, energy (J) and latency (s) summed over the chip parts of ``sub``
    (the parts with an energy estimate; digital parts are left out)."""
    tot = {"mvms": 0, "macs": 0, "programming_events": 0, "energy_J": 0.0, "latency_s": 0.0}
    for part in sub.parts.values():
        r = part.report()
        if not isinstance(r.get("energy_J"), dict):
            continue
        for k in ("mvms", "macs", "programming_events"):
            tot[k] += r[k]
        tot["energy_J"] += r["energy_J"]["total"]
        tot["latency_s"] += r["latency_s"]["total"]
    return tot


@torch.no_grad()
def chip_cost(model: MAML, sampler, deployment: Deployment, seed: int = 0, steps: int = 4,
              lr: float | None = None) -> dict:
    """Counters and estimated cost of one task on ``deployment.build(seed)``, split into programming the
    network, adapting (support pass + ``steps`` on-chip updates of the readout) and classifying the N*Q queries.

    Each phase is the difference of the chip parts' ``report()`` before and after it (energy in J,
    latency in s, MVMs = input vectors, MACs, programming events).
    """
    _check(model, deployment, steps)
    lr = model.cfg.inner_lr if lr is None else lr
    tb = sampler.sample(1)
    sx, sy, qx, qy = (torch.as_tensor(a) for a in (tb.support_x, tb.support_y, tb.query_x, tb.query_y))
    sub = deployment.build(seed)

    def diff(a, b):
        return {k: b[k] - a[k] for k in a}

    s0 = _chip_totals(sub)
    net, heads = _program(model, sub, 1)
    s1 = _chip_totals(sub)
    sub.elapse(deployment.time_s)
    fs, _ = net.features(sx)             # (1, N*K, 1, 28, 28): one task
    _adapt(heads, fs, sy, model.cfg.n_way, steps, lr)
    s2 = _chip_totals(sub)
    fq, _ = net.features(qx)
    acc = _accuracy(heads, fq, qy)
    s3 = _chip_totals(sub)
    return {"programming": diff(s0, s1), "adaptation": diff(s1, s2), "inference": diff(s2, s3),
            "queries": int(qx.shape[1]), "support": int(sx.shape[1]), "steps": steps,
            "accuracy": float(acc[0])}
