"""CLI of the hardware area: ``pcmeta bench pcm``.

The measurements are :mod:`pcmeta.hardware.bench`'s (device statistics against the model, MVM error over time,
matmul throughput); this module prints them and writes ``--json`` through
:func:`pcmeta.demos.options.write_result`.
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
    p.set_defaults(func=_bench_pcm)


def _print_device_statistics(stats: dict) -> None:
    print(f"device statistics, measured / model over {stats['devices_per_figure']} devices each:")
    for k, v in stats.items():
        if k != "devices_per_figure":
            print(f"    {k:34s} {v:.4f}")


def _print_mvm_error(err: dict, times) -> None:
    ref = AIHWKIT_MVM_ERROR
    print("(a) relative MVM error ||y - y_ideal|| / ||y_ideal||, 256x256, N(0,1) weights clipped at 2.5 sigma,")
    print("    inputs U(-1,1), aihwkit-like periphery (per-time read noise, 8-bit DAC, 9-bit ADC, out noise 0.06),")
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
    write_result(args, {"mvm_rel_error": err, "throughput_ratio": tp["ratio_compiled"],
                        "throughput_ratio_eager": tp["ratio_eager"], "device_statistics": stats, "throughput": tp,
                        "timings_s": {"pcm_compiled": tp["compiled_s"], "pcm_eager": tp["eager_s"],
                                      "bare": tp["bare_s"]}})
    return 0
