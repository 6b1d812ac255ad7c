"""``pcmeta omniglot compare`` and ``pcmeta omniglot sweep``: MAML on the simulated PCM chip.

- ``compare``: the paper's comparison (32-bit software, 4-bit software, PCM 1 minute and 1 day after
  programming) after 0..4 on-chip inner steps, 5-shot and 1-shot, as a markdown table (+ JSON).
- ``sweep``: what the paper leaves open (SPEC section 4): accuracy vs time since programming (no drift
  compensation / global compensation / re-adaptation at that time), vs programming-noise scale, weight bits,
  ADC bits, number of inner steps, readout-only vs whole network on PCM, and the estimated energy and
  latency of one adaptation plus N*Q query classifications beside a digital baseline. Writes a CSV, PNG plots
  and a markdown table; every point carries its 95 % CI and the command that reproduces it.

Registration is cheap; torch and the data are loaded inside the handlers.
"""
from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path

TIMES = {"1s": 1.0, "1min": 60.0, "1h": 3600.0, "1d": 86400.0, "1mo": 30 * 86400.0, "1y": 365 * 86400.0}

#: Digital baseline for the energy comparison (assumptions, order of magnitude): an 8-bit MAC including
#: the on-chip SRAM weight fetch costs ~1 pJ in a 14-16 nm digital accelerator (Horowitz, ISSCC 2014:
#: 8-bit multiply 0.2 pJ + add 0.03 pJ at 45 nm, 8 kB SRAM read 5-10 pJ per 64 bit, scaled), 256 MACs per
#: cycle at 1 GHz; a weight write to SRAM ~1 pJ.
DIGITAL = {"mac_J": 1e-12, "macs_per_s": 256e9, "write_J": 1e-12}


def parse_time(s: str) -> float:
    """'1s', '1min', '1h', '1d', '1mo', '1y' or a number of seconds -> seconds."""
    if s in TIMES:
        return TIMES[s]
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"time must be one of {', '.join(TIMES)} or seconds, got {s!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"time must be >= 0 seconds, got {s!r}")
    return v


def register(groups) -> None:
    p = groups["omniglot"].add_parser("compare", help="the paper's software vs PCM table after 0..4 on-chip steps")
    _common(p, tasks=1000)
    p.add_argument("--shots", default="5,1", help="comma-separated K (default 5,1)")
    p.add_argument("--float-weights", metavar="PATH", help="the 32-bit software model (default: the shipped "
                   "float paper_5w5s.npz); the other rows use --weights (the 4-bit model)")
    p.add_argument("--out", default="results/omniglot_compare", help="output folder (table.md, compare.json)")
    p.set_defaults(func=_compare)

    p = groups["omniglot"].add_parser("sweep", help="accuracy vs drift time, noise, bits, ADC, steps; energy")
    _common(p, tasks=300)
    p.add_argument("--quick", action="store_true", help="few tasks and a reduced grid (about 2 minutes)")
    p.add_argument("--out", default="results/omniglot_sweep", help="output folder (CSV, PNGs, sweep.md)")
    p.add_argument("--noise-aware-weights", metavar="PATH",
                   help="weights meta-trained with the PCM model in the forward pass, compared with --weights")
    p.set_defaults(func=_sweep)


def _common(p, tasks: int) -> None:
    p.add_argument("--weights", metavar="PATH", help="model .npz (default: the shipped 4-bit paper model, "
                   "else the shipped float one)")
    p.add_argument("--tasks", type=int, default=tasks, help="tasks per condition")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)


def default_weights() -> Path:
    from pcmeta.agents.maml import WEIGHTS_DIR

    for name in ("paper_5w5s_4bit.npz", "paper_5w5s.npz"):
        if (WEIGHTS_DIR / name).exists():
            return WEIGHTS_DIR / name
    raise FileNotFoundError(f"no shipped weights in {WEIGHTS_DIR}; pass --weights PATH")


def _setup(args):
    import torch

    from pcmeta.agents.maml import MAML
    from pcmeta.tasks.omniglot import class_pool

    torch.set_num_threads(1)
    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    weights = Path(args.weights) if args.weights else default_weights()
    model = MAML.from_weights(weights)
    if model.cfg.arch != "paper":
        raise ValueError(f"{weights}: the chip protocol needs the paper CNN (readout-only adaptation)")
    pool = class_pool("paper", "test", args.data_dir)
    return model, pool, weights


def _sampler(pool, args, shots: int, seed: int):
    from pcmeta.tasks.omniglot import TaskSampler

    return TaskSampler(pool, args.ways, shots, args.queries, seed=seed)


def _pcm(**kw):
    from pcmeta.hardware import PCMConfig

    base = dict(weight_bits=4, w_max=1.0)
    base.update(kw)
    return PCMConfig(**base)


