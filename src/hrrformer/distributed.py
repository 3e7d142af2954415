"""Process groups for training under ``torchrun``: data parallelism × sequence parallelism.

Single-process runs use the same code path with world size 1, so the data order of a
one-process run and of an N-process run with the same global batch is identical.

The world is a 2-D grid, world size = DP × SP (``sequence_parallel`` = SP, default 1): rank
r = dp·SP + sp. The SP consecutive ranks of a row form a *sequence-parallel group*: they see
the same batch and each holds a contiguous chunk of every sequence. The ranks with the same sp
index form a *data-parallel group*: they see different batches. With SP = 1 this is plain data
parallelism (DistributedDataParallel over the world).
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .model import ShardedPositionEmbedding

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "check_grid",
    "dp_all_reduce_sum",
    "setup_distributed",
    "sp_all_reduce_sum",
    "teardown_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the grid. ``sp_group``/``dp_group`` are None where the
    dimension has size 1 (``dp_group`` None with SP = 1 means the whole world)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sequence_parallel: int = 1
    sp_group: Any = field(default=None, compare=False, repr=False)
    dp_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sp_rank(self) -> int:
        """Position in the sequence-parallel group: which chunk of each sequence this rank holds."""
        return self.rank % self.sequence_parallel

    @property
    def dp_rank(self) -> int:
        """Index of this rank's sequence-parallel group: which share of the data it sees."""
        return self.rank // self.sequence_parallel

    @property
    def dp_size(self) -> int:
        """Number of data-parallel replicas (sequence-parallel groups)."""
        return self.world_size // self.sequence_parallel


def check_grid(world_size: int, sequence_parallel: int) -> None:
    """ValueError unless ``world_size`` = DP × ``sequence_parallel`` for a whole DP ≥ 1."""
    if sequence_parallel < 1:
        raise ValueError(f"--sequence-parallel must be ≥ 1, got {sequence_parallel}")
    if world_size % sequence_parallel:
        hint = " (start it with torchrun --nproc_per_node N, N a multiple of it)" if world_size == 1 else ""
        raise ValueError(
            f"--sequence-parallel {sequence_parallel} does not divide the world size {world_size}: "
            f"the processes form a grid of data-parallel × sequence-parallel ranks{hint}"
        )


def setup_distributed(device: torch.device, timeout_s: float = 600.0, sequence_parallel: int = 1) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU; on CUDA,
    nccl for CUDA tensors and gloo for CPU ones (the metrics and the checkpoint's RNG states).

    With ``sequence_parallel`` > 1, make every sequence-parallel group (consecutive ranks) and
    then every data-parallel group, on every rank in the same order (``dist.new_group`` is a
    collective over the world). The grid is checked before any process group is joined, so a
    bad ``sequence_parallel`` fails the same way on every rank, without waiting on anyone.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_grid(world_size, sequence_parallel)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    check_grid(world_size, sequence_parallel)
    sp_group = dp_group = None
    if sequence_parallel > 1:
        sp, dp = sequence_parallel, world_size // sequence_parallel
        for d in range(dp):
            group = dist.new_group(list(range(d * sp, (d + 1) * sp)))
            if rank // sp == d:
                sp_group = group
        for s in range(sp):
            group = dist.new_group(list(range(s, world_size, sp)))
            if rank % sp == s:
                dp_group = group
    return DistInfo(
        rank=rank,
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        sequence_parallel=sequence_parallel,
        sp_group=sp_group,
        dp_group=dp_group,
    )


def teardown_distributed(drain_s: float = 0.2) -> None:
    """Leave the process group, then give its gloo worker threads ``drain_s`` seconds without the GIL.

    A gloo barrier holds the collectives still in flight when it was issued, and a worker thread
    frees the barrier after it completes: the last reference to those collectives' tensors can
    die on the worker. Dropping a tensor that Python has seen takes the GIL. If the main thread
    has reached interpreter shutdown by then, the worker cannot take it, and the process aborts
    ("terminate called without an active exception"; about once in 70 two-rank runs). The group
    is not freed by ``destroy_process_group`` (the C++ side holds it), so its destructor never
    joins the workers; sleeping releases the GIL to a worker that waits for it.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(drain_s)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks of the world, in place (a no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def dp_all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over the data-parallel group, in place: once per batch, not once per
    sequence-parallel rank (whose copies of per-batch statistics are identical)."""
    if info.dp_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=info.dp_group)
    return tensor


def sp_all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over the sequence-parallel group, in place: per-batch statistics whose ranks
    each hold a part (a per-position task's positions) become the batch's on every rank of the group."""
    if info.sequence_parallel > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=info.sp_group)
    return tensor


def average_gradients(model: nn.Module, info: DistInfo, replicated_loss: bool = True) -> None:
    """The gradient of the global batch's mean loss on every rank, when training without DDP.

    After ``backward``, rank (dp, sp) holds its share of ∇(Σ_sp loss_(dp, sp)) (see
    :mod:`hrrformer.parallel`). A classifier's ranks compute the same loss on the same batch
    (``replicated_loss``), so the sum of the shares over a sequence-parallel group is
    SP · ∇loss_dp, and one all-reduce (sum) over the whole world divided by the world size gives
    Σ_dp SP · ∇loss_dp / (DP · SP) = mean_dp ∇loss_dp — the same as
    ``reduce_sequence_parallel_gradients`` over each SP group followed by a mean over each DP
    group, in one collective instead of two. A per-position loss is split instead (each rank's
    term is its positions' share of the batch's mean, the terms of a group summing to loss_dp;
    ``replicated_loss=False``): the sum over the world is then divided by DP only. Every parameter must be replicated (a
    :class:`~hrrformer.model.ShardedPositionEmbedding` is refused); a parameter a rank did
    not use (the CLS vector off sp rank 0) counts as a zero gradient. One all-reduce per
    (dtype, device).
    """
    if not info.enabled:
        return
    if any(isinstance(m, ShardedPositionEmbedding) for m in model.modules()):
        raise ValueError("average_gradients: sharded position tables are per-rank, not replicated")
    buckets: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for params in buckets.values():
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(info.world_size if replicated_loss else info.dp_size)
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
