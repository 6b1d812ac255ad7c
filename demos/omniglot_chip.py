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
import os
import time
from pathlib import Path
from typing import NamedTuple

from pcmeta.demos.options import command_line, int_list, int_range, nonneg_int, positive_int, write_result
from pcmeta.files import file_sha256, write_json
from pcmeta.hardware.times import TIMES

#: Digital baseline for the energy comparison (assumptions, order of magnitude): an 8-bit MAC including
#: the on-chip SRAM weight fetch costs ~1 pJ in a 14-16 nm digital accelerator (Horowitz, ISSCC 2014:
#: 8-bit multiply 0.2 pJ + add 0.03 pJ at 45 nm, 8 kB SRAM read 5-10 pJ per 64 bit, scaled), 256 MACs per
#: cycle at 1 GHz; a weight write to SRAM ~1 pJ.
DIGITAL = {"mac_J": 1e-12, "macs_per_s": 256e9, "write_J": 1e-12}
#: Weights of the chip rows (meta-trained through the 4-bit quantizer) and of the 32-bit software row.
CHIP_WEIGHTS, FLOAT_WEIGHTS = "paper_5w5s_4bit", "paper_5w5s"


def register(groups) -> None:
    p = groups["omniglot"].add_parser("compare", help="the paper's software vs PCM table after 0..4 on-chip steps")
    _common(p, tasks=1000)
    p.add_argument("--shots", type=int_list(1), default=[5, 1], metavar="K[,K...]",
                   help="comma-separated support images per class, each >= 1 (default 5,1)")
    p.add_argument("--float-weights", metavar="NAME|PATH", help="the 32-bit software model (default: the shipped "
                   f"float {FLOAT_WEIGHTS}); the other rows use --weights (the 4-bit model)")
    p.add_argument("--out", default="results/omniglot_compare", help="output folder (table.md, compare.json)")
    p.set_defaults(func=_compare)

    p = groups["omniglot"].add_parser("sweep", help="accuracy vs drift time, noise, bits, ADC, steps; energy")
    _common(p, tasks=300)
    p.add_argument("--quick", action="store_true", help="few tasks and a reduced grid (about 2 minutes)")
    p.add_argument("--out", default="results/omniglot_sweep", help="output folder (CSV, PNGs, sweep.md)")
    p.add_argument("--noise-aware-weights", metavar="NAME|PATH",
                   help="weights meta-trained with the PCM model in the forward pass, compared with --weights")
    p.set_defaults(func=_sweep)


def _common(p, tasks: int) -> None:
    p.add_argument("--weights", metavar="NAME|PATH", help=f"model .npz, a shipped name or 'authors' (default: the "
                   f"shipped 4-bit paper model, {CHIP_WEIGHTS})")
    p.add_argument("--tasks", type=positive_int, default=tasks, help=f"tasks per condition, >= 1 (default {tasks})")
    p.add_argument("--ways", type=int_range(2), default=5, help="classes per task, >= 2 (default 5; must match the "
                   "readout of the weights)")
    p.add_argument("--queries", type=positive_int, default=5, help="query images per class, >= 1 (default 5)")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the tasks and the chips, >= 0 (default 0)")


def _setup(args):
    import torch

    from pcmeta.agents.maml import MAML
    from pcmeta.agents.shipped import resolve_weights
    from pcmeta.tasks.omniglot import class_pool

    torch.set_num_threads(1)
    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    weights = resolve_weights(args.weights or CHIP_WEIGHTS, "omniglot")
    model = MAML.from_weights(weights)
    if model.cfg.arch != "paper":
        raise ValueError(f"{weights}: the chip protocol needs the paper CNN (readout-only adaptation)")
    if args.ways != model.cfg.n_way:
        raise ValueError(f"--ways {args.ways} does not match the {model.cfg.n_way}-way readout of {weights}")
    pool = class_pool("paper", "test", args.data_dir)
    return model, pool, weights


def _sampler(pool, args, shots: int, seed: int):
    from pcmeta.tasks.omniglot import TaskSampler

    return TaskSampler(pool, args.ways, shots, args.queries, seed=seed)