#: The readout's own crossbar scale (the weight mapped to g_max) in the "readout w_max" rows: the smallest power
#: of two above the shipped 4-bit model's readout init (max |W| = 0.077), and the best of 1, 1/2, 1/4, 1/8 on
#: 200 tasks from the meta-TRAINING alphabets at 1 min and 1 day (``pcmeta omniglot eval --weights
#: paper_5w5s_4bit --substrate pcm --part train --time 1min|1d --readout-w-max W --tasks 200``: 98.9 / 98.7 %
#: against 97.1 / 96.9 % on the shared scale).
#: The 4 bits and the 1/16 update grid then span the readout's range instead of 1/13 of it.
READOUT_W_MAX = 0.125


def _cmdline(args) -> str:
    """The command line that produced a result (as given to ``pcmeta``)."""
    return "pcmeta " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []))


# ----------------------------------------------------------------------------------------------- compare
def compare_conditions(steps: int = 4):
    from pcmeta.agents.maml_chip import ChipProtocol

    return {
        "32-bit software": ChipProtocol(substrate="software", bits=None, t_adapt_s=0.0, steps=steps),
        "4-bit software": ChipProtocol(substrate="software", bits=4, t_adapt_s=0.0, steps=steps),
        "PCM, 1 min": ChipProtocol(pcm=_pcm(), t_adapt_s=60.0, steps=steps),
        "PCM, 1 day": ChipProtocol(pcm=_pcm(), t_adapt_s=86400.0, steps=steps),
        "PCM, 1 day, global drift comp.": ChipProtocol(pcm=_pcm(drift_compensation="global"), t_adapt_s=86400.0,
                                                       steps=steps),
        # beyond the paper: the readout on its own crossbar whose g_max maps to |w| = READOUT_W_MAX
        f"PCM, 1 min, readout w_max {READOUT_W_MAX:g}": ChipProtocol(pcm=_pcm(), t_adapt_s=60.0, steps=steps,
                                                                  readout_pcm=_pcm(w_max=READOUT_W_MAX)),
        f"PCM, 1 day, readout w_max {READOUT_W_MAX:g}": ChipProtocol(pcm=_pcm(), t_adapt_s=86400.0, steps=steps,
                                                                  readout_pcm=_pcm(w_max=READOUT_W_MAX)),
    }


def _compare(args) -> int:
    from pcmeta.agents.maml import mean_ci95
    from pcmeta.agents.maml_chip import evaluate_on_chip

    from pcmeta.agents.maml import MAML, WEIGHTS_DIR

    model, pool, weights = _setup(args)
    float_weights = Path(args.float_weights) if args.float_weights else WEIGHTS_DIR / "paper_5w5s.npz"
    float_model = MAML.from_weights(float_weights)
    shots = [int(s) for s in args.shots.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"weights": str(weights), "float_weights": str(float_weights), "tasks": args.tasks,
           "command": _cmdline(args), "rows": {}}
    t0 = time.time()
    for k in shots:
        for name, proto in compare_conditions().items():
            m = float_model if name.startswith("32-bit") else model
            r = evaluate_on_chip(m, _sampler(pool, args, k, args.seed), args.tasks, proto, seed=args.seed,
                                 progress=True)
            steps = [mean_ci95(r["acc_steps"][:, s]) for s in range(r["acc_steps"].shape[1])]
            res["rows"][f"{k}-shot | {name}"] = [{"accuracy": m, "ci95": c} for m, c in steps]
            print(f"{k}-shot {name:32s} " + "  ".join(f"{100 * m:5.1f}" for m, _ in steps), flush=True)
    res["wall_s"] = time.time() - t0
    lines = [f"{args.ways}-way, {args.tasks} tasks from the 20 evaluation alphabets, accuracy (%) +- 95 % CI after "
             f"0..4 on-chip SGD steps of the readout (lr {model.cfg.inner_lr}); 32-bit software: "
             f"`{float_weights.name}`, other rows: `{weights.name}`; the same tasks in every row.", "",
             "| shots | model | 0 steps | 1 | 2 | 3 | 4 |", "|---|---|---|---|---|---|---|"]
    for key, row in res["rows"].items():
        k, name = key.split(" | ")
        lines.append(f"| {k} | {name} | " + " | ".join(f"{100 * c['accuracy']:.1f} +- {100 * c['ci95']:.1f}"
                                                      for c in row) + " |")
    lines += ["", f"Command: `{res['command']}` ({res['wall_s'] / 60:.1f} min)."]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "compare.json").write_text(json.dumps(res, indent=2))
    print("\n".join(lines))
    print(f"wrote {out / 'table.md'} and {out / 'compare.json'}")
    return 0


