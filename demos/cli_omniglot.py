"""CLI of the Omniglot area: ``pcmeta data omniglot``, ``pcmeta omniglot train|eval``, ``pcmeta bench maml``.

``omniglot eval`` lives in :mod:`pcmeta.demos.omniglot_eval`, ``omniglot compare|sweep`` in
:mod:`pcmeta.demos.omniglot_chip`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pcmeta.demos import omniglot_eval
from pcmeta.demos.options import write_result
from pcmeta.runs import add_run_folder_arguments

PRESET_NAMES = ("paper-5w5s", "paper-5w1s", "classic-5w1s", "classic-20w1s")


def register(groups) -> None:
    p = groups["data"].add_parser("omniglot", help="download the official Omniglot zips (md5-checked)")
    p.add_argument("--data-dir", help="target folder (default: $PCMETA_DATA_DIR or ~/.cache/pcmeta/omniglot)")
    p.add_argument("--force", action="store_true", help="download again even if the zips are present")
    p.set_defaults(func=_data)

    p = groups["omniglot"].add_parser("train", help="meta-train the CNN with MAML (resumable; data-parallel under "
                                      "torchrun --nproc-per-node N -m pcmeta omniglot train ...)")
    p.add_argument("--preset", default="paper-5w5s", help=f"one of {', '.join(PRESET_NAMES)}")
    p.add_argument("--run-dir", help="output folder (default runs/omniglot-<preset>[-<bits>bit]-s<seed>)")
    add_run_folder_arguments(p)  # --resume, --overwrite, --allow-changed-settings (pcmeta.runs)
    p.add_argument("--iterations", type=int, help="total meta-iterations (default: the preset's)")
    p.add_argument("--meta-batch", type=int, help="tasks per meta-iteration (default: the preset's)")
    p.add_argument("--bits", type=int, help="meta-train the SoftwareSubstrate(bits=B) model (4: the paper's "
                   "4-bit software model, straight-through)")
    p.add_argument("--quantize", choices=("all", "conv"), help="with --bits: quantize conv layers and readout "
                   "(all, default) or the conv layers only")
    p.add_argument("--first-order", action="store_true", help="first-order MAML")
    p.add_argument("--noise-aware", action="store_true", help="meta-train through the PCM model "
                   "(PCMSubstrate.transform: --bits quantization, programming noise, drift to --train-time, read "
                   "noise; straight-through)")
    p.add_argument("--train-time", default="1d", help="with --noise-aware: time after programming of the "
                   "PCM model (1min, 1h, 1d, ... or seconds; default 1d)")
    p.add_argument("--init-weights", metavar="PATH", help="start from these weights (.npz) instead of a random "
                   "init, e.g. quantization-aware fine-tuning of a float model")
    p.add_argument("--rescale-conv", action="store_true", help="with --init-weights: scale each conv layer to "
                   "max|W| = 0.875 (function-preserving in the paper CNN: ReLU then affine-free batch-norm) so "
                   "that the weights use the 4-bit grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="Omniglot folder (default: $PCMETA_DATA_DIR or ~/.cache/pcmeta/omniglot)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=250, help="iterations between checkpoints")
    p.add_argument("--eval-every", type=int, default=500, help="iterations between validation evaluations")
    p.add_argument("--eval-tasks", type=int, default=200, help="tasks per validation evaluation")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_train)

    omniglot_eval.register(groups)

    p = groups["bench"].add_parser("maml", help="meta-iterations/s: pcmeta's vectorised MAML vs a per-task loop")
    p.add_argument("--presets", default="paper-5w5s,classic-5w1s", help="comma-separated presets")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--procs", metavar="N,M", help="instead: meta-iterations/s of data-parallel training with N, M, "
                   "... processes (torchrun, gloo, one thread each), e.g. 1,2")
    p.add_argument("--data-dir", help="Omniglot folder (default: $PCMETA_DATA_DIR or ~/.cache/pcmeta/omniglot)")
    p.add_argument("--json", metavar="OUT")
    p.set_defaults(func=_bench)


def check_device(device: str) -> None:
    """ValueError unless ``device`` is a torch device available here."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")


def _data(args) -> int:
    from pcmeta.tasks.omniglot import OmniglotDataError, download, load_omniglot

    try:
        d = download(args.data_dir, force=args.force)
        for subset in ("background", "evaluation"):
            data = load_omniglot(subset, d, progress=True)
            print(f"{subset}: {len(data.alphabets)} alphabets, {data.n_characters} characters, "
                  f"{data.images.shape[1]} drawings each")
    except OmniglotDataError as exc:
        print(f"pcmeta: error: {exc}", file=sys.stderr)
        return 2
    print(f"Omniglot ready in {d}")
    return 0


