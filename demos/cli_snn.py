"""CLI of the spiking learner: ``pcmeta arm eval``, ``arm train``, ``arm demo`` and ``pcmeta bench snn``.

Registration is cheap; torch / brian2 are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "day": 86400.0}


def parse_duration(text: str) -> float:
    """'1min', '1d', '620s', '2.5h', '0' -> seconds (float). ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", str(text).lower())
    if not m or (m.group(2) and m.group(2) not in _UNITS):
        raise ValueError(f"--time must be a duration like 1min, 1d, 620s, 2h (units {sorted(_UNITS)}), got {text!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1.0)


#: --weights of arm eval/demo and bench snn: a file or a name of snn.resolve_weights
WEIGHTS_HELP = "weights in the released layout, or 'pcmeta' (default: the shipped ones) or 'authors'"


def register(groups) -> None:
    p = groups["arm"].add_parser(
        "eval", help="one-shot learning of new arm targets with natural e-prop: MSEs before/after the update",
        description="Demonstration trial -> LSG learning signals -> ONE e-prop update -> test trial, on N new "
                    "random targets; prints a table of MSE omega / MSE xyz (mean +- SEM) and loss.")
    p.add_argument("--weights", metavar="PATH.npz", default=None,
                   help=WEIGHTS_HELP + " (the released ../shared/reference/authors_arm_natural_eprop.npz)")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="a checkpoint.pt of pcmeta arm train (instead of --weights)")
    p.add_argument("--tasks", type=int, default=100, help="number of new targets (default 100)")
    p.add_argument("--substrate", choices=["software", "pcm", "pcm-authors"], default="software",
                   help="where the learning network's weights live: software (exact float, default), pcm "
                        "(pcmeta.hardware.PCMSubstrate, the physical model) or pcm-authors (the authors' "
                        "statistical arm model at t/t0 = 32, SPEC section 2's reference row; torch engine)")
    p.add_argument("--time", default="1min",
                   help="pcm: simulated time between programming the initial weights and the demonstration "
                        "(drift), e.g. 1min, 1d, 620s (t/t0 = 32 of the authors' model); the update is written "
                        "right after the demonstration and the test trial follows at once (default 1min)")
    p.add_argument("--engine", choices=["torch", "brian2"], default="torch")
    p.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy",
                   help="brian2 code generation target (default numpy; cython compiles once, then is cached)")
    p.add_argument("--round-update", action="store_true",
                   help="software only: round the update to multiples of 1/16 (the PCM update grid)")
    _add_pcm_args(p)
    p.add_argument("--no-clip", action="store_true",
                   help="pcm: do not clip the initial weights to [-1, 1] (the authors' PCM model clips); "
                        "uses per-array w_max = max|W| instead")
    p.add_argument("--float64", action="store_true", help="torch engine: simulate in float64 (default float32)")
    p.add_argument("--batch-size", type=int, default=100, help="torch engine: tasks simulated together")
    p.add_argument("--robot", default="scorbot", choices=["scorbot"],
                   help="arm (the released weights were trained on the Scorbot)")
    p.add_argument("--seed", type=int, default=0, help="seed of the targets and of the PCM substrate")
    p.add_argument("--rates", action="store_true",
                   help="also print the firing-rate health of both networks (mean Hz, silent and > 150 Hz "
                        "neurons) on the first 20 targets")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON to OUT")
    p.set_defaults(func=_arm_eval)

    t = groups["arm"].add_parser(
        "train", help="meta-train the LSG and the learning network (BPTT through the one e-prop update)",
        description="Meta-training of SPEC section 2: per iteration a batch of new targets, demonstration -> "
                    "LSG -> ONE e-prop update -> test trial, Adam on 0.5 MSE_omega + 0.5 MSE_xyz + rate "
                    "regularisation. Checkpoints (atomic) to OUT/checkpoint.pt and OUT/weights.npz.")
    t.add_argument("--out", default="runs/arm/meta", help="run folder (default runs/arm/meta)")
    t.add_argument("--iterations", type=int, default=100000, help="total iterations (default 100000, the paper)")
    t.add_argument("--batch", type=int, default=90, help="tasks per iteration (default 90)")
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--lr-decay", type=float, default=0.99, help="lr factor every --decay-every iterations")
    t.add_argument("--decay-every", type=int, default=500)
    t.add_argument("--init", choices=["random", "weights"], default="random",
                   help="random (the authors' initial scales) or --weights (e.g. fine-tune the released ones)")
    t.add_argument("--weights", metavar="PATH.npz", default=None,
                   help="with --init weights: a weights file, or 'pcmeta' (the shipped ones) or 'authors'")
    t.add_argument("--clean-code", action="store_true",
                   help="LSG input: the Gray code without wrap-around instead of the paper's code")
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    t.add_argument("--no-cuda-graph", action="store_true",
                   help="on CUDA, launch every kernel eagerly instead of replaying one captured iteration")
    t.add_argument("--clip-grad-norm", type=float, default=None,
                   help="scale the gradient down to this L2 norm before each Adam step (default: no clipping)")
    t.add_argument("--readout-lr-factor", type=float, default=None,
                   help="lr factor of the learning network's readout W_out_trainee (default 1: one lr for all, as "
                        "the authors; its weights are 20-50x smaller than the others', e.g. 0.25 slows it down)")
    t.add_argument("--reset-gradient", action=argparse.BooleanOptionalAction, default=True,
                   help="let the BPTT gradient flow through the reset term, as the authors' TensorFlow code "
                        "(default); --no-reset-gradient stops it (e-prop convention). Forward values are the same")
    t.add_argument("--trainee-noise", choices=["none", "authors"], default="none",
                   help="the learning network during meta-training: float weights (none) or the PCM model of the "
                        "authors' training code (authors: programming/drift/read noise, update rounded to 1/16)")
    t.add_argument("--voltage-reg", type=float, default=0.0,
                   help="factor of the voltage regularisation that keeps neurons from going silent or saturated "
                        "for good (default 0: SPEC's recipe; e.g. 1e-3)")
    t.add_argument("--threshold-gradient", action=argparse.BooleanOptionalAction, default=False,
                   help="let the spike function's gradient reach the LSG's adaptive thresholds (through the 600-ms "
                        "adaptation variable); default off, as the authors' code. Forward values are the same")
    t.add_argument("--best-window", type=int, default=25,
                   help="write OUT/best.npz whenever the mean loss of the last N iterations is the lowest so far "
                        "(default 25)")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much wall time (a checkpoint is written; --resume goes on)")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_arm_train)

    r = groups["arm"].add_parser(
        "runs", help="compare meta-training runs: options, loss per window of iterations, firing health",
        description="For each `pcmeta arm train` run folder: its options, the iterations done, the mean loss over "
                    "windows of --window iterations, the largest gradient norm and the LSG's mean rate, silent and "
                    "> 150 Hz neurons now (10 fixed targets).")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--window", type=int, default=25, help="iterations per loss window (default 25)")
    r.add_argument("--json", metavar="OUT", help="also write the summaries as JSON")
    r.set_defaults(func=_arm_runs)

    d = groups["arm"].add_parser(
        "demo", help="one-shot learning of a new arm movement: demonstration, ONE update, test, rendered",
        description="Draws a new target (--seed), runs the demonstration trial (the LSG sees the target), writes "
                    "ONE natural e-prop update to the learning network's weights on --substrate, runs the test "
                    "trial, executes both trials in pcmeta/ArmTrajectory-v0 (PyBullet) side by side, prints the "
                    "MSEs and writes the animation and a PNG plot.")
    d.add_argument("--weights", metavar="PATH.npz", default=None,
                   help=WEIGHTS_HELP)
    d.add_argument("--substrate", choices=["software", "pcm", "pcm-authors"], default="pcm")
    d.add_argument("--time", default="1min", help="pcm: simulated time between programming and the demonstration")
    _add_pcm_args(d)
    d.add_argument("--engine", choices=["torch", "brian2"], default="brian2")
    d.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy")
    d.add_argument("--seed", type=int, default=0, help="selects the target (env reset seed) and the PCM seed")
    d.add_argument("--out", default="demo.gif", help="animation, .gif or .mp4 (default demo.gif)")
    d.add_argument("--plot", default=None, help="PNG plot (default: --out with the suffix .png)")
    d.add_argument("--every", type=int, default=3, help="render every N-th step (default 3)")
    d.add_argument("--no-video", action="store_true", help="only the MSEs and the plot")
    d.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    d.set_defaults(func=_arm_demo)

    b = groups["bench"].add_parser(
        "snn", help="wall time of one one-shot episode in torch and brian2, meta-training iterations/s",
        description="Times one one-shot episode (demonstration, LSG, update, test) in torch and in brian2 "
                    "(after code generation), and torch meta-training (forward + BPTT backward) at a batch.")
    b.add_argument("--weights", metavar="PATH.npz", default=None,
                   help=WEIGHTS_HELP)
    b.add_argument("--episodes", type=int, default=5, help="episodes timed per engine (default 5)")
    b.add_argument("--brian2-target", choices=["numpy", "cython"], default="numpy")
    b.add_argument("--train-batch", type=int, default=90, help="meta-training batch (default 90)")
    b.add_argument("--train-iters", type=int, default=1,
                   help="meta-training iterations timed (default 1; 0 skips the meta-training figure)")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    b.add_argument("--json", metavar="OUT")
    b.set_defaults(func=_bench_snn)


