"""CLI of the hardware area: ``pcmeta bench pcm``.

The measurements are :mod:`pcmeta.hardware.bench`'s (device statistics against the model, MVM error over time,
matmul throughput, layer speed against a bare ``nn.Linear``); this module prints them and writes ``--json``
through :func:`pcmeta.demos.options.write_result`.
"""
from __future__ import annotations

import argparse

from pcmeta.demos.options import write_result

#: the aihwkit figures of the relative MVM error (published), by compensation and time
AIHWKIT_MVM_ERROR = {"gdc": {"1s": 0.105, "1d": 0.14, "1y": 0.18}, "none": {"1y": 0.51}}


def register(groups) -> None:
    p = groups["bench"].add_parser("pcm", help="PCM crossbar MVM error vs time and matmul throughput")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="a small layer-speed table: widths 256 and 1024, batches 1 and 64, eager pipeline only")
    p.add_argument("--no-compile", action="store_true",
                   help="leave PCMConfig(compile=True) out of the layer-speed table (it compiles each layout first)")
    p.set_defaults(func=_bench_pcm)


def _print_device_statistics(stats: dict) -> None:
    print(f"device statistics, measured / model over {stats['devices_per_figure']} devices each:")
    for k, v in stats.items():
        if k != "devices_per_figure":
            print(f"    {k:34s} {v:.4f}")


def _print_mvm_error(err: dict, times) -> None:
    ref = AIHWKIT_MVM_ERROR
    print("(a) relative MVM error ||y - y_ideal|| / ||y_ideal||, 256x256, N(0,1) weights clipped at 2.5 sigma,")
    print("    inputs U(-1,1), aihwkit-like periphery (per-time read noise, 7-bit DAC, 9-bit ADC, out noise 0.06),")
    print("    mean of 5 programmings")
    print(f"    {'time':>5} | {'global comp.':>12} | {'aihwkit':>7} | {'no comp.':>9} | {'aihwkit':>7}")
    for k in times:
        r1, r2 = ref["gdc"].get(k), ref["none"].get(k)
        print(f"    {k:>5} | {100 * err['gdc'][k]:11.1f}% | {'%6.1f%%' % (100 * r1) if r1 else '':>7} | "
              f"{100 * err['none'][k]:8.1f}% | {'%6.1f%%' % (100 * r2) if r2 else '':>7}")


def _print_throughput(tp: dict) -> None:
    import torch

    print("(b) matmul throughput, batch 1024, 256x256, all effects on (4-bit, per-MVM read noise, drift at 1 d, GDC,")
    print(f"    8-bit DAC/ADC, output noise); median of {tp['reps']} runs of each, timed in turn, 1 thread, torch CPU "
          f"kernels {torch.backends.cpu.get_cpu_capability()}; target ratio >= 0.25")
    label = ("compile=True FAILED: eager, counter noise" if tp["compile_fallback"] else
             "compile=True (fused, counter noise)")
    rows = (("bare torch matmul", tp["bare_s"], ""),
            ("PCMSubstrate, default (eager, torch noise)", tp["eager_s"], f" | ratio {tp['ratio_eager']:.3f}"),
            (f"PCMSubstrate, {label}", tp["compiled_s"], f" | ratio {tp['ratio_compiled']:.3f} (first call, "
                                                          f"compilation included: {tp['compile_s']:.1f} s)"))
    for name, sec, tail in rows:
        print(f"    {name:<56} {1e3 * sec:6.2f} ms{tail}")


def _print_layer_speed(rows: list) -> None:
    import torch

    compiled = "per_time_compiled" in rows[0]
    print("(c) layer speed: PCMArray.matmul of a (batch x width) input on a width x width layer against a bare")
    print("    nn.Linear of the same shape; default periphery, global drift compensation, 1 day after programming;")
    print(f"    1 thread, torch CPU kernels {torch.backends.cpu.get_cpu_capability()}; ratio = bare / simulated, "
          "medians of runs timed in turn;")
    print("    targets (issue #18): >= 0.75 per-time and >= 0.4 per-MVM read noise at width >= 1024, batch >= 64;")
    print("    batch 1 under 4x the bare layer (ratio > 0.25)")
    cols = [("per_time", "per-time"), ("per_mvm", "per-MVM")]
    if compiled:
        cols += [("per_time_compiled", "per-time compiled"), ("per_mvm_compiled", "per-MVM compiled")]
    print(f"    {'width':>5} {'batch':>5} {'reps':>4} | {'bare':>9} | " + " | ".join(f"{t:>16}" for _, t in cols))
    for r in rows:
        cells = " | ".join(f"{_ms(r[k]['s'])} {r[k]['ratio']:6.3f}" for k, _ in cols)
        print(f"    {r['width']:5d} {r['batch']:5d} {r['reps']:4d} | {_ms(r['bare_s'])} | {cells}")


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:6.2f} ms" if seconds >= 1e-3 else f"{1e6 * seconds:6.1f} us"


def _bench_pcm(args: argparse.Namespace) -> int:
    import torch

    from pcmeta.hardware import bench

    torch.set_num_threads(1)
    stats = bench.device_statistics(seed=args.seed)
    _print_device_statistics(stats)
    err = bench.mvm_error_vs_time(seed=args.seed)
    _print_mvm_error(err, bench.TIMES)
    tp = bench.throughput_ratio(seed=args.seed)
    _print_throughput(tp)
    table = (dict(widths=bench.QUICK_WIDTHS, batches=bench.QUICK_BATCHES, compiled=False) if args.quick
             else dict(compiled=not args.no_compile))
    speed = bench.layer_speed_table(seed=args.seed, **table)
    _print_layer_speed(speed)
    write_result(args, {"mvm_rel_error": err, "throughput_ratio": tp["ratio_compiled"], "layer_speed": speed,
                        "throughput_ratio_eager": tp["ratio_eager"], "device_statistics": stats, "throughput": tp,
                        "timings_s": {"pcm_compiled": tp["compiled_s"], "pcm_eager": tp["eager_s"],
                                      "bare": tp["bare_s"]}})
    return 0
