"""Data-parallel meta-training on :mod:`torch.distributed` (``torchrun --nproc-per-node N -m pcmeta omniglot train``,
``... arm train``), shared by MAML's :class:`~pcmeta.agents.maml.training.Trainer` and e-prop's
:func:`~pcmeta.agents.eprop.training.meta_train`.

:func:`from_env` detects torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the process group (``gloo`` on CPU, ``nccl`` on CUDA); without it (or with a world
of one process) training is the ordinary single-process run. :class:`DistContext` holds the rank and world
size and the few collectives the trainers need: the meta-batch slice of a
rank, the all-reduce of the meta-gradient (mean over all tasks), barriers, agreement on errors and the
broadcast of a resumed state from rank 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


class DistributedError(RuntimeError):
    """Another rank failed (e.g. rank 0 could not open or resume the run folder)."""


@dataclass(frozen=True)
class DistContext:
    """Rank ``rank`` of ``world_size`` processes (``world_size == 1``: a single-process run, no collectives)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that holds the run folder and writes checkpoints, logs, weights, progress."""
        return self.rank == 0

    def device(self, device: str | torch.device) -> torch.device:
        """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed run."""
        dev = torch.device(device)
        if self.enabled and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", self.local_rank)
        return dev

    def shard(self, meta_batch: int) -> slice:
        """This rank's slice [rank*B/W, (rank+1)*B/W) of a meta-batch of ``meta_batch`` tasks."""
        check_meta_batch(meta_batch, self.world_size)
        per = meta_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def agree(self, ok: bool, what: str) -> None:
        """A collective: raise :class:`DistributedError` on every rank that is ``ok`` when some rank is not
        (that rank raises its own error after calling this)."""
        if not self.enabled:
            return
        dev = _collective_device()
        flag = torch.tensor([1.0 if ok else 0.0], device=dev)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        if ok and float(flag) < 1.0:
            raise DistributedError(f"rank {self.rank}: another rank failed to {what}; stopping")

    def all_reduce_mean(self, tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """The mean over ranks of each tensor (None stays None: the same on every rank), in one collective
        (one flat buffer, summed, then divided by the world size)."""
        if not self.enabled:
            return tensors
        present = [t for t in tensors if t is not None]
        if not present:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in present])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= self.world_size
        out, i = [], 0
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            out.append(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
        return out

    def broadcast_object(self, obj=None):
        """``obj`` of rank 0 on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]


def check_meta_batch(meta_batch: int, world_size: int, flag: str = "--meta-batch") -> None:
    """ValueError unless the meta-batch can be split evenly over ``world_size`` processes (``flag``: the option
    that sets it, named in the message)."""
    if world_size > 1 and int(meta_batch) % int(world_size) != 0:
        raise ValueError(f"the meta-batch of {meta_batch} tasks is not divisible by the world size {world_size} "
                         f"(each of the {world_size} processes takes meta-batch / world-size tasks); choose "
                         f"{flag} a multiple of {world_size}")


def _collective_device() -> torch.device | None:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment ((0, 1, 0) without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"torch.distributed environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"torch.distributed environment: RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local


_OWNED = False  # whether this module created the process group (destroy() then ends it)


def from_env(device: str | torch.device = "cpu") -> DistContext:
    """The :class:`DistContext` of this process: an initialised process group's, or torchrun's environment's
    (joining the group: ``nccl`` for a CUDA ``device``, else ``gloo``), or a single process."""
    global _OWNED
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return DistContext(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
    rank, world, local = env_world()
    if world == 1:
        return DistContext()
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    _OWNED = True
    return DistContext(rank, world, local)


def destroy() -> None:
    """End the process group :func:`from_env` created (no-op otherwise)."""
    global _OWNED
    if _OWNED and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _OWNED = False