#: the PCM deployment of ``arm eval|demo --substrate pcm`` without --pcm-preset
DEFAULT_PCM_PRESET = "tuned"


def _add_pcm_args(p) -> None:
    """The PCM deployment options shared by ``arm eval`` and ``arm demo`` (a preset plus overrides)."""
    p.add_argument("--pcm-preset", choices=["authors", "tuned"], default=None,
                   help="pcm: deployment preset. tuned (default): stochastic (unbiased) rounding to the 1/16 "
                        "device grid, per-array w_max (the readout on its own scale), global drift compensation "
                        "and the update written in the compensated frame. authors (the paper's reference): the "
                        "authors' conventions (update rounded to the nearest 1/16, no drift compensation, w_max = 1 "
                        "for every array, readout on PCM). The options below override the preset")
    p.add_argument("--digital-readout", action="store_true", default=None,
                   help="pcm: keep the fixed readout W_out digital")
    p.add_argument("--drift-compensation", choices=["none", "global", "per_column"], default=None,
                   help="pcm: digital drift compensation of the MVM outputs (authors: none, tuned: global)")
    p.add_argument("--update-rounding", choices=["nearest", "stochastic"], default=None,
                   help="pcm: rounding of the update to the device grid (authors: nearest, tuned: stochastic)")
    p.add_argument("--update-grid", type=float, default=None, metavar="STEP",
                   help="pcm: update grid in units of w_max (default 1/16 = 0.0625: 1.5625 uS at g_max 25 uS)")
    p.add_argument("--update-base", choices=["drifted", "target"], default=None,
                   help="pcm: re-program a changed device to its drifted value + dW (default) or its last "
                        "target + dW")
    p.add_argument("--w-max", default=None, metavar="W|array",
                   help="pcm: weight mapped to g_max, a number or 'array' (each array's own max|W|; "
                        "authors: 1, tuned: array)")
    p.add_argument("--compensated-update", action=argparse.BooleanOptionalAction, default=None,
                   help="pcm: write the update in the drift-compensated frame (dW / alpha; tuned: on)")


