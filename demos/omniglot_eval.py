"""``pcmeta omniglot eval``: few-shot accuracy of a MAML model in software or on a deployment (the simulated chip).

Where the weights live is ONE :class:`pcmeta.hardware.Deployment`: ``--deployment NAME|FILE.json`` (the omniglot
presets: ``software``, ``software-4bit``, ``pcm``, ``paper``, ``pcm-hermes``), or the older alias ``--substrate
software|pcm`` (software -> ``software``, or ``software-4bit`` with ``--bits 4``; pcm -> ``pcm``: the readout on its
own crossbar scale, the best deployment pcmeta knows; ``--deployment paper`` is the authors' shared scale);
``--time``, ``--bits``, ``--drift-compensation`` and ``--readout-w-max`` override it. The result (``--json``)
records the deployment and the command.

Registration is cheap; torch and the data are loaded inside the handler.
"""
from __future__ import annotations

from pcmeta.demos.options import (add_deployment_args, deployment_from_args, int_range, nonneg_int, positive_int,
                                  write_result)

#: Weights of ``omniglot eval`` on a chip when no ``--weights``: meta-trained through the 4-bit quantizer (the
#: float weights lose most of their small conv weights to the 4-bit grid: ~46 % there at 1 min).
DEFAULT_CHIP_WEIGHTS = "paper_5w5s_4bit"


def _w_max(spec: str) -> float | str:
    """``--readout-w-max``: a positive number or "auto"."""
    import math

    if spec.lower() == "auto":
        return "auto"
    try:
        w = float(spec)
    except ValueError:
        w = float("nan")
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"--readout-w-max must be a positive number or 'auto', got {spec!r}")
    return w


