"""MAML on a chip: program the meta-trained CNN into a substrate, adapt on the chip, classify at a given time.

The protocol of the paper's hardware experiment (Ortner et al., section "few-shot image classification"),
with time made explicit:

1. At ``t = 0`` the four conv layers (im2col matrices; a 3x3x56 kernel is 504 rows = 2 tiles) and the
   readout's meta-learned initial value are programmed (``substrate.place``).
2. At ``t_adapt_s`` the support images pass through the crossbars (batch-norm with the support set's own
   statistics, ReLU and max-pooling digital), the readout gradient of the cross-entropy is computed
   digitally, and each of the ``steps`` SGD steps is written with ``arr.update(-lr * grad)`` (on PCM:
   stochastically rounded to the update grid, only the devices that change re-programmed).
3. At ``t_query_s`` (default: right after adapting) the query images are classified through the crossbars
   (batch statistics of the query pass, as in the paper's protocol).
4. Optionally (``readapt=True``), at ``t_query_s`` the readout is first adapted again with ``steps`` fresh
   on-chip steps on a NEW support set of the same classes (other drawings): the paper's mechanism, on-chip
   learning compensating the chip's non-idealities, tested against drift.

Every batch of tasks gets a freshly programmed chip (seeded from ``seed`` and the batch index), so results
average over chip instances and time only moves forward within a batch. The readout of each task is its own
array (``head<i>``); ``readout_on_chip=False`` keeps it in exact float software while the conv layers stay
on the chip.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from pcmeta.hardware import PCMConfig, PCMSubstrate, SoftwareSubstrate

from .maml import MAML, mean_ci95


@dataclass
class ChipProtocol:
    """Where the weights live and when the chip is used.

    substrate: "software" (exact, or the paper's ``bits``-bit model) or "pcm".
    bits: software weight bits (None = 32-bit float); ignored for "pcm" (use ``pcm.weight_bits``).
    pcm: the PCM configuration (seeded per batch of tasks from ``seed``).
    t_adapt_s: seconds after programming at which the support set is adapted.
    t_query_s: seconds after programming at which the queries are classified (None: = t_adapt_s).
    steps: on-chip SGD steps of the readout; lr: their learning rate (None: the model's inner lr).
    readout_on_chip: place the readout on the chip too (else exact float software).
    conv_on_chip: place the conv layers on the chip (else the ``bits``-bit software model; with
        ``readout_on_chip`` this puts the readout alone on the chip).
    readapt: at t_query_s, adapt again with ``steps`` steps on a new support set of the same classes.
    readout_pcm: with substrate "pcm", the readout's own PCM configuration (its own crossbar, e.g. its own
        w_max: the weight that maps to g_max, so its 4 bits and its 1/16 update grid span the readout's
        range); None: the readout shares the conv layers' configuration.
    """

    substrate: str = "pcm"
    bits: int | None = None
    pcm: PCMConfig = field(default_factory=lambda: PCMConfig(weight_bits=4, w_max=1.0))
    t_adapt_s: float = 60.0
    t_query_s: float | None = None
    steps: int = 4
    lr: float | None = None
    readout_on_chip: bool = True
    conv_on_chip: bool = True
    readapt: bool = False
    readout_pcm: PCMConfig | None = None

    def __post_init__(self) -> None:
        if self.substrate not in ("software", "pcm"):
            raise ValueError(f"substrate must be 'software' or 'pcm', got {self.substrate!r}")
        if self.t_adapt_s < 0 or (self.t_query_s is not None and self.t_query_s < self.t_adapt_s):
            raise ValueError(f"need 0 <= t_adapt_s <= t_query_s, got {self.t_adapt_s}, {self.t_query_s}")
        if self.readout_pcm is not None and (self.substrate != "pcm" or not self.readout_on_chip):
            raise ValueError("readout_pcm (the readout's own PCM crossbar) needs substrate='pcm' and "
                             "readout_on_chip=True")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {self.steps!r}")

    @property
    def query_time(self) -> float:
        return self.t_adapt_s if self.t_query_s is None else self.t_query_s

    def make_substrates(self, seed: int):
        """(conv substrate, readout substrate) for one chip instance."""
        if self.substrate == "software":
            chip = SoftwareSubstrate(bits=self.bits, seed=seed)
        else:
            chip = PCMSubstrate(replace(self.pcm, seed=seed))
        conv = chip if self.conv_on_chip else SoftwareSubstrate(bits=self.bits, seed=seed + 2)
        if not self.readout_on_chip:
            head = SoftwareSubstrate(seed=seed + 1)
        elif self.readout_pcm is not None:
            head = PCMSubstrate(replace(self.readout_pcm, seed=seed + 1))
        else:
            head = chip
        return conv, head


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


@torch.no_grad()
def evaluate_on_chip(model: MAML, sampler, tasks: int, protocol: ChipProtocol, seed: int = 0,
                     batch: int = 50, progress: bool = False, return_predictions: bool = False) -> dict:
    """Run the chip protocol on ``tasks`` tasks drawn from ``sampler``.

    Returns ``{"acc": (tasks,) accuracy after the last step, "acc_steps": (tasks, steps+1) accuracy after
    0..steps steps (only when t_query == t_adapt and not readapt; else None), "mean", "ci95", "report"
    ({"conv": ..., "readout": ...}: ``report()`` of the last chip instance's substrates)}``, plus ``"predictions"`` (tasks, N*Q) if asked.
    """
    cfg = model.cfg
    if cfg.arch != "paper":
        raise ValueError("the chip protocol adapts the readout only: it needs a 'paper' architecture model")
    lr = cfg.inner_lr if protocol.lr is None else protocol.lr
    per_step = protocol.t_query_s in (None, protocol.t_adapt_s) and not protocol.readapt
    accs, acc_steps, preds = [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tasks, desc="chip eval", unit="task", leave=False)
    done, b_idx, report = 0, 0, None
    while done < tasks:
        B = min(batch, tasks - done)
        tb = sampler.sample(B)
        sx, sy, qx, qy = (torch.as_tensor(a) for a in (tb.support_x, tb.support_y, tb.query_x, tb.query_y))
        chip, head_sub = protocol.make_substrates(seed * 100003 + b_idx)
        subs = [chip] if head_sub is chip else [chip, head_sub]
        dep = model.deploy(chip)                      # conv layers at t = 0
        chip.remove("readout")                        # each task gets its own readout array below
        W0 = dep.params["readout"]                    # the deployed (for a bits model: clipped) readout
        heads = [head_sub.place(f"head{t}", W0.clone()) for t in range(B)]
        for sub in subs:
            sub.elapse(protocol.t_adapt_s)
        fs, _ = dep.features(sx)
        if per_step:
            fq, _ = dep.features(qx)
            rows = [_accuracy(heads, fq, qy)]
            _adapt(heads, fs, sy, cfg.n_way, protocol.steps, lr, record=lambda s: rows.append(_accuracy(heads, fq, qy)))
            acc_steps.append(np.stack(rows, 1))
        else:
            _adapt(heads, fs, sy, cfg.n_way, protocol.steps, lr)
            for sub in subs:
                sub.elapse(protocol.query_time - protocol.t_adapt_s)
            if protocol.readapt:
                tb2 = _new_support(sampler, tb)
                fs2, _ = dep.features(torch.as_tensor(tb2.support_x))
                _adapt(heads, fs2, torch.as_tensor(tb2.support_y), cfg.n_way, protocol.steps, lr)
            fq, _ = dep.features(qx)
        accs.append(_accuracy(heads, fq, qy))
        if return_predictions:
            preds.append(np.stack([h.matmul(fq[t]).argmax(-1).numpy() for t, h in enumerate(heads)]))
        report = {"conv": chip.report(), "readout": head_sub.report()}
        done += B
        b_idx += 1
        if bar is not None:
            bar.update(B)
            bar.set_postfix(acc=f"{np.concatenate(accs).mean():.4f}")
    if bar is not None:
        bar.close()
    acc = np.concatenate(accs)
    mean, ci = mean_ci95(acc)
    out = {"acc": acc, "acc_steps": np.concatenate(acc_steps) if per_step else None, "mean": mean, "ci95": ci,
           "report": report}
    if return_predictions:
        out["predictions"] = np.concatenate(preds)
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


@torch.no_grad()
def chip_cost(model: MAML, sampler, protocol: ChipProtocol, seed: int = 0) -> dict:
    """Counters and estimated cost of one task on the chip, split into programming the network,
    adapting (support pass + ``steps`` on-chip updates of the readout) and classifying the N*Q queries.

    Each phase is the difference of the substrates' ``report()`` before and after it (energy in J,
    latency in s, MVMs = input vectors, MACs, programming events).
    """
    cfg = model.cfg
    lr = cfg.inner_lr if protocol.lr is None else protocol.lr
    tb = sampler.sample(1)
    sx, sy, qx, qy = (torch.as_tensor(a) for a in (tb.support_x, tb.support_y, tb.query_x, tb.query_y))
    chip, head_sub = protocol.make_substrates(seed)
    subs = [chip] if head_sub is chip else [chip, head_sub]

    def snapshot():
        tot = {"mvms": 0, "macs": 0, "programming_events": 0, "energy_J": 0.0, "latency_s": 0.0}
        for sub in subs:
            r = sub.report()
            if sub.kind != "pcm":
                continue
            tot["mvms"] += r["mvms"]
            tot["macs"] += r["macs"]
            tot["programming_events"] += r["programming_events"]
            tot["energy_J"] += r["energy_J"]["total"]
            tot["latency_s"] += r["latency_s"]["total"]
        return tot

    def diff(a, b):
        return {k: b[k] - a[k] for k in a}

    s0 = snapshot()
    dep = model.deploy(chip)
    chip.remove("readout")
    heads = [head_sub.place("head0", dep.params["readout"].clone())]
    s1 = snapshot()
    for sub in subs:
        sub.elapse(protocol.t_adapt_s)
    fs, _ = dep.features(sx)             # (1, N*K, 1, 28, 28): one task
    _adapt(heads, fs, sy, cfg.n_way, protocol.steps, lr)
    s2 = snapshot()
    fq, _ = dep.features(qx)
    acc = _accuracy(heads, fq, qy)
    s3 = snapshot()
    return {"programming": diff(s0, s1), "adaptation": diff(s1, s2), "inference": diff(s2, s3),
            "queries": int(qx.shape[1]), "support": int(sx.shape[1]), "steps": protocol.steps,
            "accuracy": float(acc[0])}
