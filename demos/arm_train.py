"""``pcmeta arm train`` (meta-training of the spiking learner) and ``pcmeta arm runs`` (comparing runs)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from pcmeta.demos.options import write_result


def run_train(args: argparse.Namespace) -> int:
    """The handler of ``pcmeta arm train``. The run folder's rules (a lock; another run refused unless
    ``--resume`` or ``--overwrite``; a resumed run's settings kept unless ``--allow-changed-settings``;
    non-finite values stop the training) are :mod:`pcmeta.runs`'s, as for ``omniglot train``."""
    import torch

    from pcmeta.agents import eprop

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
    from pcmeta.agents import distributed

    try:  # under torchrun: data-parallel (the batch split over the processes), rank 0 holds the folder and prints
        res = eprop.meta_train(args.out, args.iterations, batch=args.batch, lr=args.lr, lr_decay=args.lr_decay,
                               decay_every=args.decay_every, seed=args.seed, init=args.init, init_weights=args.weights,
                               clean_code=args.clean_code, device=args.device, checkpoint_every=args.checkpoint_every,
                               resume=args.resume, overwrite=args.overwrite,
                               allow_changed_settings=args.allow_changed_settings,
                               clip_grad_norm=args.clip_grad_norm, clip_grad_relative=args.clip_grad_relative,
                               skip_grad_relative=args.skip_grad_relative,
                               readout_lr_factor=args.readout_lr_factor, detach_reset=not args.reset_gradient,
                               trainee_noise=args.trainee_noise, voltage_reg=args.voltage_reg,
                               threshold_gradient=args.threshold_gradient, best_window=args.best_window,
                               slim_checkpoint=args.slim_checkpoint,
                               cuda_graph=False if args.no_cuda_graph else None,
                               time_limit_s=None if args.max_minutes is None else 60.0 * args.max_minutes)
    finally:
        distributed.destroy()
    if res["rank"] != 0:
        return 0
    if res["world_size"] > 1:
        print(f"data-parallel: {res['world_size']} processes, {args.batch // res['world_size']} of the "
              f"{args.batch} targets of each iteration per process")
    if args.resume:
        print(f"resumed {args.out} at iteration {res['resumed']}" if res["resumed"] is not None
              else f"no checkpoint in {args.out}; started a new run")
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


def run_runs(args: argparse.Namespace) -> int:
    """The handler of ``pcmeta arm runs``."""
    from pcmeta.agents import eprop

    if args.window < 1:
        raise ValueError(f"--window must be >= 1, got {args.window}")
    rows = [eprop.run_summary(d, window=args.window) for d in args.runs]
    keys = sorted({k for r in rows for k in r["loss_windows"]}, key=lambda k: int(k.split("-")[0]))
    shown = [k for k in keys if k in ("75-100", "150-175", "300-325", "600-625")] or keys[-3:]
    print("| run | options | its | " + " | ".join(f"loss {k}" for k in shown)
          + f" | last {args.window} | max grad norm | clipped / skipped its | collapse at "
          + "| LSG Hz / silent / > 150 Hz |")
    print("|---" * (8 + len(shown)) + "|")
    for r in rows:
        c = r["config"]
        opts = ", ".join(f"{k}={c[k]:g}" if isinstance(c[k], float) else f"{k}={c[k]}"
                         for k in ("detach_reset", "readout_lr_factor", "clip_grad_norm", "clip_grad_relative",
                                   "skip_grad_relative", "voltage_reg", "trainee_noise", "threshold_gradient")
                         if k in c)
        f = r["firing"]["lsg"]
        cells = " | ".join(f"{r['loss_windows'][k]:.3f}" if k in r["loss_windows"] else "" for k in shown)
        gn = "-" if r["max_grad_norm"] is None else f"{r['max_grad_norm']:.2g}"
        if r.get("best"):
            opts += f"; best {r['best']['window_loss']:.3f} at {r['best']['iteration']}"
        collapse = "-" if r["collapse"] is None else str(r["collapse"])
        clipped = " / ".join("-" if r.get(k) is None else str(r[k]) for k in ("clipped", "skipped"))
        print(f"| {r['run']} | {opts} | {r['iterations']} | {cells} | {r['loss_last']:.3f} | {gn} | {clipped} | "
              f"{collapse} | {f['mean_hz']:.0f} / {f['silent']} / {f['saturated']} |")
    if getattr(args, "plot", None):
        plot_runs(rows, args.plot, args.window)
        print(f"wrote {args.plot}")
    write_result(args, {"runs": [{k: v for k, v in r.items() if k != "curve"} for r in rows]})
    return 0


#: The panels of ``pcmeta arm runs --plot``: history key, y label, log scale, moving statistic.
_PANELS = (("loss", "loss (0.5 MSE omega + 0.5 MSE xyz)", True, "mean"),
           ("grad_norm", "gradient norm before clipping", True, "median"),
           ("rate_lsg_hz", "LSG mean rate (Hz)", False, "mean"), ("reg", "rate regularisation term", True, "mean"))


def _moving(y, window: int, stat: str):
    """The moving mean or median of ``y`` over ``window`` values (NaN as 0 for the mean)."""
    import numpy as np

    if stat == "median":
        return np.median(np.lib.stride_tricks.sliding_window_view(y, window), axis=1)
    return np.convolve(np.nan_to_num(y, nan=0.0), np.ones(window) / window, mode="valid")


def plot_runs(rows: list[dict], path: str, window: int) -> None:
    """Loss, gradient norm (moving median: outliers of 10^6 and more), the LSG's mean rate and the rate
    regularisation per iteration (moving mean over ``window``) of several runs, side by side; a collapse
    (:func:`~pcmeta.agents.eprop.find_collapse`) is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for n, r in enumerate(rows):
        color, name = f"C{n % 10}", "/".join(Path(r["run"]).parts[-2:])  # folder and run: sweeps apart
        for ax, (key, label, log, stat) in zip(axes.flat, _PANELS):
            y = np.asarray(r["curve"].get(key, []), dtype=float)
            if y.size >= window and np.isfinite(y).any():
                y = _moving(y, window, stat)
                ax.plot(np.arange(window, window + y.size), y, lw=1, color=color, label=name)
            if r.get("collapse") is not None:
                ax.axvline(r["collapse"], color=color, ls=":", lw=1)
            ax.set(xlabel="iteration", ylabel=f"{label}\n(moving {stat} over {window} iterations)",
                   yscale="log" if log else "linear")
    axes[0, 0].set_title("meta-training loss (dotted: collapse)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
