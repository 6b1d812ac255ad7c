"""CLI of the Omniglot area: ``pcmeta data omniglot``, ``pcmeta omniglot train|eval``, ``pcmeta bench maml``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

PRESET_NAMES = ("paper-5w5s", "paper-5w1s", "classic-5w1s", "classic-20w1s")
#: Weights shipped as package data; `pcmeta omniglot eval` uses them when no --checkpoint/--weights.
DEFAULT_WEIGHTS = "paper_5w5s.npz"
#: the default of ``omniglot eval --substrate pcm``: meta-trained through the 4-bit quantizer for the chip
#: (the float weights lose most of their small conv weights to the 4-bit grid: ~46 % there at 1 min)
DEFAULT_PCM_WEIGHTS = "paper_5w5s_4bit.npz"


def register(groups) -> None:
    p = groups["data"].add_parser("omniglot", help="download the official Omniglot zips (md5-checked)")
    p.add_argument("--data-dir", help="target folder (default: $PCMETA_DATA_DIR or ~/.cache/pcmeta/omniglot)")
    p.add_argument("--force", action="store_true", help="download again even if the zips are present")
    p.set_defaults(func=_data)

    p = groups["omniglot"].add_parser("train", help="meta-train the CNN with MAML (resumable)")
    p.add_argument("--preset", default="paper-5w5s", help=f"one of {', '.join(PRESET_NAMES)}")
    p.add_argument("--run-dir", help="output folder (default runs/omniglot-<preset>[-<bits>bit]-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's ckpt.pt")
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

    p = groups["omniglot"].add_parser("eval", help="few-shot accuracy (mean and 95%% CI over tasks)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="a ckpt.pt written by `pcmeta omniglot train`")
    src.add_argument("--weights", metavar="PATH", help="weights .npz (the authors' released layout or ours) or the "
                     f"name of a shipped file (e.g. classic_5w1s); default: the shipped {DEFAULT_WEIGHTS} "
                     f"({DEFAULT_PCM_WEIGHTS} with --substrate pcm)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=5, help="query images per class")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--steps", type=int, help="inner SGD steps (default: the model's test steps)")
    p.add_argument("--split", help="paper or classic (default: the split the weights were trained on)")
    p.add_argument("--part", default="test", help="train, val or test part of the split")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bits", type=int, help="software: evaluate through SoftwareSubstrate(bits=B); pcm: the "
                   "weight bits programmed into the chip (default 4, the paper's)")
    p.add_argument("--substrate", choices=("software", "pcm"), default="software",
                   help="pcm: program the network into the simulated PCM chip, adapt the readout there with "
                   "on-chip updates and classify with crossbar MVMs (pcmeta.agents.maml_chip)")
    p.add_argument("--time", default="1min", help="pcm: time between programming and adaptation + "
                   "classification: 1s, 1min, 1h, 1d, 1mo, 1y or seconds (default 1min)")
    p.add_argument("--drift-compensation", choices=("none", "global", "per_column"), default="none",
                   help="pcm: digital drift compensation of the crossbar outputs")
    p.add_argument("--readout-w-max", default=None, metavar="W",
                   help="pcm: put the readout on its own crossbar with g_max mapped to |w| = W (a number, or "
                   "'auto': the smallest power of two >= the readout's max |w|); default: the conv layers' scale 1")
    p.add_argument("--substrate-path", action="store_true",
                   help="run every task through the deployed path (substrate.place + arr.matmul)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="OUT", help="write {accuracy, ci95, tasks, ...} to OUT")
    p.set_defaults(func=_eval)

    p = groups["bench"].add_parser("maml", help="meta-iterations/s: pcmeta's vectorised MAML vs a per-task loop")
    p.add_argument("--presets", default="paper-5w5s,classic-5w1s", help="comma-separated presets")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="OUT")
    p.set_defaults(func=_bench)


def readout_scale(model, spec: str) -> float:
    """--readout-w-max: a positive number, or "auto" = the smallest power of two >= max |readout weight|."""
    import math

    if str(spec).lower() == "auto":
        m = float(model.deployable_params()["readout"].abs().max())
        return 2.0 ** math.ceil(math.log2(m)) if m > 0 else 1.0
    try:
        w = float(spec)
    except ValueError:
        raise ValueError(f"--readout-w-max must be a positive number or 'auto', got {spec!r}") from None
    if not (w > 0 and math.isfinite(w)):
        raise ValueError(f"--readout-w-max must be a positive number or 'auto', got {spec!r}")
    return w


def _check_device(device: str) -> None:
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
    _check_device(args.device)
    from pcmeta.agents.maml import Trainer, preset

    from pcmeta.demos.omniglot_chip import parse_time

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
    tr = Trainer(cfg, run_dir, args.data_dir, seed=args.seed, device=args.device,
                 checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_tasks=args.eval_tasks,
                 init=init)
    if args.resume:
        if tr.resume():
            print(f"resumed {run_dir} at iteration {tr.state.iteration}")
        else:
            print(f"no checkpoint in {run_dir}; starting from scratch")
    elif tr.ckpt_path.exists():
        raise ValueError(f"{tr.ckpt_path} exists: pass --resume to continue it or --run-dir for a new run")
    out = tr.train(progress=not args.no_progress)
    last = out["history"][-1] if out["history"] else {}
    print(f"done: {out['iteration']} iterations; last: {json.dumps(last)}")
    print(f"weights: {run_dir / 'weights.npz'}   checkpoint: {tr.ckpt_path}")
    return 0


def _load_model(args):
    import torch

    from pcmeta.agents.maml import MAML, WEIGHTS_DIR, MAMLConfig

    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ck = torch.load(path, map_location="cpu", weights_only=True)
        cfg = MAMLConfig.from_dict(ck["config"])
        return MAML(cfg, ck["params"], device=args.device), str(path)
    default = DEFAULT_PCM_WEIGHTS if getattr(args, "substrate", "software") == "pcm" else DEFAULT_WEIGHTS
    path = Path(args.weights) if args.weights else WEIGHTS_DIR / default
    if args.weights and not path.exists() and path.name == args.weights:  # a shipped name, e.g. classic_5w1s
        shipped = WEIGHTS_DIR / (args.weights if args.weights.endswith(".npz") else args.weights + ".npz")
        if shipped.is_file():
            path = shipped
        else:
            names = sorted(q.stem for q in WEIGHTS_DIR.glob("*.npz"))
            raise FileNotFoundError(f"weights not found: {args.weights} (not a file, nor one of the shipped {names})")
    return MAML.from_weights(path, device=args.device), str(path)


def _eval(args) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    _check_device(args.device)
    from pcmeta.agents.maml import MAML, evaluate, mean_ci95
    from pcmeta.tasks.omniglot import TaskSampler, class_pool

    model, src = _load_model(args)
    if args.ways != model.cfg.n_way:
        raise ValueError(f"--ways {args.ways} does not match the {model.cfg.n_way}-way readout of {src}")
    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    if args.bits is not None and args.substrate == "software":
        from pcmeta.hardware import SoftwareSubstrate

        model = MAML(model.cfg, {k: v.detach() for k, v in model.params.items()},
                     substrate=SoftwareSubstrate(bits=args.bits), device=args.device)
    args.split = args.split or model.cfg.split
    pool = class_pool(args.split, args.part, args.data_dir)
    sampler = TaskSampler(pool, args.ways, args.shots, args.queries, np.random.default_rng(args.seed))
    deployed = None
    if args.substrate_path:
        from pcmeta.hardware import SoftwareSubstrate

        deployed = model.deploy(SoftwareSubstrate(bits=args.bits))
    steps = model.cfg.test_steps if args.steps is None else args.steps
    chip = None
    if args.readout_w_max is not None and args.substrate != "pcm":
        raise ValueError("--readout-w-max needs --substrate pcm")
    if args.substrate == "pcm":
        from dataclasses import replace

        from pcmeta.agents.maml_chip import ChipProtocol, evaluate_on_chip
        from pcmeta.demos.omniglot_chip import parse_time
        from pcmeta.hardware import PCMConfig

        t = parse_time(args.time)
        pcm = PCMConfig(weight_bits=4 if args.bits is None else args.bits, w_max=1.0,
                        drift_compensation=args.drift_compensation)
        ro = None if args.readout_w_max is None else replace(pcm, w_max=readout_scale(model, args.readout_w_max))
        r = evaluate_on_chip(model, sampler, args.tasks,
                             ChipProtocol(pcm=pcm, t_adapt_s=t, steps=steps, readout_pcm=ro),
                             seed=args.seed, progress=True)
        acc = r["acc"]
        chip = {"substrate": "pcm", "time_s": t, "weight_bits": pcm.weight_bits,
                "drift_compensation": args.drift_compensation, "readout_w_max": None if ro is None else ro.w_max}
    else:
        acc = evaluate(model, sampler, args.tasks, steps, progress=True, deployed=deployed)
    m, ci = mean_ci95(acc)
    rows = [("weights", src), ("split/part", f"{args.split}/{args.part}"),
            ("task", f"{args.ways}-way {args.shots}-shot, {args.queries} queries/class"),
            ("inner steps", f"{steps} x lr {model.cfg.inner_lr} ({model.cfg.adapt})"),
            ("substrate", "software" + (f", {args.bits}-bit" if args.bits else ", float") if chip is None else
             f"PCM, {chip['weight_bits']}-bit, {args.time} after programming, drift compensation "
             f"{args.drift_compensation}"
             + ("" if chip["readout_w_max"] is None else
                f", readout on its own crossbar (w_max {chip['readout_w_max']:g})")),
            ("tasks", str(args.tasks)), ("accuracy", f"{100 * m:.2f} % +- {100 * ci:.2f} % (95% CI)")]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    if args.json:
        out = {"accuracy": m, "ci95": ci, "tasks": int(args.tasks), "ways": args.ways, "shots": args.shots,
               "queries": args.queries, "steps": steps, "split": args.split, "part": args.part,
               "seed": args.seed, "weights": src, "substrate": args.substrate, "bits": args.bits}
        if chip is not None:
            out.update(chip)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _bench(args) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    from pcmeta.agents.maml import bench_meta_iterations, preset

    names = [p.strip() for p in args.presets.split(",") if p.strip()]
    cfgs = [preset(n) for n in names]  # validates the names before any work
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
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
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