def chip(t: float = 60.0, t_query: float | None = None, preset: str = "paper", readout=None, **config):
    """The omniglot ``preset`` (the paper's chip: 4-bit weights, w_max 1 for every layer) adapted ``t`` s and
    queried ``t_query`` s after programming, with ``config`` overrides (None values kept: e.g. ideal ADC) and
    ``readout`` (a :class:`~pcmeta.hardware.Placement` for the readout, see ``place_readout``)."""
    from dataclasses import replace

    from pcmeta.agents.maml import place_readout
    from pcmeta.hardware import Deployment

    base = Deployment.preset(preset, family="omniglot")
    dep = replace(base, config={**base.config, **config}, time_s=t, query_time_s=t_query)
    return dep if readout is None else place_readout(dep, readout)


def _own_readout(w_max):
    from pcmeta.agents.maml import READOUT
    from pcmeta.hardware import Placement

    return Placement(READOUT, "own", {"w_max": w_max})


def _readout_w_max(model) -> float:
    """The "auto" crossbar scale of ``model``'s deployed readout (the pcm preset's readout w_max)."""
    from pcmeta.hardware.deployment import auto_scale

    return auto_scale(model.deployable_params()["readout"])


# ----------------------------------------------------------------------------------------------- compare
def compare_conditions(model) -> dict:
    """Row label -> Deployment of ``omniglot compare`` (the readout-scale rows: the pcm preset)."""
    from pcmeta.hardware import Deployment

    w = _readout_w_max(model)
    return {
        "32-bit software": Deployment.preset("software", family="omniglot"),
        "4-bit software": Deployment.preset("software-4bit", family="omniglot"),
        "PCM, 1 min": chip(60.0),
        "PCM, 1 day": chip(86400.0),
        "PCM, 1 day, global drift comp.": chip(86400.0, drift_compensation="global"),
        # beyond the paper: the readout on its own crossbar whose g_max maps to |w| = w (the "pcm" preset)
        f"PCM, 1 min, readout w_max {w:g}": chip(60.0, preset="pcm"),
        f"PCM, 1 day, readout w_max {w:g}": chip(86400.0, preset="pcm"),
    }


