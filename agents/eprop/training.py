"""Meta-training (SPEC section 2, outer loop): BPTT through the one e-prop update, Adam on the LSG and the
learning network's initial weights; resumable, checkpointed atomically, optionally one CUDA graph per
iteration. The run folder is held and checked through :mod:`pcmeta.runs` (lock, temporaries, another run,
changed settings, non-finite values), as for MAML's :class:`~pcmeta.agents.maml.Trainer`."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pcmeta.agents.distributed import DistContext, check_meta_batch
from pcmeta.agents.distributed import from_env as dist_from_env
from pcmeta.files import load_checkpoint
from pcmeta.runs import check_checkpoint_finite, check_finite, check_settings, kept_checkpoint, open_run
from pcmeta.tasks import trajectories as traj

from .checkpoints import append_history, atomic_save, trim_history
from .clipping import (CLIP_CALIBRATION, CLIP_GRAD_RELATIVE, SKIP_GRAD_RELATIVE, clip_gradients, gradient_norm,
                       restore_window)
from .config import OLD_RUN_VALUES, PARAM_KEYS, TRAINEE_NOISE
from .episode import target_tensors
from .losses import META_FIGURES, VOLTAGE_REG, meta_loss_tensors
from .weights import init_params, load_weights, save_weights_npz

__all__ = ["MetaTrainOptions", "meta_train", "READOUT_LR_FACTOR", "RUN_FILES", "RUN_SETTINGS"]

#: A meta-training run's own files in its folder (what ``overwrite`` deletes, what makes a folder "hold a run").
RUN_FILES = ("checkpoint.pt", "weights.npz", "best.npz", "history.csv")
#: Temporary files of killed writers that do not go through :mod:`pcmeta.files` (removed on start).
_OLD_TEMPORARIES = ("weights.npz.tmp.npz", "best.npz.tmp.npz")
#: The options a resumed run must keep (the checkpoint's ``config``); the others (iterations, checkpoint_every,
#: device, cuda_graph, progress, time_limit_s, best_window) may change.
RUN_SETTINGS = ("batch", "lr", "lr_decay", "decay_every", "seed", "clean_code", "clip_grad_norm",
                "clip_grad_relative", "skip_grad_relative", "readout_lr_factor", "detach_reset", "trainee_noise",
                "voltage_reg", "threshold_gradient")

#: Default lr factor of the learning network's readout in :func:`meta_train`: 1, one lr for every matrix as
#: in the authors' code (1 - kappa, Adam on the readout in the filter's units, stalled learning in a CPU run:
#: loss 0.31 after 150 iterations against 0.10 with 1; see the README).
READOUT_LR_FACTOR = 1.0


@dataclass
class MetaTrainOptions:
    """The options of :func:`meta_train` (its keyword arguments).

    Attributes:
        batch: targets per iteration (new ones every iteration, from a generator seeded by (seed, iteration),
            so a resumed run sees the same data).
        lr, lr_decay, decay_every: Adam's learning rate, decayed by ``lr_decay`` every ``decay_every``
            iterations.
        seed: seed of the targets, of the random initial weights and of the training-time noise.
        init: "random" (:func:`~pcmeta.agents.eprop.weights.init_params`) or "weights" (``init_weights``, a
            weights file or name of :func:`~pcmeta.agents.eprop.weights.load_weights`).
        clean_code: LSG input: the Gray code without wrap-around instead of the paper's code.
        device: torch device.
        checkpoint_every: iterations between checkpoints (``checkpoint.pt``: parameters, optimizer, history;
            ``weights.npz``: the released layout), both written atomically.
        resume: continue from the checkpoint in the run folder (a folder without one starts a new run). The
            :data:`RUN_SETTINGS` must be given as the run was started (``readout_lr_factor`` None: the run's);
            others are refused, naming each, unless ``allow_changed_settings``. A checkpoint with non-finite
            parameters is refused.
        overwrite: a new run in a folder that holds another run deletes that run's files (:data:`RUN_FILES`)
            first; without it (and without ``resume``) such a folder is refused. A folder that also holds other
            files is refused either way (see :func:`pcmeta.runs.open_run`).
        allow_changed_settings: with ``resume``, continue under the given :data:`RUN_SETTINGS` where they differ
            from the run's (the changes are printed, and recorded in the checkpoint as ``setting_changes``).
        progress: show a tqdm bar.
        time_limit_s: stop (after a checkpoint) once this much wall time has passed; a later ``resume`` goes on.
        cuda_graph: (default: on for a CUDA device) capture forward + BPTT backward of one iteration once as a
            CUDA graph and replay it (the 3 x 249 time steps launch ~10^4 small kernels per iteration; replay
            removes the launch overhead); the next batch is drawn on the CPU while the GPU runs. Same
            arithmetic as the eager loop; Adam and the lr schedule run eagerly.
        clip_grad_norm: scale the gradient (all parameters together) down to this L2 norm before the Adam step
            (None: no fixed limit); the norm before clipping is logged as ``grad_norm`` either way.
        clip_grad_relative: scale the gradient down to this many times the median norm (before clipping) of the
            last 50 iterations, and before that of the first 10 iterations' batches at the initial weights (measured
            before a new run's first step); None: off; default 3 (:mod:`~pcmeta.agents.eprop.clipping` says why:
            an outlier gradient began the collapses of earlier runs, and one at the first step froze a seed's LSG
            in Adam's second moment). With ``clip_grad_norm`` too, the lower limit applies.
        skip_grad_relative: take no Adam step for a gradient above this many times the same median norm (None:
            off; default 10, :data:`~pcmeta.agents.eprop.clipping.SKIP_GRAD_RELATIVE`): such outliers came from a
            few tasks whose BPTT through the LSG exploded, and scaled down they still point where those go. The
            median window holds skipped norms too, so a lasting rise of the norm is followed after ~25 iterations.
        readout_lr_factor: the lr of the learning network's readout ``W_out_trainee`` is ``lr *
            readout_lr_factor`` (default :data:`READOUT_LR_FACTOR` = 1: one lr for all, as the authors). Its
            weights are ~0.003-0.01, 20-50x smaller than the other matrices', so a full-lr Adam step moves them
            by up to half their size; 1 - kappa or 0.25 slow that down.
        detach_reset: stop the BPTT gradient through the reset term ``A_t z_{t-1}`` (the e-prop convention);
            default False: it flows, as in the authors' TensorFlow code (in a CPU run it learned about twice as
            fast over the first 100 iterations). Forward values are the same either way.
        trainee_noise: "none" (float learning network) or "authors": its weights as the authors' training code
            models PCM (see :func:`~pcmeta.agents.eprop.episode.one_shot_episode`); the noise comes from
            torch's global RNG, re-seeded from (seed, iteration) before every eager iteration so that a resumed
            run draws the same noise (CUDA-graph replays draw fresh noise from the device generator instead).
        voltage_reg: factor of :func:`~pcmeta.agents.eprop.losses.voltage_regularization` in the loss (default
            :data:`~pcmeta.agents.eprop.losses.VOLTAGE_REG` = 1e-3; 0: off, SPEC's recipe); it keeps neurons from
            going silent or saturated for good, which the rate regularisation cannot undo.
        threshold_gradient: let the spike function's gradient reach the LSG's adaptive thresholds (see
            :func:`~pcmeta.agents.eprop.network.run_snn`); default False, as the authors' code (the path through
            the 600-ms adaptation variable made the gradient 4.6-9x larger at the checkpoints of three CPU runs
            that collapsed).
        best_window: every ``best_window`` iterations the mean task loss of the last ``best_window`` iterations
            (each on fresh targets, so an unbiased estimate) is compared with the best so far; when it is lower,
            the current weights are written to ``best.npz`` (the checkpoint records its iteration and loss as
            ``best``). Runs that later degrade keep their best weights.
        slim_checkpoint: the checkpoint keeps only the last ``best_window`` iterations of the history (parameters,
            optimizer and schedule in full): small files for long runs, e.g. to copy off a remote GPU machine.
            The whole curve is in the run's ``history.csv`` either way (appended at every checkpoint; a resumed
            run drops the rows written after its checkpoint).

    Runs from before an option ran with its old behaviour (detach_reset and threshold_gradient True); resuming
    one asks for those values. The run folder is locked while the training runs (a second process is refused),
    and a non-finite loss, gradient or parameter stops the training (:class:`pcmeta.runs.NonFiniteError`, naming
    the iteration) before that state is written: the last good checkpoint stays.
    """

    batch: int = 90
    lr: float = 1.5e-3
    lr_decay: float = 0.99
    decay_every: int = 500
    seed: int = 0
    init: str = "random"
    init_weights: str | Path | None = None
    clean_code: bool = False
    device: str = "cpu"
    checkpoint_every: int = 25
    resume: bool = False
    progress: bool = True
    time_limit_s: float | None = None
    cuda_graph: bool | None = None
    clip_grad_norm: float | None = None
    clip_grad_relative: float | None = CLIP_GRAD_RELATIVE
    skip_grad_relative: float | None = SKIP_GRAD_RELATIVE
    readout_lr_factor: float | None = None
    detach_reset: bool = False
    trainee_noise: str = "none"
    voltage_reg: float = VOLTAGE_REG
    threshold_gradient: bool = False
    best_window: int = 25
    slim_checkpoint: bool = False
    overwrite: bool = False
    allow_changed_settings: bool = False


def meta_train(out_dir: str | Path, iterations: int, **options: Any) -> dict[str, Any]:
    """Meta-train the LSG and the learning network's initial weights (SPEC section 2, outer loop).

    Each iteration draws ``batch`` new targets, runs demonstration -> update -> test, and takes one Adam step
    on :func:`~pcmeta.agents.eprop.losses.meta_loss`. ``options``: the fields of :class:`MetaTrainOptions`.
    The run folder ``out_dir`` receives ``checkpoint.pt``, ``weights.npz`` and ``best.npz``.

    Returns a dict with the final iteration, the history (per-iteration loss figures), the wall time (s),
    the paths, ``resumed`` (the iteration resumed from, None for a new run) and ``setting_changes``.

    Under ``torchrun --nproc-per-node N`` (detected by itself; :mod:`pcmeta.agents.distributed`) the ``batch``
    targets of an iteration (the same draw as one process) are split over the N processes, each back-propagates
    its share's loss and the gradients (and logged figures) are averaged over the processes before the one
    clip and Adam step every process takes; rank 0 alone holds the run folder, writes checkpoints and weights
    and shows the progress bar. A run resumes under any number of processes (rank 0 reads the checkpoint and
    sends its state to the others).
    """
    t_start = time.perf_counter()
    o = MetaTrainOptions(**options)
    if o.allow_changed_settings and not o.resume:
        raise ValueError("--allow-changed-settings goes with --resume")
    dist = dist_from_env(o.device)
    check_meta_batch(o.batch, dist.world_size, "--batch")
    held = (open_run(out_dir, RUN_FILES, resume=o.resume, overwrite=o.overwrite, temporaries=_OLD_TEMPORARIES)
            if dist.is_main else contextlib.nullcontext())
    with held:
        dist.barrier()  # the other ranks start once rank 0 holds (and has cleaned) the run folder
        run = _MetaRun(Path(out_dir), iterations, o, dist)
        it_done = run.train(t_start)
    return {"iteration": max(run.start, it_done), "history": run.history, "checkpoint": str(run.ck_path),
            "weights": str(run.w_path), "wall_s": time.perf_counter() - t_start, "cuda_graph": run.graph is not None,
            "best": dict(run.best), "best_weights": str(run.best_path) if run.best else None,
            "resumed": run.resumed, "setting_changes": list(run.setting_changes), "rank": dist.rank,
            "world_size": dist.world_size}


class _MetaRun:
    """The state of one meta-training run: parameters, optimizer, history, best weights, the CUDA graph."""

    def __init__(self, out: Path, iterations: int, o: MetaTrainOptions, dist: DistContext | None = None):
        self.dist = dist or DistContext()
        self.iterations = iterations
        self.ck_path, self.w_path, self.best_path = out / "checkpoint.pt", out / "weights.npz", out / "best.npz"
        self.csv_path = out / "history.csv"
        if not (isinstance(o.best_window, int) and o.best_window >= 1):
            raise ValueError(f"best_window must be a positive integer, got {o.best_window!r}")
        self.dev = torch.device(o.device)
        if o.cuda_graph is None:  # (not with several processes: the collectives run between the graph's parts)
            o.cuda_graph = self.dev.type == "cuda" and not self.dist.enabled
        if o.cuda_graph and self.dist.enabled:
            raise ValueError("cuda_graph is not supported in a data-parallel run; leave it at its default")
        if o.cuda_graph and self.dev.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device, got {o.device!r}")
        ck = self._start(o)
        self.best = dict(ck.get("best", {})) if ck is not None else {}
        self.resumed = self.saved = self.start if ck is not None else None  # iteration of the last checkpoint
        self.logged = self.start  # iterations in history.csv
        if self.dist.is_main:
            trim_history(self.csv_path, self.start)
        changes = _resolve_options(o, ck, self.ck_path)
        self.setting_changes = list(ck.get("setting_changes", [])) if ck is not None else []
        if changes:
            self.setting_changes.append({"iteration": self.start, "changes": changes})
        self.o = o
        self.opt, self.sched = _optimizer(self.params, o, ck, changed=bool(changes))
        self.dtype = self.params["W_in_lsg"].dtype
        self.clip_norms, self.clip_calibration = restore_window(ck, self.history, self.start, self.dtype, self.dev)
        if self.dist.enabled:
            self._share_state()
        self.clock = torch.as_tensor(traj.clock_input(traj.T_STEPS), dtype=self.dtype, device=self.dev)
        self.pending: list[torch.Tensor] = []  # per-iteration figures still on the device
        self.graph = self.static = self.static_figs = None

    def _share_state(self) -> None:
        """Rank 0's parameters, optimizer, schedule, start and history on every rank (a resumed run needs the
        checkpoint on rank 0 only)."""
        st = self.dist.broadcast_object({"params": {k: v.detach().cpu() for k, v in self.params.items()},
                                         "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                                         "start": self.start, "history": self.history,
                                         "clip": (self.clip_norms.cpu(), self.clip_calibration.cpu())}
                                        if self.dist.is_main else None)
        if not self.dist.is_main:
            with torch.no_grad():
                for k, v in st["params"].items():
                    self.params[k].copy_(v.to(self.dev))
            self.opt.load_state_dict(st["opt"])
            self.sched.load_state_dict(st["sched"])
            self.start, self.history = st["start"], st["history"]
            self.clip_norms, self.clip_calibration = (t.to(self.dev) for t in st["clip"])

    def _start(self, o: MetaTrainOptions) -> dict | None:
        """Parameters, first iteration and history: from the checkpoint (resume) or fresh. Returns the
        checkpoint (None when fresh)."""
        if o.resume and self.dist.is_main and self.ck_path.is_file():
            ck = load_checkpoint(self.ck_path, "arm checkpoint", required=("params", "iteration", "history"))
            check_checkpoint_finite(self.ck_path, {k: ck["params"][k] for k in PARAM_KEYS})
            self.params = {k: ck["params"][k].to(self.dev).requires_grad_(True) for k in PARAM_KEYS}
            self.start, self.history = int(ck["iteration"]), list(ck["history"])
            return ck
        if o.init == "random":
            p0 = init_params(o.seed)
        elif o.init == "weights":
            p0 = load_weights(o.init_weights)
        else:
            raise ValueError(f"init must be 'random' or 'weights', got {o.init!r}")
        self.params = {k: p0[k].to(self.dev).requires_grad_(True) for k in PARAM_KEYS}
        self.start, self.history = 0, []
        return None

    # ---------------------------------------------------------------------------------------- records
    def draw(self, it: int) -> tuple[str, dict[str, torch.Tensor]]:
        """Iteration ``it``'s targets (seeded by (seed, it)) as tensors, on the CPU."""
        tg = traj.sample_targets(self.o.batch, rng=np.random.default_rng([self.o.seed, it]))
        b = target_tensors(tg, dtype=self.dtype, clean_code=self.o.clean_code)
        if self.dist.enabled:  # this rank's share of the iteration's targets ("start" is shared by all)
            part = self.dist.shard(self.o.batch)
            b = {k: (v if k == "start" else v[part]) for k, v in b.items()}
        return tg.robot, b

    def flush(self) -> None:
        """Move the pending per-iteration figures from the device into the history; a non-finite loss or
        gradient norm among them stops the training (:class:`pcmeta.runs.NonFiniteError`)."""
        for row in self.pending:
            vals = row.tolist()
            rec = {**dict(zip(META_FIGURES + ("grad_norm",), vals[1:])), "iteration": int(vals[0])}
            self.check(rec["iteration"] + 1, rec["loss"], rec["grad_norm"])
            self.history.append(rec)
        self.pending.clear()

    def kept(self) -> str:
        return kept_checkpoint(self.ck_path, self.saved)

    def check(self, it: int, loss, grad_norm) -> None:
        """Stop unless the loss and the gradient norm (None: not checked) of iteration ``it`` are finite."""
        check_finite({"loss": loss}, "loss", it, self.kept())
        check_finite({"gradient norm": grad_norm}, "gradient", it, self.kept())

    def check_params(self, it: int) -> None:
        check_finite(self.params, "parameters after the Adam step", it, self.kept())

    def save(self, it: int) -> None:
        """Checkpoint and weights after ``it`` iterations (atomic; rank 0); non-finite values stop the training."""
        self.flush()
        self.check_params(it)
        if not self.dist.is_main:
            self.saved = it
            return
        o = self.o
        config = {"batch": o.batch, "lr": o.lr, "lr_decay": o.lr_decay, "decay_every": o.decay_every,
                  "seed": o.seed, "init": o.init, "clean_code": o.clean_code, "clip_grad_norm": o.clip_grad_norm,
                  "clip_grad_relative": o.clip_grad_relative, "skip_grad_relative": o.skip_grad_relative,
                  "readout_lr_factor": o.readout_lr_factor, "detach_reset": o.detach_reset,
                  "trainee_noise": o.trainee_noise, "voltage_reg": o.voltage_reg,
                  "threshold_gradient": o.threshold_gradient}
        append_history(self.csv_path, [h for h in self.history if h["iteration"] >= self.logged])
        self.logged = it
        history = self.history[-o.best_window:] if o.slim_checkpoint else self.history
        atomic_save({"params": {k: v.detach().cpu() for k, v in self.params.items()},
                     "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "iteration": it,
                     "history": history, "config": config, "best": self.best, "clip_norms": self.clip_norms.cpu(),
                     "clip_calibration": self.clip_calibration.cpu(),
                     "setting_changes": self.setting_changes}, self.ck_path)
        save_weights_npz(self.params, self.w_path)
        self.saved = it

    def track_best(self, it: int) -> None:
        """Write best.npz when the last full window's mean loss is the lowest so far."""
        self.flush()
        w = self.o.best_window
        recent = self.history[-w:]  # history holds consecutive iterations; check the window is complete
        if len(recent) < w or recent[0]["iteration"] != it - w:
            return
        window = float(np.mean([h["loss"] for h in recent]))
        if math.isfinite(window) and window < self.best.get("window_loss", math.inf):
            self.check_params(it)
            if self.dist.is_main:
                save_weights_npz(self.params, self.best_path)
            self.best.update(iteration=it, window_loss=window, window=w)

    # ---------------------------------------------------------------------------------------- iterations
    def loss(self, robot: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.o
        bm = (lambda t: self.dist.all_reduce_mean([t])[0]) if self.dist.enabled else None
        return meta_loss_tensors(self.params, self.clock, batch, robot=robot, detach_reset=o.detach_reset,
                                 trainee_noise=o.trainee_noise, voltage_reg=o.voltage_reg,
                                 threshold_gradient=o.threshold_gradient, batch_mean=bm)

    def capture(self, robot: str, b0: dict[str, torch.Tensor]) -> None:
        """Capture forward + backward of one iteration as a CUDA graph (after two warm-up iterations)."""
        self.static = {k: v.to(self.dev) for k, v in b0.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (autograd and cuBLAS workspaces) before capture
            for _ in range(2):
                self.opt.zero_grad(set_to_none=True)
                self.loss(robot, self.static)[0].backward()
        torch.cuda.current_stream().wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            static_loss, self.static_figs = self.loss(robot, self.static)
            static_loss.backward()

    def backward(self, it: int, robot: str, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward + backward of iteration ``it`` (replayed or eager), the gradients (and figures) averaged over
        the processes; returns the figures."""
        if self.graph is not None:
            for k, v in b.items():
                self.static[k].copy_(v)  # stream-ordered after the previous replay
            self.graph.replay()
            figs = self.static_figs
        else:
            if self.o.trainee_noise != "none":
                torch.manual_seed(int(np.random.SeedSequence([self.o.seed, it, 1]).generate_state(1)[0]))
            loss, figs = self.loss(robot, {k: v.to(self.dev) for k, v in b.items()})
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        if self.dist.enabled:  # the mean over ranks of the shares' mean losses = the mean over all targets
            grads = self.dist.all_reduce_mean([self.params[k].grad for k in PARAM_KEYS])
            for k, g in zip(PARAM_KEYS, grads):
                if g is not None:
                    self.params[k].grad = g
            vals = self.dist.all_reduce_mean([torch.stack([figs[k].detach().to(self.dtype) for k in META_FIGURES])])
            figs = dict(zip(META_FIGURES, vals[0]))  # ("reg" is the whole batch's on every rank: its mean too)
        return figs

    def calibrate(self) -> None:
        """Before a new run's first step: the gradient norms of the first :data:`CLIP_CALIBRATION` iterations'
        batches at the initial weights, the relative clip's reference until as many steps are done."""
        bar = tqdm(range(CLIP_CALIBRATION), disable=not (self.o.progress and self.dist.is_main), leave=False,
                   desc="gradient norms at the initial weights")
        for k in bar:
            self.backward(k, *self.draw(k))
            self.clip_calibration[k] = gradient_norm([self.params[n].grad for n in PARAM_KEYS]).detach()
        self.opt.zero_grad(set_to_none=True)

    def step(self, it: int, robot: str, b: dict[str, torch.Tensor]) -> None:
        """One iteration: forward + backward, the clip, Adam (no step for a skipped gradient), lr schedule."""
        figs = self.backward(it, robot, b)
        gnorm, skipped = clip_gradients([self.params[k].grad for k in PARAM_KEYS], self.clip_norms, it,
                                        self.o.clip_grad_norm, self.o.clip_grad_relative, self.clip_calibration,
                                        self.o.skip_grad_relative)
        eager = self.graph is None  # (the graph path checks its figures when they reach the CPU, in flush)
        if eager:
            self.check(it + 1, figs["loss"].detach(), gnorm.detach())
        if self.o.skip_grad_relative is None or not bool(skipped):  # (on CUDA, bool() waits for the norm)
            self.opt.step()
        self.sched.step()
        if eager:
            self.check_params(it + 1)
        self.pending.append(torch.stack([torch.tensor(float(it), dtype=self.dtype, device=self.dev)]
                                        + [figs[k].detach().to(self.dtype) for k in META_FIGURES]
                                        + [gnorm.detach().to(self.dtype)]).clone())

    def _out_of_time(self, t_start: float) -> bool:
        """Rank 0's clock decides for every rank (they stop at the same iteration)."""
        late = time.perf_counter() - t_start > self.o.time_limit_s
        return bool(self.dist.broadcast_object(late)) if self.dist.enabled else late

    def train(self, t_start: float) -> int:
        """The loop from the start iteration to ``iterations`` (or the time limit); returns iterations done."""
        o, start, iterations = self.o, self.start, self.iterations
        nxt = self.draw(start) if start < iterations else None
        if start == 0 and nxt is not None and (o.clip_grad_relative, o.skip_grad_relative) != (None, None):
            self.calibrate()
        if o.cuda_graph and nxt is not None:
            self.capture(*nxt)
        bar = tqdm(range(start, iterations), initial=start, total=iterations,
                   disable=not (o.progress and self.dist.is_main), desc="meta-training", unit="it")
        it_done = start
        for it in bar:
            if o.time_limit_s is not None and self._out_of_time(t_start):
                break
            self.step(it, *nxt)
            it_done = it + 1
            if it_done < iterations:
                nxt = self.draw(it_done)  # on the CPU while the GPU works (graph path)
            if it_done % o.best_window == 0:
                self.track_best(it_done)
            if (it_done % o.checkpoint_every == 0) or it_done == iterations:
                self.save(it_done)
            if o.progress and (self.graph is None or it_done % 10 == 0):
                self.flush()
                bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}", reg=f"{self.history[-1]['reg']:.4f}")
        bar.close()
        if it_done % o.checkpoint_every and it_done != iterations and it_done > start:
            self.save(it_done)  # stopped by the time limit between checkpoints
        self.flush()
        if start >= iterations and not self.ck_path.is_file():
            self.save(start)
        return it_done


def _resolve_options(o: MetaTrainOptions, ck: dict | None, ck_path: Path) -> list[str]:
    """A resumed run: the given :data:`RUN_SETTINGS` against the run's (refused when they differ, unless
    ``allow_changed_settings``; returns the changes); then validate."""
    changes: list[str] = []
    if ck is not None:
        run = {**OLD_RUN_VALUES, **dict(ck.get("config", {}))}
        if o.readout_lr_factor is None:
            o.readout_lr_factor = float(run["readout_lr_factor"])
        changes = check_settings(ck_path, {k: getattr(o, k) for k in RUN_SETTINGS}, run,
                                 allow=o.allow_changed_settings, flags={"detach_reset": "--no-reset-gradient"})
        o.init = run.get("init", o.init)  # how the run started (its config records it)
    elif o.readout_lr_factor is None:
        o.readout_lr_factor = READOUT_LR_FACTOR
    if o.trainee_noise not in TRAINEE_NOISE:
        raise ValueError(f"trainee_noise must be one of {TRAINEE_NOISE}, got {o.trainee_noise!r}")
    if o.clip_grad_norm is not None and not (o.clip_grad_norm > 0 and math.isfinite(o.clip_grad_norm)):
        raise ValueError(f"clip_grad_norm must be None or a finite number > 0, got {o.clip_grad_norm!r}")
    if o.clip_grad_relative is not None and not (o.clip_grad_relative >= 1 and math.isfinite(o.clip_grad_relative)):
        raise ValueError(f"clip_grad_relative must be None (off) or a finite number >= 1 (times the median gradient "
                         f"norm), got {o.clip_grad_relative!r}")
    if o.skip_grad_relative is not None and not (o.skip_grad_relative >= 1 and math.isfinite(o.skip_grad_relative)):
        raise ValueError(f"skip_grad_relative must be None (off) or a finite number >= 1 (times the median gradient "
                         f"norm), got {o.skip_grad_relative!r}")
    if not (o.voltage_reg >= 0 and math.isfinite(o.voltage_reg)):
        raise ValueError(f"voltage_reg must be a finite number >= 0, got {o.voltage_reg!r}")
    if not (o.readout_lr_factor > 0 and math.isfinite(o.readout_lr_factor)):
        raise ValueError(f"readout_lr_factor must be a positive number, got {o.readout_lr_factor!r}")
    return changes


def _optimizer(params: dict[str, torch.Tensor], o: MetaTrainOptions, ck: dict | None, changed: bool = False):
    """Adam (the learning network's readout in its own group, lr x readout_lr_factor) and the step lr schedule,
    restored from the checkpoint when resuming (``changed``: with the given lr, factor and schedule)."""
    if ck is not None and len(ck["optimizer"]["param_groups"]) == 1:
        opt = torch.optim.Adam([params[k] for k in PARAM_KEYS], lr=o.lr)  # a run from before per-matrix groups
    else:
        opt = torch.optim.Adam([{"params": [params[k]], "lr": o.lr * (o.readout_lr_factor if k == "W_out_trainee"
                                                                     else 1.0)} for k in PARAM_KEYS], lr=o.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.decay_every, gamma=o.lr_decay)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if changed:  # allowed changes of lr, readout_lr_factor, lr_decay, decay_every apply from here on
            one = len(opt.param_groups) == 1
            sched.base_lrs = [o.lr * (o.readout_lr_factor if k == "W_out_trainee" and not one else 1.0)
                              for k in (PARAM_KEYS[:1] if one else PARAM_KEYS)]
            sched.step_size, sched.gamma = o.decay_every, o.lr_decay
            for g, base in zip(opt.param_groups, sched.base_lrs):
                g["initial_lr"], g["lr"] = base, base * o.lr_decay ** (sched.last_epoch // o.decay_every)
    return opt, sched
