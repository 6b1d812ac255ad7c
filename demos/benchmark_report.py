"""The leaderboard of ``pcmeta benchmark report``: a markdown table per benchmark and a plot of the metric vs
drift time (one line per agent x deployment x compensation, software as horizontal reference lines).

Table rows: agent, deployment (with its drift compensation), then the metric at each drift time (software:
one column), as ``mean +- 95 % CI`` (accuracy in %), the tasks per point, and the adaptation cost at the
row's first time (estimated energy per adaptation, programming events) and footprint (devices), and the first
10 hex digits of the weights file's SHA-256 (empty: no file; "unknown": records of an older pcmeta). Several
seeds of one point are pooled (their per-task values together). An agent whose records on one benchmark were
made with different weights files is refused (ValueError naming the fingerprints), never mixed into one table.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from pcmeta.agents.benchmark_grid import load_records
from pcmeta.agents.evaluation import mean_ci95
from pcmeta.hardware.times import format_time


def _row_key(r: dict) -> tuple[str, str]:
    comp = r.get("compensation")
    dep = r["deployment"] + (f" ({comp} comp.)" if comp and comp != "none" else "")
    return r["agent"], dep


def _pool(recs: list[dict]) -> tuple[float, float, int]:
    vals = [v for r in recs for v in r.get("values", [])]
    m, ci = mean_ci95(vals)
    return m, ci, len(vals)


def _fmt(m: float, ci: float, metric: str) -> str:
    if not np.isfinite(m):
        return "n/a"
    if metric == "accuracy":
        return f"{100 * m:.2f} ± {100 * ci:.2f}" if np.isfinite(ci) else f"{100 * m:.2f}"
    return f"{m:.4f} ± {ci:.4f}" if np.isfinite(ci) else f"{m:.4f}"


def _weights_of(bench: str, recs: list[dict]) -> dict[str, str]:
    """Per agent, its weights fingerprint cell; ValueError where its records hold several."""
    shas: dict[str, set] = defaultdict(set)
    for r in recs:
        shas[r["agent"]].add(r.get("weights_sha256", "unknown"))
    for agent, found in shas.items():
        if len(found) > 1:
            named = ", ".join(sorted("none" if s is None else s[:10] for s in found))
            raise ValueError(f"{bench}: the records of {agent} were made with different weights files ({named}); "
                             f"run the stale ones again (pcmeta benchmark run ... --rerun-stale)")
    return {a: "" if f == {None} else next(iter(f))[:10] for a, f in shas.items()}


def _table(bench: str, recs: list[dict]) -> tuple[list[str], dict]:
    metric = recs[0]["metric"]
    weights = _weights_of(bench, recs)
    times = sorted({r["time_s"] for r in recs if r["deployment_config"]["substrate"] != "software"})
    rows: dict = defaultdict(lambda: defaultdict(list))
    for r in recs:
        t = "sw" if r["deployment_config"]["substrate"] == "software" else r["time_s"]
        rows[_row_key(r)][t].append(r)
    unit = " (%)" if metric == "accuracy" else ""
    head = ["agent", "deployment", "software", *(format_time(t) for t in times), "tasks", "adapt energy (J)",
            "adapt pulses", "devices", "weights"]
    lines = [f"### {bench}: {metric}{unit}, mean ± 95 % CI over tasks", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = max if recs[0].get("metric") == "accuracy" else min
    order = sorted(rows, key=lambda k: -best(_pool(v)[0] for v in rows[k].values()) if best is max
                   else best(_pool(v)[0] for v in rows[k].values()))
    curves = {}
    for key in order:
        cells = rows[key]
        first = cells.get("sw") or cells[min(t for t in cells)]
        cost, foot = first[0].get("cost", {}).get("adapt", {}), first[0].get("footprint", {})
        n = max(_pool(v)[2] for v in cells.values())
        vals = [_fmt(*_pool(cells["sw"])[:2], metric) if "sw" in cells else ""]
        vals += [_fmt(*_pool(cells[t])[:2], metric) if t in cells else "" for t in times]
        e = cost.get("energy_J", 0.0)
        lines.append("| " + " | ".join([key[0], key[1], *vals, str(n), f"{e:.3g}" if e else "0",
                                        f"{cost.get('programming_events', 0):.0f}",
                                        f"{foot.get('devices', 0):.0f}", weights[key[0]]]) + " |")
        curves[key] = {t: _pool(v)[:2] for t, v in cells.items()}
    return lines, {"metric": metric, "curves": curves}


def _plot(bench: str, data: dict, path: Path) -> None:
    """Metric vs drift time: all rows (left) and, for accuracy, a zoom on the top 4 points (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcmeta.hardware.times import TIMES

    metric, scale = data["metric"], (100.0 if data["metric"] == "accuracy" else 1.0)
    zoom = metric == "accuracy"
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12 if zoom else 7, 4.2), squeeze=False)
    for ax in axes[0]:
        for i, (key, pts) in enumerate(data["curves"].items()):
            color, label = f"C{i % 10}", f"{key[0]} / {key[1]}"
            if "sw" in pts:
                ax.axhline(pts["sw"][0] * scale, color=color, ls=":", lw=1, label=label)
            ts = sorted(t for t in pts if t != "sw")
            if ts:
                m = np.array([pts[t][0] for t in ts]) * scale
                ci = np.nan_to_num(np.array([pts[t][1] for t in ts]) * scale)
                ax.errorbar(ts, m, yerr=ci, color=color, marker="o", ms=3, capsize=2, label=label)
        ax.set_xscale("log")
        ax.set_xticks(list(TIMES.values()), list(TIMES))
        ax.set_xlabel("time after programming")
        ax.set_ylabel("accuracy (%)" if metric == "accuracy" else metric)
        if not zoom:
            ax.set_yscale("log")
    axes[0][0].set_title(f"{bench} (dotted: software)")
    axes[0][0].legend(fontsize=6, loc="best")
    if zoom:
        top = max(v[0] for pts in data["curves"].values() for v in pts.values()) * scale
        axes[0][1].set_ylim(top - 4.0, top + 0.5)
        axes[0][1].set_title("zoom on the top 4 points")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """``leaderboard.md`` and one ``<benchmark>.png`` per benchmark into ``out_dir``; returns the paths."""
    recs = load_records(results)
    if not recs:
        raise ValueError("no benchmark records found in the given paths")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_bench[r["benchmark"]].append(r)
    lines = ["# pcmeta leaderboard", "", f"{len(recs)} records; generated by `pcmeta benchmark report`.", ""]
    written = []
    for bench in sorted(by_bench):
        table, data = _table(bench, by_bench[bench])
        png = out / f"{bench}.png"
        _plot(bench, data, png)
        written.append(png)
        lines += table + ["", f"![{bench}]({png.name})", ""]
    md = out / "leaderboard.md"
    md.write_text("\n".join(lines))
    return [md, *written]
