"""Data-parallel training on torch DistributedDataParallel (gloo), the same training whatever the
number of processes, and the torch backend's checkpoints.

Each process (torchrun's, or those `seqspec train --nproc N` starts) computes its contiguous shard
of every global batch (seqspec.shard_bounds); DDP sums the gradients, each shard's loss weighted
by shard size * world / global batch so that the sum is the global batch's mean. Inside a sharded
step, batch normalisation reduces its sums over every process (a differentiable all-reduce, so its
gradient is the global batch's too) and dropout draws its masks for the whole global batch, then
keeps this shard's rows: every example gets the mask it gets in one process. An empty shard (a last
batch smaller than the world) runs a stand-in example that weighs nothing, as DDP needs every
process in every reduction.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

import seqspec as s

TIMEOUT = datetime.timedelta(minutes=10)  # a collective waiting longer than this has lost a worker


@dataclass(frozen=True)
class Shard:
    """This process's part of one global batch: rows [start, start + size) of `total`; `live` False
    for an empty shard computed on a stand-in row that weighs nothing."""

    start: int
    size: int
    total: int
    live: bool
    world: int

    @property
    def weight(self) -> float:
        """The factor on this shard's mean loss that makes DDP's average the global batch's mean."""
        return self.size * self.world / self.total if self.live else 0.0


_active: Optional[Shard] = None


@contextlib.contextmanager
def sharded(shard: Optional[Shard]) -> Iterator[Optional[Shard]]:
    """Run a training step on `shard` (None: an ordinary, whole-batch step)."""
    global _active
    previous, _active = _active, shard
    try:
        yield shard
    finally:
        _active = previous


def sharded_step() -> bool:
    """Whether a data-parallel step is running in this process."""
    return _active is not None


def bernoulli(shape: tuple, batch_dim: int, keep: float, like: torch.Tensor) -> torch.Tensor:
    """A tensor of `shape` of 1 with probability `keep`, else 0, in `like`'s dtype. In a sharded step
    the draw is for the global batch (axis `batch_dim`), then cut to this shard, so an example's mask
    does not depend on the number of processes (every process draws the same, in the same order)."""
    shard = _active
    if shard is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep)
    full = list(shape)
    full[batch_dim] = shard.total
    return torch.empty(full, dtype=like.dtype, device=like.device).bernoulli_(keep).narrow(batch_dim, shard.start, shape[batch_dim])


