"""A small CNN of your own, trained plainly in float, then run on pcmeta's simulated PCM chip (issue #18).

What it does:

1. Task: plain 100-way classification of the first 100 characters (sorted ``Alphabet/characterNN``
   names) of the Omniglot *background* set, loaded with pcmeta's own loader (``"paper"`` preprocessing,
   28 x 28, inverted here so that ink is 1 and background 0). Drawings 0..14 of every character are the
   training set (1,500 images), drawings 15..19 the test set (500 images).
2. A LeNet-style classifier (conv 5x5 16 - maxpool - conv 5x5 32 - maxpool - fc 128 - fc 100, ReLU),
   trained with Adam (lr 1e-3, batch 64, random shifts of up to 2 pixels) in float for ``--epochs`` (40).
3. Two fine-tunings of that network for ``--hwa-epochs`` (20) more epochs (Adam, lr 3e-4, the same
   batches and shifts): "plain" in float, and "hwa" (hardware-aware) as ``hw.noise_aware(net, cfg)``, whose
   forward in training uses the chip's noise (programming noise, drift to a random age in 1 s .. 1 y shared
   by the layers of a pass, read noise, drift compensation, output noise; scaled by ``--hwa-noise-scale``:
   ``noise_aware(..., noise_scale=)``). So both models have had the same training and differ only in the
   noise.
4. Each model is converted to the simulated chip with ``hw.convert(model, cfg, seed=s)`` (every Conv2d
   and Linear programmed into PCM tiles; biases, ReLU and pooling stay digital) for a few chip seeds (one
   programming each), and its test accuracy is read after 1 s, 1 h, 1 day, 1 month and 1 year of drift
   (``hw.elapse``), with global drift compensation and without. The float accuracy of each model is the
   software reference.
5. Writes ``accuracy.csv`` (model, time_s, time, compensation, accuracy, ci95, n_seeds; ci95 is 1.96
   standard errors over the chip seeds, NaN for one seed; the float reference rows have compensation
   ``float``), ``accuracy.png`` and ``timing.json`` (end-to-end inference of the converted CNN vs the
   float CNN on the test batch) into ``--out``, and prints the table.

The chip is ``PCMConfig(drift_compensation=...)`` with pcmeta's defaults otherwise (PCM-like devices,
8-bit DAC and ADC, 256 x 256 tiles, output noise 0.06).

Resumable: the trained weights are saved in ``--out`` as ``base.pt`` (the float training), ``plain.pt``
and ``hwa.pt``, and loaded from there when present and made with the same settings (else trained again).

Run (from the repository root; Omniglot zips in $PCMETA_DATA_DIR or --data-dir)::

    OMP_NUM_THREADS=1 python examples/cnn_on_pcm.py --out runs/cnn_pcm --data-dir ../shared/data/omniglot

``--quick`` (10 characters, 1 epoch each, times 1 s and 1 y, 1 seed) is the smoke test of
tests/examples/test_cnn_on_pcm.py.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcmeta.agents.evaluation import mean_ci95
from pcmeta.hardware.times import TIMES, format_time
from pcmeta.tasks.omniglot import load_omniglot

N_TRAIN_DRAWINGS = 15  # drawings 0..14 train, 15..19 test
FULL_TIMES = ("1s", "1h", "1d", "1mo", "1y")
QUICK_TIMES = ("1s", "1y")
COMPENSATIONS = ("global", "none")
FINETUNE_LR = 3e-4


# ----------------------------------------------------------------------------------------- data
def load_task(n_classes: int, data_dir=None):
    """(x_train, y_train, x_test, y_test) tensors of the first ``n_classes`` background characters."""
    data = load_omniglot("background", data_dir, "paper")
    if not 2 <= n_classes <= data.n_characters:
        raise ValueError(f"--classes must be in 2..{data.n_characters}, got {n_classes}")
    x = 1.0 - torch.from_numpy(data.images[:n_classes])  # (C, 20, 28, 28); ink 1, background 0
    y = torch.arange(n_classes)[:, None].expand(n_classes, x.shape[1])
    k = N_TRAIN_DRAWINGS

    def flat(a):
        return a.reshape(-1, *a.shape[2:])

    return (flat(x[:, :k]).unsqueeze(1).contiguous(), flat(y[:, :k]).contiguous(),
            flat(x[:, k:]).unsqueeze(1).contiguous(), flat(y[:, k:]).contiguous())


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random integer offset in [-max_shift, max_shift]^2 (zero fill)."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(n, h, w)
    idx = torch.arange(n)[:, None, None]
    return padded[idx, 0, rows, cols].unsqueeze(1)


# ----------------------------------------------------------------------------------------- model
class LeNet(nn.Module):
    """conv5x5(16) - relu - maxpool2 - conv5x5(32) - relu - maxpool2 - fc(128) - relu - fc(n_classes)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int,
          batch: int = 64, max_shift: int = 2, log: str = "") -> float:
    """Adam on shuffled mini-batches with random shifts; returns the wall seconds."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(random_shift(x[idx], max_shift, gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if log and (ep + 1 == epochs or (ep + 1) % max(1, epochs // 5) == 0):
            print(f"  {log} epoch {ep + 1}/{epochs}: loss {total / len(x):.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def train_or_load(path: Path, make, meta: dict, fit) -> tuple[nn.Module, dict]:
    """The model saved at ``path`` if its meta matches ``meta``; else ``make()`` trained by ``fit`` and saved."""
    model = make()
    if path.is_file():
        ck = torch.load(path, weights_only=True)
        if ck.get("meta") == meta:
            model.load_state_dict(ck["state_dict"])
            model.eval()
            print(f"loaded {path} (trained in {ck['train_s']:.0f} s)")
            return model, {"train_s": ck["train_s"], "loaded": True}
        print(f"{path} was made for another setting ({ck.get('meta')}); training again")
    train_s = fit(model)
    tmp = path.with_suffix(".tmp")
    torch.save({"meta": meta, "state_dict": model.state_dict(), "train_s": train_s}, tmp)
    os.replace(tmp, path)
    return model, {"train_s": train_s, "loaded": False}


# ----------------------------------------------------------------------------------------- chip
def chip_accuracy(hw, model: nn.Module, cfg, times_s: list[float], seeds: int, x, y) -> np.ndarray:
    """(seeds, times) test accuracies of ``model`` converted with ``cfg``, one programming per seed."""
    acc = np.zeros((seeds, len(times_s)))
    for s in range(seeds):
        chip = hw.convert(model, cfg, seed=s)
        chip.eval()
        now = 0.0
        for j, t in enumerate(times_s):
            hw.elapse(chip, t - now)
            now = t
            acc[s, j] = accuracy(chip, x, y)
    return acc


def time_inference(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median wall seconds of one forward pass over the batch ``x`` per model (after a warm-up); the models
    take turns, so that a busy machine slows them alike."""
    ts: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x)
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(x)
                ts[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in ts.items()}


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"plain": "tab:blue", "hwa": "tab:orange"}
    for model in ("plain", "hwa"):
        for comp, ls in (("global", "-"), ("none", "--")):
            r = [row for row in rows if row["model"] == model and row["compensation"] == comp]
            if not r:
                continue
            ci = [0.0 if math.isnan(row["ci95"]) else row["ci95"] for row in r]
            ax.errorbar([row["time_s"] for row in r], [row["accuracy"] for row in r], yerr=ci, color=colors[model],
                        ls=ls, marker="o", capsize=3, label=f"{model}, compensation {comp}")
        ref = [row for row in rows if row["model"] == model and row["compensation"] == "float"]
        if ref:
            ax.axhline(ref[0]["accuracy"], color=colors[model], ls=":", lw=1.2, label=f"{model}, float (software)")
    ts = sorted({row["time_s"] for row in rows})
    ax.set_xscale("log")
    ax.set_xticks(ts, [format_time(t) for t in ts])
    ax.minorticks_off()
    ax.set_xlabel("time after programming")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (weights, CSV, PNG, timing)")
    p.add_argument("--data-dir", default=None, help="Omniglot zips (default $PCMETA_DATA_DIR, else the user cache)")
    p.add_argument("--classes", type=int, default=None, help="characters to classify (default 100; --quick 10)")
    p.add_argument("--epochs", type=int, default=None, help="float training epochs (default 40; --quick 1)")
    p.add_argument("--hwa-epochs", type=int, default=None,
                   help="fine-tuning epochs after the float training, noise-aware (hwa) and float (plain) alike "
                        "(default 20; --quick 1)")
    p.add_argument("--hwa-noise-scale", type=float, default=2.0,
                   help="noise of the noise-aware training (programming, read and output noise) in units of the "
                        "chip's (default 2)")
    p.add_argument("--seeds", type=int, default=None, help="chip seeds (programmings) per point (default 5; "
                                                              "--quick 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and training")
    p.add_argument("--quick", action="store_true", help="smoke test: 10 characters, 1 epoch, 2 times, 1 seed")
    args = p.parse_args(argv)
    q = args.quick
    for name, full, quick in (("classes", 100, 10), ("epochs", 40, 1), ("hwa_epochs", 20, 1), ("seeds", 5, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not (math.isfinite(args.hwa_noise_scale) and args.hwa_noise_scale >= 0):
        p.error("--hwa-noise-scale must be a finite number >= 0")
    return args


def train_models(args: argparse.Namespace, hw, cfg, xtr, ytr) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """The float training, then the two matched fine-tunings (plain, hwa); each loaded from --out when there."""
    task_meta = {"classes": args.classes, "train_drawings": N_TRAIN_DRAWINGS, "seed": args.seed}

    def make_base():
        torch.manual_seed(args.seed)
        return LeNet(args.classes)

    base_meta = {**task_meta, "epochs": args.epochs}
    base, base_info = train_or_load(args.out / "base.pt", make_base, base_meta,
                                    lambda m: train(m, xtr, ytr, args.epochs, 1e-3, args.seed, log="float"))
    # the two fine-tunings see the same batches and shifts (same seed): they differ only in the chip noise
    ft_meta = {**base_meta, "finetune_epochs": args.hwa_epochs}
    plain, plain_info = train_or_load(
        args.out / "plain.pt", lambda: copy.deepcopy(base), ft_meta,
        lambda m: train(m, xtr, ytr, args.hwa_epochs, FINETUNE_LR, args.seed + 1, log="plain fine-tuning"))
    hwa, hwa_info = train_or_load(
        args.out / "hwa.pt", lambda: hw.noise_aware(base, cfg, seed=args.seed, noise_scale=args.hwa_noise_scale),
        {**ft_meta, "hwa_noise_scale": args.hwa_noise_scale, "hwa_version": 2},
        lambda m: train(m, xtr, ytr, args.hwa_epochs, FINETUNE_LR, args.seed + 1, log="hwa fine-tuning"))
    return {"plain": plain, "hwa": hwa}, {"float": base_info, "plain": plain_info, "hwa": hwa_info}


def accuracy_rows(hw, cfg, models: dict[str, nn.Module], time_names, seeds: int, xte, yte) -> list[dict]:
    """Float accuracy and chip accuracy (mean, 95 % CI over ``seeds`` chips) per model, compensation and time."""
    times_s = [TIMES[n] for n in time_names]
    rows: list[dict] = []
    for name, model in models.items():
        ref = accuracy(model, xte, yte)
        for t, tn in zip(times_s, time_names):
            rows.append(dict(model=name, time_s=t, time=tn, compensation="float", accuracy=ref, ci95=float("nan"),
                             n_seeds=1))
        for comp in COMPENSATIONS:
            t0 = time.perf_counter()
            acc = chip_accuracy(hw, model, cfg.replace(drift_compensation=comp), times_s, seeds, xte, yte)
            print(f"  {name}, compensation {comp}: {seeds} chips x {len(times_s)} times in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            for j, (t, tn) in enumerate(zip(times_s, time_names)):
                m, ci = mean_ci95(acc[:, j])
                rows.append(dict(model=name, time_s=t, time=tn, compensation=comp, accuracy=m, ci95=ci,
                                 n_seeds=seeds))
    return rows


def print_table(rows: list[dict], time_names, n_test: int, seeds: int) -> None:
    print(f"\ntest accuracy (%), {n_test} test images; chip: mean +- 95 % CI over {seeds} seeds")
    head = f"{'model':6s} {'compensation':12s} " + " ".join(f"{n:>13s}" for n in time_names)
    print(head)
    print("-" * len(head))
    for name in ("plain", "hwa"):
        for comp in ("float",) + COMPENSATIONS:
            r = [row for row in rows if row["model"] == name and row["compensation"] == comp]
            cells = [f"{100 * row['accuracy']:6.1f}" + ("" if math.isnan(row["ci95"]) else
                                                         f" +-{100 * row['ci95']:4.1f}") for row in r]
            print(f"{name:6s} {comp:12s} " + " ".join(f"{c:>13s}" for c in cells))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import pcmeta.hardware as hw

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    time_names = QUICK_TIMES if args.quick else FULL_TIMES
    xtr, ytr, xte, yte = load_task(args.classes, args.data_dir)
    print(f"task: {args.classes} Omniglot background characters, {len(xtr)} training / {len(xte)} test images")
    cfg = hw.PCMConfig(drift_compensation="global")
    models, info = train_models(args, hw, cfg, xtr, ytr)
    rows = accuracy_rows(hw, cfg, models, time_names, args.seeds, xte, yte)

    with open(out / "accuracy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "time_s", "time", "compensation", "accuracy", "ci95", "n_seeds"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "accuracy": f"{r['accuracy']:.4f}", "ci95": f"{r['ci95']:.4f}"})
    plot(rows, out / "accuracy.png",
         f"LeNet, {args.classes}-way Omniglot on simulated PCM ({args.seeds} chip seeds, mean +- 95 % CI)")

    # end-to-end inference time of the converted CNN vs the float CNN on the test batch
    chip = hw.convert(models["plain"], cfg, seed=0)
    chip.eval()
    repeats = 3 if args.quick else 10
    t_float, t_chip = time_inference({"float": models["plain"], "chip": chip}, xte, repeats).values()
    timing = {"batch": len(xte), "float_s": t_float, "chip_s": t_chip, "ratio": t_chip / t_float,
              "threads": torch.get_num_threads(), "repeats": repeats, "train_float_s": info["float"]["train_s"],
              "finetune_plain_s": info["plain"]["train_s"], "finetune_hwa_s": info["hwa"]["train_s"]}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")

    print_table(rows, time_names, len(xte), args.seeds)
    loaded = " (loaded from --out)" if all(i["loaded"] for i in info.values()) else ""
    print(f"\ntraining{loaded}: float {info['float']['train_s']:.0f} s ({args.epochs} epochs), then "
          f"{args.hwa_epochs} epochs of fine-tuning: plain {info['plain']['train_s']:.0f} s, "
          f"hwa {info['hwa']['train_s']:.0f} s (noise x{args.hwa_noise_scale:g})")
    print(f"inference of {len(xte)} test images, {timing['threads']} thread: float {1e3 * t_float:.1f} ms, "
          f"chip {1e3 * t_chip:.1f} ms, ratio {timing['ratio']:.1f}x")
    print(f"wrote {out / 'accuracy.csv'}, {out / 'accuracy.png'}, {out / 'timing.json'}")
    return rows


if __name__ == "__main__":
    main()
