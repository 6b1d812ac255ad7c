"""Meta-training of MAML (:class:`Trainer`: Adam outer loop, atomic resumable checkpoints, validation) and the
benchmark of the vectorised meta-objective against a per-task loop (:func:`bench_meta_iterations`).

The run folder is held and checked through :mod:`pcmeta.runs` (lock, temporaries, another run, changed settings,
non-finite values), as for the spiking learner's :func:`~pcmeta.agents.eprop.meta_train`.

Under ``torchrun`` (:mod:`pcmeta.agents.distributed`) the meta-batch is sharded over the ranks: each
draws the same full meta-batch from the same seeded sampler, computes the meta-gradient of its slice, and the
gradients are averaged over the ranks (the mean over all tasks, as in one process) before the Adam step; rank 0
alone holds the run folder and writes checkpoints, logs, weights and the progress bar."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcmeta.files import load_checkpoint, save_torch
from pcmeta.runs import (NonFiniteError, RunFolder, check_checkpoint_finite, check_finite, check_settings, kept_checkpoint,
                         open_run)

from .config import MAMLConfig
from pcmeta.agents.distributed import DistContext, DistributedError, check_meta_batch
from pcmeta.agents.distributed import from_env as dist_from_env
from .evaluation import evaluate, mean_ci95
from .inner import meta_loss_loop
from .model import MAML
from .weights import save_weights

#: A MAML run's own files in its folder (what ``overwrite`` deletes, what makes a folder "hold a run").
RUN_FILES = ("ckpt.pt", "train.log", "weights.npz")
#: Temporary files of killed writers of earlier versions (removed when a run folder is opened).
_OLD_TEMPORARIES = (".ckpt.pt.*.tmp", ".weights.npz.*.tmp")
#: The ``pcmeta omniglot train`` flag of each setting a resumed run must keep (the other config fields come
#: from ``--preset``); the total iterations may change.
SETTING_FLAGS = {"seed": "--seed", "meta_batch": "--meta-batch", "bits": "--bits", "quantize": "--quantize",
                 "first_order": "--first-order", "train_substrate": "--noise-aware", "train_time_s": "--train-time"}


@dataclass
class TrainState:
    iteration: int = 0
    history: list = field(default_factory=list)


class Trainer:
    """Meta-training with checkpoints (atomic, resumable with identical results).

    Args:
        cfg: hyper-parameters.
        run_dir: folder for ``ckpt.pt``, ``train.log``, ``weights.npz``.
        data_dir: Omniglot folder (see :func:`pcmeta.tasks.omniglot.resolve_data_dir`).
        seed: seeds initialisation, task sampling and quantization noise.
        checkpoint_every: iterations between checkpoints; eval_every: iterations between validation
            evaluations (``eval_tasks`` tasks from the split's val part, fixed seed).
        dist: the data-parallel context (:class:`~pcmeta.agents.distributed.DistContext`); None: detected
            from torchrun's environment (joining the process group), a single process without it. With more
            than one rank, ``cfg.meta_batch`` must be divisible by the world size; only rank 0 touches the
            run folder.

    The run folder is held (:func:`pcmeta.runs.open_run`: an OS lock, temporaries of killed writers removed)
    from :meth:`open_run` / :meth:`resume` / :meth:`train` until :meth:`train` returns or fails (or
    :meth:`close`). A fresh run refuses a folder that holds another run (``open_run(overwrite=True)`` deletes
    it first); :meth:`resume` refuses other settings (``allow_changed_settings``) and non-finite parameters;
    a non-finite loss, gradient or parameter stops :meth:`train` (:class:`pcmeta.runs.NonFiniteError`) before
    that state is written.
    """

    def __init__(self, cfg: MAMLConfig, run_dir: str | os.PathLike, data_dir=None, seed: int = 0,
                 device: str = "cpu", checkpoint_every: int = 250, eval_every: int = 500,
                 eval_tasks: int = 200, log_every: int = 50, init: dict | None = None,
                 dist: DistContext | None = None) -> None:
        from pcmeta.tasks.omniglot import TaskSampler, class_pool

        if dist is None:
            check_meta_batch(cfg.meta_batch, int(os.environ.get("WORLD_SIZE", "1") or 1))  # before joining
            dist = dist_from_env(device)
        check_meta_batch(cfg.meta_batch, dist.world_size)
        self.dist = dist
        device = dist.device(device)
        self.cfg, self.seed = cfg, seed
        self.run_dir = Path(run_dir)
        self.checkpoint_every, self.eval_every = checkpoint_every, eval_every
        self.eval_tasks, self.log_every = eval_tasks, log_every
        self.train_pool = class_pool(cfg.split, "train", data_dir)
        self.val_pool = class_pool(cfg.split, "val", data_dir)
        self.sampler = TaskSampler(self.train_pool, cfg.n_way, cfg.k_shot, cfg.n_query,
                                   np.random.default_rng([seed, 1]))
        self.model = MAML(cfg, seed=seed, device=device)
        if init is not None:  # warm start (e.g. quantization-aware fine-tuning of float weights)
            missing = set(self.model.params) - set(init)
            if missing:
                raise ValueError(f"initial weights lack {sorted(missing)}")
            with torch.no_grad():
                for k, v in self.model.params.items():
                    if tuple(init[k].shape) != tuple(v.shape):
                        raise ValueError(f"initial weight {k!r} has shape {tuple(init[k].shape)}, expected "
                                         f"{tuple(v.shape)}")
                    v.copy_(init[k])
        self.opt = torch.optim.Adam(list(self.model.params.values()), lr=cfg.meta_lr)
        self.state = TrainState()
        self._tracked: list[tuple[float, float]] = []
        self._run: RunFolder | None = None
        self._ckpt_iteration: int | None = None  # iteration of the last checkpoint written or resumed
        self._setting_changes: list = []  # settings changed on resume (allow_changed_settings), recorded

    def open_run(self, resume: bool = False, overwrite: bool = False) -> RunFolder:
        """Hold the run folder until :meth:`train` ends (or :meth:`close`); see :func:`pcmeta.runs.open_run`:
        unless ``resume``, a folder holding another run is refused, or deleted first with ``overwrite``.
        A no-op when already held. In a distributed run only rank 0 holds the folder (the others get None);
        every rank must call this (a collective: all fail when rank 0 cannot open the folder)."""
        ok = False
        try:
            if self._run is None and self.dist.is_main:
                self._run = open_run(self.run_dir, RUN_FILES, resume=resume, overwrite=overwrite,
                                     temporaries=_OLD_TEMPORARIES)
            ok = True
        finally:
            self.dist.agree(ok, "open the run folder")
        return self._run

    def close(self) -> None:
        """Release the run folder."""
        if self._run is not None:
            self._run.close()
            self._run = None

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "ckpt.pt"

    def checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        check_finite(self.model.params, "parameters", self.state.iteration,
                     kept_checkpoint(self.ckpt_path, self._ckpt_iteration))
        sub = self.model.substrate
        obj = {
            "config": self.cfg.to_dict(),
            "seed": self.seed,
            "iteration": self.state.iteration,
            "params": {k: v.detach().clone() for k, v in self.model.params.items()},
            "optimizer": self.opt.state_dict(),
            "sampler_state": self.sampler.get_state(),
            "history_json": json.dumps(self.state.history),
            "tracked_json": json.dumps(self._tracked),
            "setting_changes_json": json.dumps(self._setting_changes),
        }
        gen = getattr(sub, "generator", None)
        if isinstance(gen, torch.Generator):
            obj["substrate_rng"] = gen.get_state()
        save_torch(self.ckpt_path, obj)
        save_weights(self.model.params, self.cfg, self.run_dir / "weights.npz")
        self._ckpt_iteration = self.state.iteration

    def resume(self, path: str | os.PathLike | None = None, allow_changed_settings: bool = False) -> bool:
        """Load the last checkpoint (``run_dir/ckpt.pt`` by default); False if there is none (a new run starts).

        Holds the run folder (removing temporary files of writes cut short by an interruption). A checkpoint made
        with other settings (config and seed; the total iterations may change) is refused, naming each
        difference, unless ``allow_changed_settings`` (the changes are recorded in later checkpoints and the
        log); one with non-finite parameters is refused (:class:`pcmeta.runs.NonFiniteError`)."""
        self.open_run(resume=True)
        try:
            if not self.dist.enabled:
                return self._load(Path(path) if path else self.ckpt_path, allow_changed_settings)
            found, failure = False, None
            if self.dist.is_main:
                try:
                    found = self._load(Path(path) if path else self.ckpt_path, allow_changed_settings)
                except BaseException as exc:
                    failure = exc
            got = self.dist.broadcast_object(
                ("error", repr(failure)) if failure is not None else ("ok", found, self._rank_state() if found
                                                                      else None))
            if failure is not None:
                raise failure
            if got[0] == "error":
                raise DistributedError(f"rank {self.dist.rank}: rank 0 could not resume: {got[1]}")
            if not self.dist.is_main and got[1]:
                self._set_rank_state(got[2])
            return bool(got[1])
        except BaseException:
            self.close()
            raise

    def _rank_state(self) -> dict:
        """The resumed training state rank 0 sends to the other ranks (CPU tensors)."""
        gen = getattr(self.model.substrate, "generator", None)
        return {"params": {k: v.detach().cpu() for k, v in self.model.params.items()},
                "optimizer": _to_cpu(self.opt.state_dict()), "sampler_state": self.sampler.get_state(),
                "iteration": self.state.iteration, "history": self.state.history, "tracked": self._tracked,
                "setting_changes": self._setting_changes,
                "substrate_rng": gen.get_state() if isinstance(gen, torch.Generator) else None}

    def _set_rank_state(self, st: dict) -> None:
        with torch.no_grad():
            for k, v in st["params"].items():
                self.model.params[k].copy_(v)
        self.opt.load_state_dict(st["optimizer"])
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.meta_lr
        self.sampler.set_state(st["sampler_state"])
        self.state.iteration = self._ckpt_iteration = int(st["iteration"])
        self.state.history, self._tracked = st["history"], [tuple(t) for t in st["tracked"]]
        self._setting_changes = st["setting_changes"]
        gen = getattr(self.model.substrate, "generator", None)
        if st["substrate_rng"] is not None and isinstance(gen, torch.Generator):
            gen.set_state(st["substrate_rng"])

    def _load(self, p: Path, allow_changed_settings: bool) -> bool:
        if not p.is_file():
            return False
        ck = load_checkpoint(p, "MAML checkpoint", required=("config", "params"), map_location=self.model.device)
        stored = MAMLConfig.from_dict(ck["config"]).to_dict()
        run = {**{k: v for k, v in stored.items() if k != "iterations"}, "seed": ck.get("seed", self.seed)}
        given = {**{k: v for k, v in self.cfg.to_dict().items() if k != "iterations"}, "seed": self.seed}
        changes = check_settings(p, given, run, allow=allow_changed_settings, flags=SETTING_FLAGS,
                                 default_flag="--preset")
        check_checkpoint_finite(p, ck["params"])
        for k, v in ck["params"].items():
            if k not in self.model.params or tuple(self.model.params[k].shape) != tuple(v.shape):
                raise ValueError(f"{p}: parameter {k!r} of shape {tuple(v.shape)} does not fit this model "
                                 f"({tuple(self.model.params[k].shape) if k in self.model.params else 'none'})")
        with torch.no_grad():
            for k, v in ck["params"].items():
                self.model.params[k].copy_(v)
        self.opt.load_state_dict(ck["optimizer"])
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.meta_lr  # (a changed meta_lr applies from here on)
        self.sampler.set_state(ck["sampler_state"])
        self.state.iteration = self._ckpt_iteration = int(ck["iteration"])
        self.state.history = json.loads(ck["history_json"])
        self._tracked = [tuple(t) for t in json.loads(ck["tracked_json"])]
        self._setting_changes = json.loads(ck.get("setting_changes_json", "[]"))
        if changes:
            self._setting_changes.append({"iteration": self.state.iteration, "changes": changes})
            self._log(f"# resume at iteration {self.state.iteration} with changed settings: {'; '.join(changes)}")
        gen = getattr(self.model.substrate, "generator", None)
        if "substrate_rng" in ck and isinstance(gen, torch.Generator):
            gen.set_state(ck["substrate_rng"])
        return True

    def step(self) -> tuple[float, float]:
        """One meta-iteration; returns (query loss, mean query accuracy)."""
        if self.dist.enabled:
            return self._step_distributed()
        sx, sy, qx, qy = self.sampler.sample(self.cfg.meta_batch).torch(self.model.device)
        self.opt.zero_grad(set_to_none=True)
        loss, acc = self.model.meta_loss(sx, sy, qx, qy)
        loss.backward()
        it, kept = self.state.iteration + 1, kept_checkpoint(self.ckpt_path, self._ckpt_iteration)
        check_finite({"loss": loss.detach()}, "loss", it, kept)
        check_finite({k: p.grad for k, p in self.model.params.items()}, "gradient", it, kept)
        self.opt.step()
        check_finite(self.model.params, "parameters after the Adam step", it, kept)
        self.state.iteration = it
        return float(loss.detach()), float(acc.detach().mean())

    def _step_distributed(self) -> tuple[float, float]:
        """One meta-iteration of this rank's slice of the (same, full) meta-batch; the gradients, loss and
        accuracy are averaged over the ranks (equal slices: the mean over all tasks) before the Adam step."""
        sl = self.dist.shard(self.cfg.meta_batch)
        sx, sy, qx, qy = (t[sl] for t in self.sampler.sample(self.cfg.meta_batch).torch(self.model.device))
        self.opt.zero_grad(set_to_none=True)
        loss, acc = self.model.meta_loss(sx, sy, qx, qy)
        loss.backward()
        params = list(self.model.params.values())
        stats = torch.stack([loss.detach(), acc.detach().mean()]).to(params[0].dtype)
        *grads, stats = self.dist.all_reduce_mean([p.grad for p in params] + [stats])
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g
        it, kept = self.state.iteration + 1, kept_checkpoint(self.ckpt_path, self._ckpt_iteration)
        check_finite({"loss": stats[0]}, "loss", it, kept)
        check_finite({k: p.grad for k, p in self.model.params.items()}, "gradient", it, kept)
        self.opt.step()
        check_finite(self.model.params, "parameters after the Adam step", it, kept)
        self.state.iteration = it
        return float(stats[0]), float(stats[1])

    def validate(self, tasks: int | None = None) -> tuple[float, float]:
        from pcmeta.tasks.omniglot import TaskSampler

        s = TaskSampler(self.val_pool, self.cfg.n_way, self.cfg.k_shot, self.cfg.n_query,
                        np.random.default_rng([self.seed, 2]))
        # validation must not consume the training's random numbers (4-bit quantization noise), so
        # that a run interrupted and resumed at any point matches an uninterrupted one
        gen = getattr(self.model.substrate, "generator", None)
        saved = gen.get_state() if isinstance(gen, torch.Generator) else None
        if saved is not None:
            gen.manual_seed(self.seed * 1_000_003 + self.state.iteration)
        try:
            return mean_ci95(evaluate(self.model, s, tasks or self.eval_tasks))
        finally:
            if saved is not None:
                gen.set_state(saved)

    def _log(self, line: str) -> None:
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "train.log", "a") as f:
            f.write(line + "\n")

    def train(self, iterations: int | None = None, progress: bool = True) -> dict:
        """Meta-train up to ``iterations`` (default cfg.iterations) total iterations, holding the run folder
        (a fresh run in a folder that holds another run is refused, see :meth:`open_run`)."""
        self.open_run(resume=self.state.iteration > 0)
        try:
            return self._train(iterations, progress)
        except NonFiniteError as exc:
            self._log(f"# stopped: {exc}")
            raise
        finally:
            self.close()

    def _train(self, iterations: int | None, progress: bool) -> dict:
        total = self.cfg.iterations if iterations is None else iterations
        bar = None
        if progress and self.dist.is_main:
            from tqdm.auto import tqdm

            import sys

            bar = tqdm(total=total, initial=self.state.iteration, desc="meta-train", unit="it",
                       dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        t0, it0 = time.time(), self.state.iteration
        if it0 == 0:
            self._log(f"# start {time.strftime('%Y-%m-%d %H:%M:%S')} config {json.dumps(self.cfg.to_dict())} "
                      f"seed {self.seed}")
        else:
            self._log(f"# resume at iteration {it0} {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            while self.state.iteration < total:
                loss, acc = self.step()
                self._tracked.append((loss, acc))
                it = self.state.iteration
                if it % self.log_every == 0 or it == total:
                    L = np.mean([t[0] for t in self._tracked]); A = np.mean([t[1] for t in self._tracked])
                    self._tracked = []
                    rec = {"iteration": it, "loss": float(L), "acc": float(A),
                           "s_per_it": (time.time() - t0) / max(it - it0, 1)}
                    if self.eval_every and (it % self.eval_every == 0 or it == total):
                        if self.dist.is_main:  # (the other ranks wait)
                            va, ci = self.validate()
                            rec.update(val_acc=va, val_ci95=ci)
                        self.dist.barrier()
                    self.state.history.append(rec)
                    self._log(json.dumps(rec))
                    if bar is not None:
                        post = dict(loss=f"{L:.3f}", acc=f"{A:.3f}")
                        if "val_acc" in rec:
                            post["val"] = f"{rec['val_acc']:.3f}"
                        bar.set_postfix(post)
                if bar is not None:
                    bar.update(1)
                if it % self.checkpoint_every == 0 or it == total:
                    self.checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if self.dist.is_main:
            save_weights(self.model.params, self.cfg, self.run_dir / "weights.npz")
        return {"iteration": self.state.iteration, "history": self.state.history}


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def bench_meta_iterations(cfg: MAMLConfig, iterations: int = 5, data_dir=None, seed: int = 0,
                          device: str = "cpu") -> dict:
    """Meta-iterations per second of the vectorised objective and of the per-task autograd loop.

    Both run the same tasks (a fixed list of ``iterations`` meta-batches, sampling included in the
    timing), the same parameters and an Adam step each, as two training runs advanced in turn (vectorised
    iteration i, then loop iteration i), so that both see the same machine load; one untimed warm-up
    iteration each. The loop is learn2learn's way: per task, adapt with ``autograd.grad`` (create_graph),
    native batch-norm, and back-propagate the task's query loss right away.
    Returns {"vectorised_it_s", "loop_it_s", "speedup"} from the median wall time per iteration, the same
    from the median of this process's CPU time per iteration (``*_it_per_cpu_s``, ``speedup_cpu``: robust
    when other work shares the cores) and "loss_diff" (mean loss of the two runs; they compute the same
    objective).
    """
    from pcmeta.tasks.omniglot import TaskSampler, class_pool

    pool = class_pool(cfg.split, "train", data_dir)

    def make():
        sampler = TaskSampler(pool, cfg.n_way, cfg.k_shot, cfg.n_query, np.random.default_rng(seed))
        model = MAML(cfg, seed=seed, device=device)
        return sampler, model, torch.optim.Adam(list(model.params.values()), lr=cfg.meta_lr)

    runs = {"vec": make(), "loop": make()}
    times = {k: {"wall": [], "cpu": [], "loss": []} for k in runs}

    def step(kind: str, timed: bool) -> None:
        sampler, model, opt = runs[kind]
        t0, c0 = time.perf_counter(), time.process_time()
        sx, sy, qx, qy = sampler.sample(cfg.meta_batch).torch(model.device)
        opt.zero_grad(set_to_none=True)
        if kind == "loop":
            loss, _ = meta_loss_loop(model.params, sx, sy, qx, qy, cfg, transform=model.transform,
                                     backward=True, native_bn=True)
        else:
            loss, _ = model.meta_loss(sx, sy, qx, qy)
            loss.backward()
        opt.step()
        if timed:
            times[kind]["wall"].append(time.perf_counter() - t0)
            times[kind]["cpu"].append(time.process_time() - c0)
        times[kind]["loss"].append(float(loss.detach()))

    for i in range(iterations + 1):
        for kind in runs:
            step(kind, timed=i > 0)
    med = {k: {m: float(np.median(v[m])) for m in ("wall", "cpu")} for k, v in times.items()}
    vec, loop = 1 / med["vec"]["wall"], 1 / med["loop"]["wall"]
    vec_cpu, loop_cpu = 1 / med["vec"]["cpu"], 1 / med["loop"]["cpu"]
    return {"vectorised_it_s": vec, "loop_it_s": loop, "speedup": vec / loop,
            "vectorised_it_per_cpu_s": vec_cpu, "loop_it_per_cpu_s": loop_cpu, "speedup_cpu": vec_cpu / loop_cpu,
            "loss_diff": abs(float(np.mean(times["vec"]["loss"])) - float(np.mean(times["loop"]["loss"])))}