def _pcm_setup(args):
    """(substrate factory, digital_readout, description) of the PCM deployment the arguments ask for."""
    from dataclasses import replace

    from pcmeta.agents import snn

    if args.pcm_preset is None:
        args.pcm_preset = DEFAULT_PCM_PRESET
    preset = snn.ARM_PCM_PRESETS[args.pcm_preset]
    w_max = None
    if args.w_max is not None:
        if str(args.w_max).lower() == "array":
            w_max = "array"
        else:
            try:
                w_max = float(args.w_max)
            except ValueError:
                raise ValueError(f"--w-max must be a positive number or 'array', got {args.w_max!r}") from None
    pcm = dict(preset.pcm)
    for field, val in (("drift_compensation", args.drift_compensation), ("update_rounding", args.update_rounding),
                       ("update_grid", args.update_grid), ("update_base", args.update_base)):
        if val is not None:
            pcm[field] = val
    if w_max is not None:
        pcm["w_max"] = None if w_max == "array" else w_max
    if getattr(args, "no_clip", False):
        pcm["w_max"] = None
    preset = replace(preset, pcm=pcm,
                     digital_readout=preset.digital_readout if args.digital_readout is None else args.digital_readout,
                     compensated_update=(preset.compensated_update if args.compensated_update is None
                                         else args.compensated_update))
    preset.config()  # validates (clear ValueError for a bad grid, w_max, ...)
    factory = snn.pcm_substrate_factory(preset, seed=args.seed)
    c = preset.config()
    desc = (f"preset {args.pcm_preset}: update {c.update_rounding} to {c.update_grid:g} w_max, base {c.update_base}, "
            f"drift compensation {c.drift_compensation}, w_max {'per array' if c.w_max is None else f'{c.w_max:g}'}"
            f", readout {'digital' if preset.digital_readout else 'on PCM'}"
            f"{', update in the compensated frame' if preset.compensated_update and c.drift_compensation != 'none' else ''}")
    return factory, preset, desc