def _compare(args) -> int:
    from pcmeta.agents.maml import MAML, evaluate_on_chip, mean_ci95
    from pcmeta.agents.shipped import resolve_weights

    model, pool, weights = _setup(args)
    float_weights = resolve_weights(args.float_weights or FLOAT_WEIGHTS, "omniglot")
    float_model = MAML.from_weights(float_weights)
    shots = list(args.shots)
    out = Path(args.out)
    conditions = compare_conditions(model)
    res = {"weights": str(weights), "float_weights": str(float_weights), "tasks": args.tasks, "rows": {},
           "deployments": {name: dep.to_dict() for name, dep in conditions.items()}}
    t0 = time.time()
    for k in shots:
        for name, dep in conditions.items():
            m = float_model if name.startswith("32-bit") else model
            r = evaluate_on_chip(m, _sampler(pool, args, k, args.seed), args.tasks, dep, seed=args.seed,
                                 progress=True)
            steps = [mean_ci95(r["acc_steps"][:, s]) for s in range(r["acc_steps"].shape[1])]
            res["rows"][f"{k}-shot | {name}"] = [{"accuracy": m, "ci95": c} for m, c in steps]
            print(f"{k}-shot {name:32s} " + "  ".join(f"{100 * m:5.1f}" for m, _ in steps), flush=True)
    res["wall_s"] = time.time() - t0
    lines = [f"{args.ways}-way, {args.tasks} tasks from the 20 evaluation alphabets, accuracy (%) +- 95 % CI after "
             f"0..4 on-chip SGD steps of the readout (lr {model.cfg.inner_lr}); 32-bit software: "
             f"`{float_weights.name}`, other rows: `{weights.name}`; the same tasks in every row. PCM rows: the "
             f"`paper` deployment (every layer on w_max 1), the readout w_max rows the `pcm` one.", "",
             "| shots | model | 0 steps | 1 | 2 | 3 | 4 |", "|---|---|---|---|---|---|---|"]
    for key, row in res["rows"].items():
        k, name = key.split(" | ")
        lines.append(f"| {k} | {name} | " + " | ".join(f"{100 * c['accuracy']:.1f} +- {100 * c['ci95']:.1f}"
                                                      for c in row) + " |")
    lines += ["", f"Command: `{command_line(args)}` ({res['wall_s'] / 60:.1f} min)."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    write_result(args, res, out / "compare.json")
    print(f"wrote {out / 'table.md'}")
    return 0


# ------------------------------------------------------------------------------------------------- sweep
class Point(NamedTuple):
    """One sweep point: a deployment, the protocol's steps and re-adaptation, the model (None: --weights)."""

    group: str
    x_label: str
    x: float | None
    condition: str
    deployment: object
    steps: int = 4
    readapt: bool = False
    model: object = None


def _time_points(quick: bool, w: float) -> list[Point]:
    pts, xl = [], "time since programming (s)"
    for tname in (["1s", "1h", "1d", "1y"] if quick else list(TIMES)):
        t = TIMES[tname]
        ta = min(t, 60.0)
        pts += [Point("time", xl, t, "no drift compensation", chip(ta, t)),
                Point("time", xl, t, "global drift compensation", chip(ta, t, drift_compensation="global")),
                Point("time", xl, t, "re-adapted at that time (4 steps, new support)", chip(ta, t), readapt=True),
                Point("time", xl, t, f"readout on its own crossbar (w_max {w:g}), no compensation",
                      chip(ta, t, preset="pcm"))]
    return pts


def sweep_conditions(quick: bool, model) -> list[Point]:
    """Every sweep point (:class:`Point`); the PCM points are the ``paper`` deployment with one change."""
    from pcmeta.agents.maml import READOUT
    from pcmeta.hardware import Deployment, Placement

    pts = _time_points(quick, _readout_w_max(model))
    for s in ([0, 1, 4] if quick else [0, 0.5, 1, 2, 4]):
        pts.append(Point("prog_noise", "programming-noise scale", s, "PCM 1 min", chip(prog_noise_scale=s)))
    for b in ([2, 4, None] if quick else [2, 3, 4, 6, 8, None]):
        pts.append(Point("weight_bits", "weight bits (0 = float)", b or 0, "PCM 1 min", chip(weight_bits=b)))
    for b in ([4, 8, None] if quick else [4, 6, 8, None]):
        pts.append(Point("adc_bits", "ADC bits (0 = ideal)", b or 0, "PCM 1 min", chip(adc_bits=b)))
    for w in ([1.0, 0.125] if quick else [1.0, 0.5, 0.25, 0.125]):
        pts.append(Point("readout_scale", "readout w_max (weight at g_max)", w, "PCM 1 day",
                         chip(86400.0, readout=_own_readout(w))))
    n = 4 if quick else 8
    pts.append(Point("steps", "inner steps", None, "PCM 1 min", chip(), steps=n))
    pts.append(Point("steps", "inner steps", None, "4-bit software",
                     Deployment.preset("software-4bit", family="omniglot"), steps=n))
    rules = {"whole network on PCM": None,
             "conv on PCM, readout digital": (Placement(READOUT, "digital"),),
             "readout alone on PCM": (Placement("conv*", "digital", {"bits": 4}, seed_offset=2),)}
    for label, placements in rules.items():
        for tname in (["1d"] if quick else ["1min", "1d"]):
            dep = chip(TIMES[tname])
            pts.append(Point("placement", "time since programming (s)", TIMES[tname], label,
                             dep if placements is None else dep.with_(placements=placements)))
    return pts


def _check_done_points(done_dir: Path, settings: dict, pts: list[Point]) -> None:
    """Refuse a sweep folder whose points were made with other settings (arguments, weights files by SHA-256)
    or under another deployment than the code's now; else record the settings."""
    stamp = done_dir / "settings.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            raise ValueError(f"{done_dir} holds sweep points made with other settings ({', '.join(differ)}); use "
                             f"another --out or delete that folder")
    for i, pt in enumerate(pts):
        f = done_dir / f"{i}.json"
        if f.is_file() and json.loads(f.read_text())[0]["deployment"] != pt.deployment.to_json():
            raise ValueError(f"{f} was made under another deployment than the code's now for that point "
                             f"({pt.condition}); use another --out or delete that folder")
    write_json(stamp, settings)


