"""Collectives with autograd over a ``torch.distributed`` group; ``None`` means one process.

Every function here is the identity (or its one-process equivalent) for ``group=None`` or a group
of one rank, so callers need no branch. The autograd rules make the gradient that of the group
objective J = Σ_r loss_r (the sum over ranks of the loss each one backpropagates)::

    all_reduce_sum      y = Σ_r x_r                 backward: all-reduce of ∂J/∂y
    all_gather_stack    y = stack_r x_r  (G, …)      backward: all-reduce, then this rank's slot
    exclusive_prefix    y_r = Σ_{r' < r} x_r'        (one all-gather)
    broadcast           y = x_src                    backward: reduce to src, zeros elsewhere
    all_reduce_min      y = min_r x_r                no gradient (for exact power-of-two scales)

This module imports nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "Group",
    "all_gather_stack",
    "all_reduce_min",
    "all_reduce_sum",
    "broadcast",
    "exclusive_prefix_sum",
    "gather_ints",
    "group_rank",
    "group_size",
]

Group = Any  # a torch.distributed ProcessGroup, or None for "one process"


def group_size(group: Group) -> int:
    """Number of ranks in ``group``; 1 for ``None``."""
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group: Group) -> int:
    """This process's rank inside ``group``; 0 for ``None``."""
    if group is None:
        return 0
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the sequence-parallel group")
    return rank


def _global_rank(group: Group, rank_in_group: int) -> int:
    return dist.get_global_rank(group, rank_in_group) if group is not dist.group.WORLD else rank_in_group


def gather_ints(values: Sequence[int], group: Group, device: torch.device | str = "cpu") -> list[list[int]]:
    """All-gather a few integers from every rank → one list per rank, in rank order (no grad)."""
    if group_size(group) == 1:
        return [[int(v) for v in values]]
    mine = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(group_size(group))]
    dist.all_gather(out, mine, group=group)
    return [o.tolist() for o in out]


class _AllReduceSum(torch.autograd.Function):
    """y = Σ_r x_r on every rank; backward: ∂J/∂x_r = Σ_r' ∂J/∂y_r' (an all-reduce again)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, group=ctx.group)
        return g, None


class _AllGather(torch.autograd.Function):
    """y = stack_r(x_r), (G, …) on every rank; backward: ∂J/∂x_r = (Σ_r' ∂J/∂y_r')[r].

    The backward all-reduces the whole (G, …) gradient rather than reduce-scattering it, since
    gloo has no reduce-scatter; the tensors gathered here are O(B·h·d), so that costs nothing.
    """

    @staticmethod
    def forward(ctx, x, group):
        ctx.group, ctx.rank = group, dist.get_rank(group)
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, g):
        g = g.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, group=ctx.group)
        return g[ctx.rank], None


class _Broadcast(torch.autograd.Function):
    """y = x_src on every rank; backward: ∂J/∂x_src = Σ_r ∂J/∂y_r, and 0 for the other ranks' x."""

    @staticmethod
    def forward(ctx, x, group, src):
        ctx.group, ctx.src, ctx.is_src = group, _global_rank(group, src), dist.get_rank(group) == src
        y = x.clone(memory_format=torch.contiguous_format)
        dist.broadcast(y, src=ctx.src, group=group)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone(memory_format=torch.contiguous_format)
        dist.reduce(g, dst=ctx.src, group=ctx.group)
        return (g if ctx.is_src else torch.zeros_like(g)), None, None


def all_reduce_sum(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Σ over the ranks of ``group`` (autograd-aware; the identity for one rank)."""
    return x if group_size(group) == 1 else _AllReduceSum.apply(x, group)


def all_gather_stack(x: torch.Tensor, group: Group) -> torch.Tensor:
    """x from every rank stacked in rank order → (G, *x.shape) (autograd-aware)."""
    return x[None] if group_size(group) == 1 else _AllGather.apply(x, group)


def exclusive_prefix_sum(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Σ_{r' < r} x_{r'} on rank r (zeros on rank 0), autograd-aware: one all-gather of x."""
    if group_size(group) == 1:
        return torch.zeros_like(x)
    return all_gather_stack(x, group)[: group_rank(group)].sum(0)


def broadcast(x: torch.Tensor, group: Group, src: int = 0) -> torch.Tensor:
    """x of rank ``src`` (a rank of ``group``) on every rank, autograd-aware.

    Every rank passes a tensor of the same shape and dtype; only src's values are used. The
    gradient of src's x is the sum of the ranks' output gradients, and the other ranks' x get a
    zero gradient, which still carries their backward (and its collectives) through their chunk.
    """
    return x if group_size(group) == 1 else _Broadcast.apply(x, group, src)


def all_reduce_min(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Elementwise min over the ranks of ``group``, without gradient (x is detached)."""
    if group_size(group) == 1:
        return x
    y = x.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(y, op=dist.ReduceOp.MIN, group=group)
    return y