def _arm_eval(args) -> int:
    import numpy as np
    import torch

    from pcmeta.agents import snn
    from pcmeta.tasks import trajectories as traj

    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    settle = parse_duration(args.time)
    torch.set_num_threads(1)
    dtype = torch.float64 if (args.float64 or args.engine == "brian2") else torch.float32
    if args.checkpoint and args.weights:
        raise ValueError("give --weights or --checkpoint, not both")
    params = (snn.load_checkpoint_params(args.checkpoint, dtype=dtype) if args.checkpoint
              else snn.load_weights(args.weights, dtype=dtype))
    targets = traj.sample_targets(args.tasks, robot=args.robot, rng=np.random.default_rng(args.seed))
    clip, factory, digital_readout, pcm_desc, pcm_cfg = None, None, False, "", None
    if args.substrate == "pcm":
        factory, preset, pcm_desc = _pcm_setup(args)
        clip = None if args.no_clip else preset.clip
        digital_readout = preset.digital_readout
        pcm_cfg = preset.config()
    elif args.digital_readout or args.drift_compensation or args.update_rounding or args.update_grid \
            or args.update_base or args.w_max or args.compensated_update is not None or args.pcm_preset is not None:
        raise ValueError("the PCM options (--pcm-preset, --digital-readout, --drift-compensation, --update-*, "
                         "--w-max, --compensated-update) need --substrate pcm")
    if args.substrate == "pcm-authors":
        if args.engine != "torch":
            raise ValueError("--substrate pcm-authors draws read noise on every MVM: use --engine torch")
        counter = {"k": 0}

        def factory():
            counter["k"] += 1
            return snn.AuthorsArmPCM(seed=args.seed * 100003 + counter["k"])
    if args.round_update and args.substrate != "software":
        raise ValueError("--round-update applies to --substrate software (PCM rounds its updates itself)")
    t0 = time.perf_counter()
    if args.engine == "torch":
        res = snn.evaluate(params, targets, batch_size=args.batch_size,
                           update_transform=snn.round_to_grid if args.round_update else None,
                           substrate_factory=factory, digital_readout=digital_readout, settle_s=settle,
                           clip=clip, progress=True)
    else:
        if args.round_update:
            raise ValueError("--round-update is implemented for --engine torch only")
        from pcmeta.agents.snn_brian2 import evaluate_brian2

        res = evaluate_brian2(params, targets, target=args.brian2_target, substrate_factory=factory,
                              digital_readout=digital_readout, settle_s=settle, clip=clip, progress=True)
    wall = time.perf_counter() - t0
    stats = {k: snn.summarize(res[k]) for k in ("mse_omega_before", "mse_omega_after", "mse_xyz_before",
                                                 "mse_xyz_after", "loss_before", "loss_after")}
    cond = args.substrate + (f" (t = {args.time})" if args.substrate == "pcm" else "")
    if args.substrate == "pcm":
        cond += f", {pcm_desc}" + (", no clipping" if args.no_clip else "")
    if args.substrate == "pcm-authors":
        cond += " (t/t0 = 32)"
    if args.round_update:
        cond += ", update rounded to 1/16"
    print(f"one-shot arm learning, {args.tasks} new targets, engine {args.engine}, substrate {cond}, "
          f"seed {args.seed}")
    print(f"{'':<14}{'before':>22}{'after':>22}")
    for name, unit in (("mse_omega", "(rad/s)^2"), ("mse_xyz", "m^2"), ("loss", "")):
        b, a = stats[f"{name}_before"], stats[f"{name}_after"]
        print(f"{name:<14}{b[0]:>12.4f} +- {b[1]:<7.4f}{a[0]:>12.4f} +- {a[1]:<7.4f} {unit}")
    print(f"wall time {wall:.1f} s ({wall / args.tasks:.3f} s per task)")
    rates = snn.firing_stats(params, targets[:20]) if args.rates else None
    for name, r in (rates or {}).items():
        print(f"{name} firing (demonstration, first {min(20, args.tasks)} targets): mean {r['mean_hz']:.1f} Hz, "
              f"{r['silent']} of {r['neurons']} neurons silent, {r['saturated']} above 150 Hz")
    out = {"mse_omega_before": stats["mse_omega_before"][0], "mse_omega_after": stats["mse_omega_after"][0],
           "mse_xyz_before": stats["mse_xyz_before"][0], "mse_xyz_after": stats["mse_xyz_after"][0],
           "loss_after": stats["loss_after"][0], "tasks": args.tasks,
           "sem": {k: v[1] for k, v in stats.items()}, "loss_before": stats["loss_before"][0],
           "engine": args.engine, "substrate": args.substrate, "time_s": settle if args.substrate == "pcm" else None,
           "digital_readout": bool(digital_readout), "clip": clip,
           "drift_compensation": pcm_cfg.drift_compensation if pcm_cfg is not None else None,
           "pcm_preset": args.pcm_preset if pcm_cfg is not None else None,
           "pcm_config": asdict(pcm_cfg) if pcm_cfg is not None else None,
           "compensated_update": bool(pcm_cfg is not None and preset.compensated_update),
           "round_update": bool(args.round_update), "seed": args.seed,
           "weights": str(args.checkpoint or snn.resolve_weights(args.weights)), "wall_s": wall,
           "firing": rates}
    if args.engine == "brian2":
        out["brian2_codegen_s"] = res.get("codegen_s")
        out["brian2_episode_s"] = float(np.mean(res["episode_s"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


def _arm_train(args) -> int:
    import torch

    from pcmeta.agents import snn

    if args.iterations < 1 or args.batch < 1 or args.checkpoint_every < 1:
        raise ValueError("--iterations, --batch and --checkpoint-every must be >= 1")
    if args.init == "weights" and not args.weights:
        raise ValueError("--init weights needs --weights PATH.npz")
    try:
        dev = torch.device(args.device)
    except RuntimeError as exc:
        raise ValueError(f"--device {args.device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ValueError(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.clip_grad_norm is not None and not args.clip_grad_norm > 0:
        raise ValueError(f"--clip-grad-norm must be > 0, got {args.clip_grad_norm}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = snn.meta_train(args.out, args.iterations, batch=args.batch, lr=args.lr, lr_decay=args.lr_decay,
                         decay_every=args.decay_every, seed=args.seed, init=args.init, init_weights=args.weights,
                         clean_code=args.clean_code, device=args.device, checkpoint_every=args.checkpoint_every,
                         resume=args.resume, clip_grad_norm=args.clip_grad_norm,
                         readout_lr_factor=args.readout_lr_factor, detach_reset=not args.reset_gradient,
                         trainee_noise=args.trainee_noise, voltage_reg=args.voltage_reg,
                         threshold_gradient=args.threshold_gradient, best_window=args.best_window,
                         cuda_graph=False if args.no_cuda_graph else None,
                         time_limit_s=None if args.max_minutes is None else 60.0 * args.max_minutes)
    h = res["history"]
    if h:
        last = h[-min(len(h), 50):]
        print(f"iteration {res['iteration']}: mean loss of the last {len(last)} iterations "
              f"{sum(x['loss'] for x in last) / len(last):.4f}")
    if res["best"]:
        b = res["best"]
        print(f"best: mean loss {b['window_loss']:.4f} over iterations {b['iteration'] - b['window']}-"
              f"{b['iteration']}, weights {res['best_weights']}")
    print(f"device {args.device}{' (CUDA graph replay)' if res['cuda_graph'] else ''}; "
          f"wall time {time.perf_counter() - t0:.1f} s; checkpoint {res['checkpoint']}, weights {res['weights']}")
    return 0


def _arm_runs(args) -> int:
    from pcmeta.agents import snn

    if args.window < 1:
        raise ValueError(f"--window must be >= 1, got {args.window}")
    rows = [snn.run_summary(d, window=args.window) for d in args.runs]
    keys = sorted({k for r in rows for k in r["loss_windows"]}, key=lambda k: int(k.split("-")[0]))
    shown = [k for k in keys if k in ("75-100", "150-175", "300-325", "600-625")] or keys[-3:]
    print("| run | options | its | " + " | ".join(f"loss {k}" for k in shown)
          + f" | last {args.window} | max grad norm | LSG Hz / silent / > 150 Hz |")
    print("|---" * (6 + len(shown)) + "|")
    for r in rows:
        c = r["config"]
        opts = ", ".join(f"{k}={c[k]:g}" if isinstance(c[k], float) else f"{k}={c[k]}"
                         for k in ("detach_reset", "readout_lr_factor", "clip_grad_norm", "voltage_reg",
                                   "trainee_noise", "threshold_gradient") if k in c)
        f = r["firing"]["lsg"]
        cells = " | ".join(f"{r['loss_windows'][k]:.3f}" if k in r["loss_windows"] else "" for k in shown)
        gn = "-" if r["max_grad_norm"] is None else f"{r['max_grad_norm']:.2g}"
        if r.get("best"):
            opts += f"; best {r['best']['window_loss']:.3f} at {r['best']['iteration']}"
        print(f"| {r['run']} | {opts} | {r['iterations']} | {cells} | {r['loss_last']:.3f} | {gn} | "
              f"{f['mean_hz']:.0f} / {f['silent']} / {f['saturated']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _arm_demo(args) -> int:
    import numpy as np
    import torch

    from pcmeta.agents import snn
    from pcmeta.envs.arm import ArmTrajectoryEnv

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    if args.every < 1:
        raise ValueError(f"--every must be >= 1, got {args.every}")
    video = not args.no_video
    if video and Path(args.out).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--out must end in .gif or .mp4, got {args.out!r}")
    plot_path = Path(args.plot) if args.plot else Path(args.out).with_suffix(".png")
    if plot_path.suffix.lower() != ".png":
        raise ValueError(f"--plot must end in .png, got {str(plot_path)!r}")
    settle = parse_duration(args.time)
    params = snn.load_weights(args.weights, dtype=torch.float64 if args.engine == "brian2" else torch.float32)
    if args.substrate == "pcm":
        factory, preset, pcm_desc = _pcm_setup(args)
        clip, digital_readout = preset.clip, preset.digital_readout
    elif args.substrate == "pcm-authors":
        if args.engine != "torch":
            raise ValueError("--substrate pcm-authors draws read noise on every MVM: use --engine torch")
        factory, clip, digital_readout, pcm_desc = (lambda: snn.AuthorsArmPCM(seed=args.seed)), None, False, ""
    else:
        factory, clip, digital_readout, pcm_desc = None, None, False, ""
    agent = snn.EpropAgent(params, substrate_factory=factory, engine=args.engine, settle_s=settle,
                           digital_readout=digital_readout, clip=clip, brian2_target=args.brian2_target)
    envs = [ArmTrajectoryEnv(render_mode="rgb_array" if video else None) for _ in range(2)]
    try:
        _, info = envs[0].reset(seed=args.seed)
        task = info["target"]
        t0 = time.perf_counter()
        res = agent.learn(task)
        t_learn = time.perf_counter() - t0
        frames, paths = [], [np.zeros((len(task["xyz"]), 3)) for _ in envs]
        for env in envs:
            env.set_task(task)
            env.reset()
        if video:
            frames.append(_side_by_side([e.render() for e in envs]))
        T = len(task["xyz"])
        for t in range(T):
            for k, (env, om) in enumerate(zip(envs, (res["omega_demo"], res["omega_test"]))):
                obs, *_ = env.step(np.asarray(om[t], dtype=np.float32))
                paths[k][t] = obs[4:7]
            if video and ((t + 1) % args.every == 0 or t == T - 1):
                frames.append(_side_by_side([e.render() for e in envs]))
    finally:
        for env in envs:
            env.close()
    figs = {"seed": args.seed, "substrate": args.substrate, "engine": args.engine,
            "pcm_preset": args.pcm_preset if args.substrate == "pcm" else None}
    for k, tag in enumerate(("demo", "test")):
        figs[f"mse_omega_{tag}"] = float(np.mean((res[f"omega_{tag}"] - task["omega"]) ** 2))
        figs[f"mse_xyz_{tag}"] = float(np.mean((paths[k] - task["xyz"]) ** 2))
    figs["learn_s"] = t_learn
    print(f"one-shot arm demo: target seed {args.seed}, substrate {args.substrate}"
          f"{f' (t = {args.time}, {pcm_desc})' if args.substrate == 'pcm' else ''}, engine {args.engine}")
    print(f"{'':<26}{'MSE omega (rad/s)^2':>20}{'MSE xyz (m^2, executed)':>26}")
    print(f"{'demonstration (before)':<26}{figs['mse_omega_demo']:>20.4f}{figs['mse_xyz_demo']:>26.4f}")
    print(f"{'test (after ONE update)':<26}{figs['mse_omega_test']:>20.4f}{figs['mse_xyz_test']:>26.4f}")
    if video:
        from pcmeta.demos.cli_arm import _write_animation

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        _write_animation(frames, args.out, fps=1.0 / (args.every * 0.01))
        print(f"wrote {args.out} ({len(frames)} frames: left the demonstration, right the test trial)")
    _plot_demo(task, res, paths, plot_path, figs)
    print(f"wrote {plot_path}")
    figs["wall_s"] = time.perf_counter() - t_start
    print(f"wall time {figs['wall_s']:.1f} s (learning: demonstration + update + test {t_learn:.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=2))
    return 0


def _side_by_side(frames):
    import numpy as np
    from PIL import Image, ImageDraw

    out = []
    for f, label in zip(frames, ("demonstration (before)", "test (after ONE update)")):
        img = Image.fromarray(np.ascontiguousarray(f))
        ImageDraw.Draw(img).text((6, img.height - 14), label, fill=(0, 0, 0))
        out.append(np.asarray(img))
    gap = np.full((out[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([out[0], gap, out[1]], axis=1)


def _plot_demo(task, res, paths, path: Path, figs) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    T = len(task["xyz"])
    ts = (np.arange(T) + 1) * 0.01
    fig = Figure(figsize=(8.0, 9.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True)
    for i, name in enumerate("xyz"):
        ax = axes[i]
        ax.plot(ts, task["xyz"][:, i], color="#dc1e1e", lw=2.5, label="target")
        ax.plot(ts, paths[0][:, i], color="#888888", lw=1.2, label="demonstration (before update)")
        ax.plot(ts, paths[1][:, i], color="#1450e6", lw=1.2, ls="--", label="test (after ONE update)")
        ax.set_ylabel(f"{name} (m)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    sub = figs["substrate"] + (f" ({figs['pcm_preset']})" if figs.get("pcm_preset") else "")
    axes[0].set_title(f"one-shot learning, target seed {figs['seed']}, {sub}, {figs['engine']}: "
                      f"MSE xyz {figs['mse_xyz_demo']:.3g} -> {figs['mse_xyz_test']:.3g} m$^2$")
    for j in range(2):
        ax = axes[3 + j]
        ax.plot(ts, task["omega"][:, j], color="#dc1e1e", lw=2.5)
        ax.plot(ts, res["omega_demo"][:, j], color="#888888", lw=1.0)
        ax.plot(ts, res["omega_test"][:, j], color="#1450e6", lw=1.2, ls="--")
        ax.set_ylabel(f"omega q{j + 1} (rad/s)")
        ax.grid(alpha=0.3)
    axes[4].set_xlabel("arm time (s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _bench_snn(args) -> int:
    import numpy as np
    import torch

    from pcmeta.agents import snn
    from pcmeta.agents.snn_brian2 import Brian2OneShot
    from pcmeta.tasks import trajectories as traj

    torch.set_num_threads(args.threads)
    figs: dict = {}
    p32 = snn.load_weights(args.weights)
    targets = traj.sample_targets(args.episodes, rng=0)
    clock, x_lsg = snn.episode_inputs(targets)
    with torch.no_grad():
        snn.one_shot_episode(p32, clock, x_lsg[:1])  # warm-up
        ts = []
        for k in range(args.episodes):
            t0 = time.perf_counter()
            snn.one_shot_episode(p32, clock, x_lsg[k:k + 1])
            ts.append(time.perf_counter() - t0)
    figs["torch_episode_s"] = float(np.median(ts))
    print(f"torch  one-shot episode (float32, 1 task):        {figs['torch_episode_s']:.3f} s (median of {len(ts)})")

    p64 = snn.load_weights(args.weights, dtype=torch.float64)
    t0 = time.perf_counter()
    net = Brian2OneShot(p64, target=args.brian2_target)
    figs["brian2_build_s"] = time.perf_counter() - t0
    c64, x64 = clock.double().numpy(), x_lsg.double().numpy()
    net.episode(x64[0], c64)
    figs["brian2_first_episode_s"] = net.codegen_s
    ts = []
    for k in range(args.episodes):
        t0 = time.perf_counter()
        net.episode(x64[k], c64)
        ts.append(time.perf_counter() - t0)
    figs["brian2_episode_s"] = float(np.median(ts))
    print(f"brian2 network build:                             {figs['brian2_build_s']:.2f} s")
    print(f"brian2 first trial (includes code generation):    {figs['brian2_first_episode_s']:.2f} s "
          f"(target {args.brian2_target})")
    print(f"brian2 one-shot episode after code generation:    {figs['brian2_episode_s']:.3f} s (median of {len(ts)})")

    if args.train_iters < 1:
        if args.json:
            Path(args.json).write_text(json.dumps(figs, indent=2))
            print(f"wrote {args.json}")
        return 0
    params = {k: v.clone().requires_grad_(True) for k, v in p32.items()}
    tg = traj.sample_targets(args.train_batch, rng=1)
    ts = []
    for _ in range(args.train_iters):
        t0 = time.perf_counter()
        loss, _ = snn.meta_loss(params, tg)
        loss.backward()
        ts.append(time.perf_counter() - t0)
    figs["train_iter_s"] = float(np.median(ts))
    figs["train_iters_per_s"] = 1.0 / figs["train_iter_s"]
    figs["train_batch"] = args.train_batch
    print(f"torch meta-training (batch {args.train_batch}, forward + BPTT):   {figs['train_iters_per_s']:.4f} it/s "
          f"({figs['train_iter_s']:.1f} s per iteration, {args.threads} thread(s))")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from pcmeta.demos.cli import main

    sys.exit(main())