# ------------------------------------------------------------------------------------------------- sweep
def sweep_conditions(quick: bool):
    """(group, x label, x, condition label, ChipProtocol) of every sweep point."""
    from pcmeta.agents.maml_chip import ChipProtocol

    times = ["1s", "1h", "1d", "1y"] if quick else list(TIMES)
    pts = []
    for tname in times:
        t = TIMES[tname]
        ta = min(t, 60.0)
        pts.append(("time", "time since programming (s)", t, "no drift compensation",
                    ChipProtocol(pcm=_pcm(), t_adapt_s=ta, t_query_s=t)))
        pts.append(("time", "time since programming (s)", t, "global drift compensation",
                    ChipProtocol(pcm=_pcm(drift_compensation="global"), t_adapt_s=ta, t_query_s=t)))
        pts.append(("time", "time since programming (s)", t, "re-adapted at that time (4 steps, new support)",
                    ChipProtocol(pcm=_pcm(), t_adapt_s=ta, t_query_s=t, readapt=True)))
        pts.append(("time", "time since programming (s)", t,
                    f"readout on its own crossbar (w_max {READOUT_W_MAX:g}), no compensation",
                    ChipProtocol(pcm=_pcm(), t_adapt_s=ta, t_query_s=t, readout_pcm=_pcm(w_max=READOUT_W_MAX))))
    for s in ([0, 1, 4] if quick else [0, 0.5, 1, 2, 4]):
        pts.append(("prog_noise", "programming-noise scale", s, "PCM 1 min", ChipProtocol(pcm=_pcm(prog_noise_scale=s))))
    for b in ([2, 4, None] if quick else [2, 3, 4, 6, 8, None]):
        pts.append(("weight_bits", "weight bits (0 = float)", b or 0, "PCM 1 min",
                    ChipProtocol(pcm=_pcm(weight_bits=b))))
    for b in ([4, 8, None] if quick else [4, 6, 8, None]):
        pts.append(("adc_bits", "ADC bits (0 = ideal)", b or 0, "PCM 1 min", ChipProtocol(pcm=_pcm(adc_bits=b))))
    for w in ([1.0, 0.125] if quick else [1.0, 0.5, 0.25, 0.125]):
        pts.append(("readout_scale", "readout w_max (weight at g_max)", w, "PCM 1 day",
                    ChipProtocol(pcm=_pcm(), t_adapt_s=86400.0, readout_pcm=_pcm(w_max=w))))
    pts.append(("steps", "inner steps", None, "PCM 1 min", ChipProtocol(pcm=_pcm(), steps=4 if quick else 8)))
    pts.append(("steps", "inner steps", None, "4-bit software",
                ChipProtocol(substrate="software", bits=4, t_adapt_s=0.0, steps=4 if quick else 8)))
    for label, kw in (("whole network on PCM", {}), ("conv on PCM, readout digital", {"readout_on_chip": False}),
                      ("readout alone on PCM", {"conv_on_chip": False, "bits": 4})):
        for tname in (["1d"] if quick else ["1min", "1d"]):
            pts.append(("placement", "time since programming (s)", TIMES[tname], label,
                        ChipProtocol(pcm=_pcm(), t_adapt_s=TIMES[tname], **kw)))
    return pts


def _sweep(args) -> int:
    import csv

    from pcmeta.agents.maml import MAML, mean_ci95
    from pcmeta.agents.maml_chip import ChipProtocol, chip_cost, evaluate_on_chip

    model, pool, weights = _setup(args)
    tasks = min(args.tasks, 16) if args.quick else args.tasks
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = _cmdline(args)
    rows = []
    pts = sweep_conditions(args.quick)
    t0 = time.time()
    from tqdm.auto import tqdm

    for group, xlabel, x, label, proto in tqdm(pts, desc="sweep", unit="point"):
        r = evaluate_on_chip(model, _sampler(pool, args, 5, args.seed), tasks, proto, seed=args.seed)
        if group == "steps":
            for s in range(r["acc_steps"].shape[1]):
                m, c = mean_ci95(r["acc_steps"][:, s])
                rows.append(dict(group=group, x_label=xlabel, x=s, condition=label, accuracy=m, ci95=c, tasks=tasks))
        else:
            rows.append(dict(group=group, x_label=xlabel, x=x, condition=label, accuracy=r["mean"], ci95=r["ci95"],
                             tasks=tasks))
    if args.noise_aware_weights:
        na = MAML.from_weights(args.noise_aware_weights)
        for tname in ("1d", "1mo"):
            for label, m in (("software-only meta-training", model), ("noise-aware meta-training", na)):
                r = evaluate_on_chip(m, _sampler(pool, args, 5, args.seed), tasks,
                                     ChipProtocol(pcm=_pcm(), t_adapt_s=TIMES[tname]), seed=args.seed)
                rows.append(dict(group="noise_aware", x_label="time since programming (s)", x=TIMES[tname],
                                 condition=label, accuracy=r["mean"], ci95=r["ci95"], tasks=tasks))
    for r in rows:
        r["command"] = cmd
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cost = chip_cost(model, _sampler(pool, args, 5, args.seed + 1), ChipProtocol(pcm=_pcm()), seed=args.seed)
    digital = {ph: {"energy_J": cost[ph]["macs"] * DIGITAL["mac_J"] + cost[ph]["programming_events"] *
                    DIGITAL["write_J"],
                    "latency_s": cost[ph]["macs"] / DIGITAL["macs_per_s"]} for ph in ("adaptation", "inference")}
    (out / "cost.json").write_text(json.dumps({"pcm": cost, "digital_baseline": digital,
                                               "digital_constants": DIGITAL}, indent=2))
    pngs = _plots(rows, out)
    md = _markdown(rows, cost, digital, cmd, tasks, weights, time.time() - t0)
    (out / "sweep.md").write_text(md)
    print(md)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'cost.json'}, " + ", ".join(str(p) for p in pngs))
    return 0


