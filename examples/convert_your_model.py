"""Your own PyTorch model on pcmeta's simulated PCM chip, in a few lines.

    python examples/convert_your_model.py

1. train any model in float (here a small MLP on a toy two-spirals task, a few seconds);
2. ``hw.convert`` puts its Linear/Conv layers on a PCM chip (4-bit programming, global drift compensation);
   ``hw.elapse`` lets the devices drift; accuracy after 1 s, 1 day and 1 year;
3. ``hw.noise_aware`` makes it robust first: a copy trained with the chip's weight noise, then converted;
4. a few on-chip fine-tuning steps with a plain torch optimizer (each step is written as programming pulses);
5. ``hw.report`` says what is on the chip and what it cost.

Two inputs and narrow layers make this toy task sensitive to weight noise: expect a clear drop on the chip,
recovered in part by hardware-aware training.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import pcmeta.hardware as hw


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals in 2-D: (n, 2) points, (n,) labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 3 * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    r = t / (3 * math.pi)
    angle = t + label * math.pi
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1) + 0.02 * torch.randn(n, 2, generator=g)
    return x, label


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def on_chip(model: nn.Module, config: hw.PCMConfig, x: torch.Tensor, y: torch.Tensor, label: str,
            results: dict) -> nn.Module:
    """Convert ``model``, let it drift to 1 s, 1 day and 1 year, record the accuracy; return the chip."""
    chip = hw.convert(model, config, seed=0)
    for name, t in (("1s", 1.0), ("1d", 86400.0), ("1y", 365 * 86400.0)):
        hw.elapse(chip, t - hw.report(chip)["time_s"])
        results[f"{label} {name}"] = accuracy(chip, x, y)
        print(f"{label:<9} on PCM after {name:<3} accuracy {results[f'{label} {name}']:.3f}")
    return chip


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = spirals(2000, seed=0)
    x_test, y_test = spirals(1000, seed=1)

    # 1. your model, trained in software
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    train(model, x, y, steps=400)
    results = {"software": accuracy(model, x_test, y_test)}
    print(f"software                  accuracy {results['software']:.3f}")

    # 2. on the chip, after drift
    config = hw.PCMConfig(weight_bits=4, drift_compensation="global")
    on_chip(model, config, x_test, y_test, "plain", results)

    # 3. hardware-aware training: the chip's weight noise in every training forward, then the same chip
    robust = train(hw.noise_aware(model, config, seed=0).train(), x, y, steps=300).eval()
    chip = on_chip(robust, config, x_test, y_test, "HWA", results)

    # 4. adapt on the chip (after a year): gradients of the ideal weights, each step written as pulses
    opt = torch.optim.SGD(chip.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(chip(x), y).backward()
        opt.step()
    results["HWA 1y + 20 on-chip steps"] = accuracy(chip, x_test, y_test)
    print(f"HWA 1y, 20 steps on chip  accuracy {results['HWA 1y + 20 on-chip steps']:.3f}")

    # 5. what is on the chip
    rep = hw.report(chip)
    print(f"{len(rep['layers'])} layers, {rep['tiles']} tiles, {rep['devices']} devices, {rep['mvms']} MVMs, "
          f"{rep['programming_events']} programming events, {rep['energy_J']['total'] * 1e6:.2f} uJ")
    return results


if __name__ == "__main__":
    main()