def moments(x: torch.Tensor, dims: list[int], axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance, mean) over `dims` (biased variance), over the global batch in a sharded step."""
    shard = _active
    if shard is None:
        return torch.var_mean(x, dim=dims, correction=0)
    count = shard.total * (x.numel() // (x.shape[0] * x.shape[axis]))
    weight = 1.0 if shard.live else 0.0
    shape = [1] * x.dim()
    shape[axis] = -1
    mean = _all_sum(x.sum(dims) * weight, shard) / count
    centered = x - mean.view(shape)
    var = _all_sum(torch.square(centered).sum(dims) * weight, shard) / count
    return var, mean


def _all_sum(t: torch.Tensor, shard: Shard) -> torch.Tensor:
    return t if shard.world == 1 else _AllSum.apply(t)


class _AllSum(torch.autograd.Function):
    """The sum over every process, differentiable: every process's loss depends on every process's
    sums, so the gradient of the sum is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.detach().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def start(plan: s.Plan) -> "Engine":
    """The engine of this process: one process, or one of plan.nproc joined in a gloo process group
    through torchrun's environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)."""
    if plan.nproc <= 1:
        return Engine(1, 0)
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k not in os.environ]
        if missing:
            raise s.SpecError(f"--nproc {plan.nproc}: the torch backend's processes meet through {', '.join(missing)} (set by torchrun or seqspec train --nproc)")
        dist.init_process_group("gloo", init_method="env://", timeout=TIMEOUT)
        # Torch asks for the group to be destroyed before exit: left to the interpreter's own
        # teardown, gloo's threads can still be joinable when their objects are destroyed, which
        # aborts the process ("terminate called without an active exception", exit -6; seen once
        # in CI under load on a worker that had finished training).
        atexit.register(_close)
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != plan.nproc:
        raise s.SpecError(f"--nproc {plan.nproc}: the process group has {world} processes")
    return Engine(world, rank)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class Engine:
    """One process's side of data-parallel training (world 1: plain single-process training)."""

    def __init__(self, world: int, rank: int):
        self.world, self.rank = world, rank

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DDP over `model` (whose buffers each process keeps: batch
        norm's statistics are the same in every process, reduced over the global batch)."""
        if self.world == 1:
            return model
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():
            # torch 2.13 deprecates broadcast_buffers for forward_sync_buffers, which still syncs at init; False is what is meant
            warnings.simplefilter("ignore", FutureWarning)
            return DistributedDataParallel(model, broadcast_buffers=False)

    def shard(self, batch: int) -> tuple[slice, Optional[Shard]]:
        """The rows of a global batch of `batch` this process computes, and the step's shard."""
        if self.world == 1:
            return slice(0, batch), None
        a, b = s.shard_bounds(batch, self.world, self.rank)
        if a == b:
            return slice(0, 1), Shard(0, 1, batch, False, self.world)
        return slice(a, b), Shard(a, b - a, batch, True, self.world)

    def stop(self, stop: s.StopRequest) -> bool:
        """Whether any process was asked to stop: all stop at the same batch."""
        if self.world == 1:
            return bool(stop)
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def total(self, sums: dict) -> dict:
        """Per-process running sums of the epoch, summed over the processes."""
        if self.world == 1:
            return sums
        keys = list(sums)
        stacked = torch.stack([sums[k] for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked))


# --- checkpoints -------------------------------------------------------------------------------

SUFFIX = ".pt"


def snapshot(epoch: int, model: nn.Module, optimizer, stopper, records: list[dict]) -> dict:
    """Everything epoch `epoch` (1-based, completed) leaves that the next epochs read: a copy."""
    copy = lambda state: None if state is None else {k: v.detach().clone() for k, v in state.items()}  # noqa: E731
    return {
        "epoch": epoch,
        "model": copy(model.state_dict()),
        "optimizer": {"iterations": optimizer.iterations, "m": [t.clone() for t in optimizer.m], "v": [t.clone() for t in optimizer.v]},
        "rng": torch.get_rng_state(),
        "early_stopping": {
            "best": stopper.best,
            "best_epoch": stopper.best_epoch,
            "wait": stopper.wait,
            "best_state": copy(stopper.best_state),
        },
        "records": [dict(r) for r in records],
    }


def save(checkpoint, state: dict, spec: s.Spec, plan: s.Plan) -> None:
    checkpoint.save(state["epoch"], SUFFIX, lambda path: torch.save(state, path), spec, plan, "torch")


def restore(checkpoint, model: nn.Module, optimizer, stopper) -> tuple[int, list[dict]]:
    """Load the checkpoint a resumed run continues from into model, optimizer, the random generator
    and early stopping; (epochs done, their records). (0, []) for a fresh run."""
    path = checkpoint.resume_state() if checkpoint is not None else None
    if path is None:
        return 0, []
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain values only: no code runs
    except Exception as e:
        raise s.SpecError(f"--resume {checkpoint.folder}: {path.name}: not a torch checkpoint seqspec can read ({type(e).__name__}: {e})") from None
    if state.get("epoch") != checkpoint.resume["epoch"]:
        raise s.SpecError(f"--resume {checkpoint.folder}: {path.name} is of epoch {state.get('epoch')}, its record says {checkpoint.resume['epoch']}")
    model.load_state_dict(state["model"])
    opt = state["optimizer"]
    if len(opt["m"]) != len(optimizer.m) or len(opt["v"]) != len(optimizer.v):
        raise s.SpecError(f"--resume {checkpoint.folder}: {path.name}: its optimizer state does not fit the model")
    optimizer.iterations = opt["iterations"]
    for mine, theirs in ((optimizer.m, opt["m"]), (optimizer.v, opt["v"])):
        for t, saved in zip(mine, theirs):
            t.copy_(saved)
    torch.set_rng_state(state["rng"])
    es = state["early_stopping"]
    stopper.best = es["best"] if es["best"] is not None else math.inf
    stopper.best_epoch, stopper.wait, stopper.best_state = es["best_epoch"], es["wait"], es["best_state"]
    return state["epoch"], list(state["records"])