def _plots(rows, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    titles = {"time": "Accuracy vs time since programming", "prog_noise": "Accuracy vs programming noise",
              "weight_bits": "Accuracy vs weight bits", "adc_bits": "Accuracy vs ADC resolution",
              "steps": "Accuracy vs on-chip inner steps", "placement": "What lives on PCM",
              "noise_aware": "Noise-aware vs software-only meta-training",
              "readout_scale": "Accuracy vs the readout's crossbar scale"}
    paths = []
    for group in dict.fromkeys(r["group"] for r in rows):
        rs = [r for r in rows if r["group"] == group]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label in dict.fromkeys(r["condition"] for r in rs):
            pts = sorted((r for r in rs if r["condition"] == label), key=lambda r: r["x"])
            x = np.array([p["x"] for p in pts], float)
            y = np.array([100 * p["accuracy"] for p in pts])
            c = np.array([100 * (p["ci95"] if p["ci95"] == p["ci95"] else 0.0) for p in pts])
            ax.plot(x, y, "o-", label=label)
            ax.fill_between(x, y - c, y + c, alpha=0.2)
        if group in ("time", "placement", "noise_aware"):
            ax.set_xscale("log")
        elif group == "readout_scale":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(rs[0]["x_label"])
        ax.set_ylabel("5-way 5-shot accuracy (%)")
        ax.set_title(f"{titles.get(group, group)} ({rs[0]['tasks']} tasks, 95 % CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"sweep_{group}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def _markdown(rows, cost, digital, cmd, tasks, weights, wall_s) -> str:
    lines = ["# Omniglot on the simulated PCM chip: sweep", "",
             f"5-way 5-shot, {tasks} tasks per point from the evaluation alphabets, 4 on-chip steps unless the "
             f"row says otherwise; PCM: 4-bit weights on the fixed [-1, 1) grid (w_max 1), 1/16 update grid, "
             f"8-bit DAC/ADC, aihwkit PCM statistics; adapted 1 min after programming unless the row says otherwise. "
             f"Weights `{Path(weights).name}`. Command: `{cmd}` ({wall_s / 60:.1f} min).", "",
             "| group | x | condition | accuracy (%) | 95 % CI |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['x']:g} | {r['condition']} | {100 * r['accuracy']:.2f} | "
                     f"{100 * r['ci95']:.2f} |")
    lines += ["", "## Estimated cost of one task on the chip vs a digital baseline", "",
              "| phase | MVMs | MACs | programming events | PCM energy (J) | PCM latency (s) | digital energy (J) "
              "| digital latency (s) |", "|---|---|---|---|---|---|---|---|"]
    for ph in ("programming", "adaptation", "inference"):
        c = cost[ph]
        d = digital.get(ph, {"energy_J": float("nan"), "latency_s": float("nan")})
        lines.append(f"| {ph} | {c['mvms']} | {c['macs']} | {c['programming_events']} | {c['energy_J']:.3g} | "
                     f"{c['latency_s']:.3g} | {d['energy_J']:.3g} | {d['latency_s']:.3g} |")
    lines += ["", f"Adaptation = support pass ({cost['support']} images) + {cost['steps']} on-chip updates of the "
              f"readout; inference = {cost['queries']} query images. PCM constants: `pcmeta/hardware/energy.py`; "
              f"digital baseline constants: `pcmeta/demos/omniglot_chip.py` (DIGITAL)."]
    return "\n".join(lines) + "\n"