def _sweep_rows(args, model, pool, tasks: int, cmd: str, weights: Path) -> list[dict]:
    from tqdm.auto import tqdm

    from pcmeta.agents.maml import MAML, evaluate_on_chip, mean_ci95
    from pcmeta.agents.shipped import resolve_weights

    pts = sweep_conditions(args.quick, model)
    if args.noise_aware_weights:
        na = MAML.from_weights(args.noise_aware_weights)
        for tname in ("1d", "1mo"):
            for label, m in (("software-only meta-training", model), ("noise-aware meta-training", na)):
                pts.append(Point("noise_aware", "time since programming (s)", TIMES[tname], label,
                                 chip(TIMES[tname]), model=m))
    # points are independent jobs: each one's rows go to points/<i>.json (a restart skips those there); under
    # torchrun (RANK / WORLD_SIZE) rank r runs the points i with i % WORLD_SIZE == r, and rank 0 gathers them
    done_dir = Path(args.out) / "points"
    done_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in ("out", "func", "argv", "json",
                                                                             "_group_parser")}
    settings["weights_sha256"] = file_sha256(weights)
    if args.noise_aware_weights:
        settings["noise_aware_weights_sha256"] = file_sha256(resolve_weights(args.noise_aware_weights, "omniglot"))
    _check_done_points(done_dir, settings, pts)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    mine = [i for i in range(len(pts)) if i % world == rank and not (done_dir / f"{i}.json").is_file()]
    for i in tqdm(mine, desc="sweep", unit="point", disable=rank != 0):
        pt = pts[i]
        r = evaluate_on_chip(pt.model or model, _sampler(pool, args, 5, args.seed), tasks, pt.deployment,
                             seed=args.seed, steps=pt.steps, readapt=pt.readapt)
        if pt.group == "steps":  # one row per number of steps
            xs = list(range(r["acc_steps"].shape[1]))
            accs = [mean_ci95(r["acc_steps"][:, s]) for s in xs]
        else:
            xs, accs = [pt.x], [(r["mean"], r["ci95"])]
        write_json(done_dir / f"{i}.json", [dict(group=pt.group, x_label=pt.x_label, x=x, condition=pt.condition,
                                                 accuracy=acc, ci95=ci, tasks=tasks,
                                                 deployment=pt.deployment.to_json(), command=cmd)
                                            for x, (acc, ci) in zip(xs, accs)])
    if world > 1:
        from pcmeta.agents import distributed

        distributed.from_env().barrier()
        if rank != 0:
            return []
    missing = [i for i in range(len(pts)) if not (done_dir / f"{i}.json").is_file()]
    if missing:
        raise RuntimeError(f"sweep points {missing} have no result in {done_dir}")
    return [row for i in range(len(pts)) for row in json.loads((done_dir / f"{i}.json").read_text())]


def _sweep(args) -> int:
    import csv

    from pcmeta.agents.maml import chip_cost

    model, pool, weights = _setup(args)
    tasks = min(args.tasks, 16) if args.quick else args.tasks
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = command_line(args)
    t0 = time.time()
    rows = _sweep_rows(args, model, pool, tasks, cmd, weights)
    if not rows:  # a torchrun rank other than 0: rank 0 writes the results
        return 0
    fields = ["group", "x_label", "x", "condition", "accuracy", "ci95", "tasks", "deployment", "command"]
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    dep = chip()
    cost = chip_cost(model, _sampler(pool, args, 5, args.seed + 1), dep, seed=args.seed)
    digital = {ph: {"energy_J": cost[ph]["macs"] * DIGITAL["mac_J"] + cost[ph]["programming_events"] *
                    DIGITAL["write_J"],
                    "latency_s": cost[ph]["macs"] / DIGITAL["macs_per_s"]} for ph in ("adaptation", "inference")}
    write_result(args, {"pcm": cost, "digital_baseline": digital, "digital_constants": DIGITAL,
                        "deployment": dep.to_dict()}, out / "cost.json")
    pngs = _plots(rows, out)
    md = _markdown(rows, cost, digital, cmd, tasks, weights, time.time() - t0)
    (out / "sweep.md").write_text(md)
    print(md)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, " + ", ".join(str(p) for p in pngs))
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
             f"row says otherwise; PCM: the `paper` deployment (4-bit weights on the fixed [-1, 1) grid, w_max 1 for "
             f"every layer, 1/16 update grid, 8-bit DAC/ADC, aihwkit PCM statistics) with the row's change; adapted 1 min after programming unless the row says otherwise. "
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
