"""CLI of the hardware area: ``pcmeta bench pcm``."""
from __future__ import annotations


def register(groups) -> None:
    p = groups["bench"].add_parser("pcm", help="PCM crossbar MVM error vs time and matmul throughput")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_bench_pcm)


def _bench_pcm(args) -> int:
    from pcmeta.hardware.bench import run_bench_pcm

    return run_bench_pcm(json_out=args.json, seed=args.seed)