def _train(args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    check_device(args.device)
    from pcmeta.agents.maml import Trainer, preset
    from pcmeta.hardware.times import parse_time

    extra = dict(train_substrate="pcm", train_time_s=parse_time(args.train_time)) if args.noise_aware else {}
    cfg = preset(args.preset, iterations=args.iterations, meta_batch=args.meta_batch, bits=args.bits,
                 first_order=True if args.first_order else None, quantize=args.quantize, **extra)
    name = (f"omniglot-{args.preset}" + (f"-{args.bits}bit" if args.bits else "")
            + ("-convq" if args.quantize == "conv" else "") + ("-noiseaware" if args.noise_aware else "")
            + f"-s{args.seed}")
    run_dir = Path(args.run_dir or Path("runs") / name)
    init = None
    if args.init_weights:
        from pcmeta.agents.maml import load_weights, rescale_conv_to_range

        init, _ = load_weights(args.init_weights)
        if args.rescale_conv:
            init = rescale_conv_to_range(init, cfg)
    elif args.rescale_conv:
        raise ValueError("--rescale-conv needs --init-weights")
    if args.allow_changed_settings and not args.resume:
        raise ValueError("--allow-changed-settings goes with --resume")
    from pcmeta.agents import distributed

    # under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the Trainer joins the process group and shards the
    # meta-batch; rank 0 alone holds the run folder and prints
    try:
        tr = Trainer(cfg, run_dir, args.data_dir, seed=args.seed, device=args.device,
                     checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                     eval_tasks=args.eval_tasks, init=init)
        main = tr.dist.is_main
        if tr.dist.enabled and main:
            print(f"data-parallel: {tr.dist.world_size} processes, {cfg.meta_batch // tr.dist.world_size} of the "
                  f"{cfg.meta_batch} tasks of each meta-batch per process")
        tr.open_run(resume=args.resume, overwrite=args.overwrite)  # lock; another run refused unless resumed/deleted
        if args.resume:
            if tr.resume(allow_changed_settings=args.allow_changed_settings):
                if main:
                    print(f"resumed {run_dir} at iteration {tr.state.iteration}")
            elif main:
                print(f"no checkpoint in {run_dir}; starting from scratch")
        out = tr.train(progress=not args.no_progress)
    finally:
        distributed.destroy()
    if main:
        last = out["history"][-1] if out["history"] else {}
        print(f"done: {out['iteration']} iterations; last: {json.dumps(last)}")
        print(f"weights: {run_dir / 'weights.npz'}   checkpoint: {tr.ckpt_path}")
    return 0


def _bench(args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    from pcmeta.agents.maml import bench_meta_iterations, preset

    names = [p.strip() for p in args.presets.split(",") if p.strip()]
    cfgs = [preset(n) for n in names]  # validates the names before any work
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.procs:
        return _bench_procs(args, names)
    results = {}
    print(f"torch CPU threads: {torch.get_num_threads()} (--threads); the two implementations run in turn, "
          f"{args.iterations} timed iterations each (medians)")
    print(f"{'preset':<14} {'meta-batch':>10} {'steps':>5} {'order':>6} {'pcmeta it/s':>12} {'loop it/s':>10} "
          f"{'speedup':>8} {'speedup (CPU time)':>19}")
    for name, cfg in zip(names, cfgs):
        r = bench_meta_iterations(cfg, args.iterations)
        r.update(meta_batch=cfg.meta_batch, inner_steps=cfg.inner_steps, adapt=cfg.adapt,
                 second_order=not cfg.first_order, threads=args.threads)
        results[name] = r
        print(f"{name:<14} {cfg.meta_batch:>10} {cfg.inner_steps:>5} {'2nd' if not cfg.first_order else '1st':>6} "
              f"{r['vectorised_it_s']:>12.3f} {r['loop_it_s']:>10.3f} {r['speedup']:>7.2f}x "
              f"{r['speedup_cpu']:>18.2f}x", flush=True)
    write_result(args, {"presets": results})
    return 0


def _bench_procs(args, names: list[str]) -> int:
    from pcmeta.agents.maml.distributed_bench import bench_world_sizes

    try:
        worlds = tuple(int(w) for w in args.procs.split(",") if w.strip())
    except ValueError:
        raise ValueError(f"--procs must be comma-separated process counts, got {args.procs!r}") from None
    if not worlds or min(worlds) < 1:
        raise ValueError(f"--procs must be counts >= 1, got {args.procs!r}")
    results = {}
    print(f"data-parallel meta-training, one thread per process, {args.iterations} timed iterations")
    for name in names:
        r = bench_world_sizes(name, worlds, args.iterations, args.data_dir)
        results[name] = {str(w): v for w, v in r.items()}
        base = r[worlds[0]]
        print(f"{name:<14} " + "  ".join(f"{w} proc: {v:.3f} it/s ({v / base:.2f}x)" for w, v in r.items()),
              flush=True)
    write_result(args, {"procs": results})
    return 0