def register(groups) -> None:
    p = groups["omniglot"].add_parser("eval", help="few-shot accuracy (mean and 95%% CI over tasks)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="a ckpt.pt written by `pcmeta omniglot train`")
    src.add_argument("--weights", metavar="NAME|PATH",
                     help="weights .npz (the authors' released layout or ours), the name of a shipped file (e.g. "
                     "classic_5w1s), or 'authors' (the authors' released weights, in $PCMETA_REFERENCE_DIR); "
                     f"default: the shipped paper_5w5s ({DEFAULT_CHIP_WEIGHTS} on a chip deployment)")
    p.add_argument("--ways", type=int_range(2), default=5, help="classes per task, >= 2 (default 5; must match "
                   "the readout of the weights)")
    p.add_argument("--shots", type=positive_int, default=5, help="support images per class, >= 1 (default 5)")
    p.add_argument("--queries", type=positive_int, default=5,
                   help="query images per class, >= 1 (default 5; shots + queries <= 20)")
    p.add_argument("--tasks", type=positive_int, default=1000, help="tasks evaluated, >= 1 (default 1000)")
    p.add_argument("--steps", type=nonneg_int, help="inner SGD steps, >= 0 (default: the model's test steps)")
    p.add_argument("--split", help="paper or classic (default: the split the weights were trained on)")
    p.add_argument("--part", default="test", help="train, val or test part of the split")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the tasks and the chip, >= 0 (default 0)")
    add_deployment_args(p, "omniglot")
    p.add_argument("--substrate", choices=("software", "pcm"), default=None,
                   help="alias of --deployment (which wins when both are given): software (= software, or software-4bit with --bits 4) or pcm "
                   "(= the pcm preset: the network on the simulated PCM chip, the readout on its own crossbar "
                   "scale, adapted there with on-chip updates); default: software")
    p.add_argument("--bits", type=int_range(1, 16), help="1..16; software: evaluate through "
                   "SoftwareSubstrate(bits=B); chip: the weight bits programmed into the chip (the presets' 4)")
    p.add_argument("--drift-compensation", choices=("none", "global", "per_column"), default=None,
                   help="chip: digital drift compensation of the crossbar outputs (the presets': none)")
    p.add_argument("--readout-w-max", default=None, metavar="W|auto",
                   help="chip: put the readout on its own crossbar with g_max mapped to |w| = W (a number, or "
                   "'auto': the smallest power of two >= the readout's max |w|, the pcm preset's)")
    p.add_argument("--substrate-path", action="store_true",
                   help="software: run every task through the deployed path (substrate.place + arr.matmul)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="OUT", help="write {accuracy, ci95, tasks, deployment, command, ...} to OUT")
    p.set_defaults(func=_eval)


def eval_deployment(args):
    """The :class:`~pcmeta.hardware.Deployment` of ``omniglot eval``: ``--deployment`` or the ``--substrate``
    alias, with ``--time``, ``--bits``, ``--drift-compensation`` and ``--readout-w-max`` applied."""
    from pcmeta.agents.maml import READOUT, place_readout
    from pcmeta.hardware import Placement

    alias = {"software": "software-4bit" if args.bits == 4 else "software", "pcm": "pcm"}
    dep = deployment_from_args(args, "omniglot", alias[args.substrate or "software"])  # --deployment wins
    if args.substrate and dep.substrate != args.substrate:
        raise ValueError(f"--substrate {args.substrate} contradicts --deployment {args.deployment} (a "
                         f"{dep.substrate!r} deployment); --substrate is an alias, --deployment alone suffices")
    if dep.substrate == "software":
        for flag, value in (("--drift-compensation", args.drift_compensation),
                            ("--readout-w-max", args.readout_w_max)):
            if value is not None:
                raise ValueError(f"{flag} needs a chip deployment (--substrate pcm or a pcm --deployment); "
                                 f"{dep.name!r} is software")
        return dep.with_(config={"bits": args.bits}) if args.bits is not None else dep
    if dep.substrate != "pcm":
        raise ValueError(f"deployment {dep.name!r} is on {dep.substrate!r}: omniglot eval runs on software or pcm")
    overrides = {"weight_bits": args.bits, "drift_compensation": args.drift_compensation}
    dep = dep.with_(config={k: v for k, v in overrides.items() if v is not None})  # flags not given: None
    if args.readout_w_max is not None:
        dep = place_readout(dep, Placement(READOUT, "own", {"w_max": _w_max(args.readout_w_max)}))
    return dep


def _load_model(args, on_chip: bool):
    """(model, its source) from ``--checkpoint`` or ``--weights`` (see :func:`pcmeta.agents.shipped.resolve_weights`)."""
    from pcmeta.agents.maml import MAML
    from pcmeta.agents.shipped import resolve_weights

    if args.checkpoint:
        return MAML.from_checkpoint(args.checkpoint, device=args.device), str(args.checkpoint)
    path = resolve_weights(args.weights or (DEFAULT_CHIP_WEIGHTS if on_chip else None), "omniglot")
    return MAML.from_weights(path, device=args.device), str(path)


def _run(args, model, dep, sampler, steps: int) -> tuple:
    """(per-task accuracy, chip fields of the result or None)."""
    from pcmeta.agents.maml import MAML, evaluate, evaluate_on_chip

    if dep.on_chip:
        r = evaluate_on_chip(model, sampler, args.tasks, dep, seed=args.seed, steps=steps, progress=True)
        return r["acc"], {"time_s": dep.time_s, "weight_bits": dep.config.get("weight_bits"),
                          "drift_compensation": dep.config.get("drift_compensation", "none"),
                          "readout_w_max": r["readout_w_max"]}
    if dep.config:  # software with N-bit weights: the model's weight matrices through that substrate
        model = MAML(model.cfg, {k: v.detach() for k, v in model.params.items()},
                     substrate=dep.build(args.seed), device=args.device)
    deployed = model.deploy(dep.build(args.seed)) if args.substrate_path else None
    return evaluate(model, sampler, args.tasks, steps, progress=True, deployed=deployed), None


def _eval(args) -> int:
    import numpy as np
    import torch

    from pcmeta.agents.maml import mean_ci95
    from pcmeta.demos.cli_omniglot import check_device
    from pcmeta.hardware.times import format_time
    from pcmeta.tasks.omniglot import TaskSampler, class_pool

    torch.set_num_threads(1)
    check_device(args.device)
    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    dep = eval_deployment(args)
    if args.substrate_path and dep.on_chip:
        raise ValueError("--substrate-path is the software deployed path; a chip deployment always runs on it")
    model, src = _load_model(args, dep.on_chip)
    if args.ways != model.cfg.n_way:
        raise ValueError(f"--ways {args.ways} does not match the {model.cfg.n_way}-way readout of {src}")
    args.split = args.split or model.cfg.split
    pool = class_pool(args.split, args.part, args.data_dir)
    sampler = TaskSampler(pool, args.ways, args.shots, args.queries, np.random.default_rng(args.seed))
    steps = model.cfg.test_steps if args.steps is None else args.steps
    acc, chip = _run(args, model, dep, sampler, steps)
    m, ci = mean_ci95(acc)
    rows = [("weights", src), ("split/part", f"{args.split}/{args.part}"),
            ("task", f"{args.ways}-way {args.shots}-shot, {args.queries} queries/class"),
            ("inner steps", f"{steps} x lr {model.cfg.inner_lr} ({model.cfg.adapt})"),
            ("deployment", dep.describe())]
    if chip is not None:
        rows.append(("chip", f"adapted {format_time(dep.time_s)} after programming, readout crossbar w_max "
                             f"{chip['readout_w_max']:g}"))
    rows += [("tasks", str(args.tasks)), ("accuracy", f"{100 * m:.2f} % +- {100 * ci:.2f} % (95% CI)")]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    out = {"accuracy": m, "ci95": ci, "tasks": int(args.tasks), "ways": args.ways, "shots": args.shots,
           "queries": args.queries, "steps": steps, "split": args.split, "part": args.part, "seed": args.seed,
           "weights": src, "substrate": dep.substrate, "bits": args.bits, "deployment": dep.to_dict(),
           **(chip or {})}
    write_result(args, out)
    return 0
