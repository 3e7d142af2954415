"""Sequence parallelism for HRR attention: one long sequence split across the ranks of a group.

Rank r of a ``torch.distributed`` group holds a contiguous chunk of the sequence, in rank order
(with :func:`shard_sequence`: positions [r·T_local, (r+1)·T_local)). HRR attention couples the
positions only through two sums over time, so a layer needs O(h·d) communication, where softmax
attention needs O(T) (ring attention passes every key and value around the ring)::

    β = Σ_t m_t (k_t ⊛ v_t)          all-reduce of the local sums              (B, h, d)
    S = Σ_t m_t exp(a_t)             all-reduce of the local normalisers       (B, h)

and the scores a_t = cos(v_t, q_t† ⊛ β) and the outputs w_t v_t = exp(a_t)/S · v_t are local.
No max is needed in the softmax: |a_t| ≤ 1, so exp(a_t) ∈ [1/e, e]. With ``causal=True`` the
sums are prefix sums: each rank adds, to its local running sums, the exclusive scan of the
chunk sums of the ranks below it (all-gather the chunk sums, add those of ranks < r).

Bytes communicated per layer and training step (s bytes per element: 4 in float32, 8 in float64;
F = d//2 + 1; G ranks)::

    non-causal, circulant (default)  all-reduce payload 2·B·h·(d + 1)·s
                                     (forward β: B·h·d and S: B·h; backward ∂L/∂β and Σ_t w_t ∂L/∂w_t)
    non-causal, fourier              all-reduce payload 2·B·h·(2F + 1)·s   (β as real and imaginary parts)
    causal (fourier)                 forward: all-gather of B·h·(2F + 1)·s from each rank (G times
                                     that gathered); backward: all-reduce of the gathered size

A ring all-reduce of n bytes sends 2·(G−1)/G·n bytes per rank; an all-gather of G chunks of
n/G bytes sends (G−1)/G·n per rank. The model adds, once per step (not per layer), a broadcast
of the pooled CLS vector (B·D·s, reduced back in backward) or an all-reduce of the mean-pool sums
(B·(D+1)·s forward and backward), an all-gather of four integers per rank that checks the
ranks agree, and :func:`reduce_sequence_parallel_gradients`' all-reduce of the replicated
parameters' gradients (the model's size, as in data parallelism). :func:`communicated_bytes`
returns the per-layer numbers.

Gradients. Every collective here is an autograd function (all-reduce ↔ all-reduce, all-gather
↔ all-reduce then own slot, broadcast ↔ reduce), so autograd computes the exact gradient of the
group objective J = Σ_r loss_r, the sum over the ranks of the loss each one backpropagates:
rank r's parameter gradient is its share of ∇J, and summing the shares over the group gives ∇J.
A classifier's pooled features and logits are identical on every rank, so each rank computes
the same loss and J = G·loss: :func:`reduce_sequence_parallel_gradients` all-reduces (sums) the
shares and divides by G, which gives exactly the gradient a single process computes on the
whole sequence. Every rank must backpropagate through its own chunk (the CLS pooling does this
for the ranks that do not hold the CLS token by routing a zero gradient through their chunk),
because each backward collective needs all ranks.

Failure. A rank that raises before a collective leaves the others waiting inside it until the
process group's timeout (``init_process_group(timeout=...)``; :func:`launch_local` sets it and
also ends the job as soon as any process exits with an error). Input checks are therefore made
collectively: each rank's verdict is all-gathered, and every rank raises the same error.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import hrr
from .attention import (
    COSINE_EPS,
    HrrAttention,
    Method,
    _check_attention_inputs,
    _hankel,
    _keep_weights,
    _parseval_cosine,
    _wrapped_diagonal_sums,
    hrr_attention,
)

__all__ = [
    "ShardedPositionEmbedding",
    "all_gather_stack",
    "all_reduce_sum",
    "communicated_bytes",
    "enable_sequence_parallel",
    "exclusive_prefix_sum",
    "gather_ints",
    "group_rank",
    "group_size",
    "launch_local",
    "reduce_sequence_parallel_gradients",
    "shard_position_embedding",
    "shard_sequence",
    "sp_broadcast",
    "sp_hrr_attention",
    "sp_mean_pool",
    "sp_self_attention",
]

Group = Any  # a torch.distributed ProcessGroup, or None for "no sequence parallelism"


# ----------------------------------------------------------------------------- group helpers
def group_size(group: Group) -> int:
    """Number of ranks in ``group``; 1 for ``None`` (no sequence parallelism)."""
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
    """All-gather a few integers from every rank: → one list per rank, in rank order (no grad)."""
    mine = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(group_size(group))]
    dist.all_gather(out, mine, group=group)
    return [o.tolist() for o in out]


# ----------------------------------------------------------------------------- autograd collectives
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
    """Σ over the ranks of ``group`` (autograd-aware; the identity for ``None`` or one rank)."""
    return x if group_size(group) == 1 else _AllReduceSum.apply(x, group)


def all_gather_stack(x: torch.Tensor, group: Group) -> torch.Tensor:
    """x from every rank stacked in rank order → (G, *x.shape) (autograd-aware)."""
    return x[None] if group_size(group) == 1 else _AllGather.apply(x, group)


def exclusive_prefix_sum(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Σ_{r' < r} x_{r'} on rank r (zeros on rank 0), autograd-aware: one all-gather of x."""
    if group_size(group) == 1:
        return torch.zeros_like(x)
    return all_gather_stack(x, group)[: group_rank(group)].sum(0)


def sp_broadcast(x: torch.Tensor, group: Group, src: int = 0) -> torch.Tensor:
    """x of rank ``src`` (a rank of ``group``) on every rank, autograd-aware.

    Every rank passes a tensor of the same shape and dtype; only src's values are used. The
    gradient of src's x is the sum of the ranks' output gradients, and the other ranks' x get a
    zero gradient, which still carries their backward (and its collectives) through their chunk.
    """
    return x if group_size(group) == 1 else _Broadcast.apply(x, group, src)


# ----------------------------------------------------------------------------- attention
def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…, T, d) · (…, T, d) → (…, T)."""
    return torch.einsum("...d,...d->...", x, y)


def _inv_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(‖x‖² + ε²)^(-1/2) over the last axis: (…, T, d) → (…, T)."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square_().add_(eps * eps))


class _SequenceParallelCirculant(torch.autograd.Function):
    """The circulant form of :mod:`hrrformer.attention` with β and the softmax normaliser summed
    over the group. The hand-derived backward is the single-process one, with the two sums it
    takes over time (Σ_t w_t g_w,t and ∂L/∂β = diagsum(Qᵀ ∂L/∂V̂)) all-reduced as well::

        forward:  β = Σ_group diagsum((m⊙K)ᵀV)       (B, h, d)
                  S = Σ_group Σ_t m_t exp(a_t)       (B, h, 1)
        backward: Σ_group Σ_t w_t g_w,t              (B, h, 1)
                  Σ_group diagsum(Qᵀ ∂L/∂V̂)          (B, h, d)

    Only q, k, v, C and four (B, h, T) vectors are kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, q, k, v, keep, eps: float, group):  # q, k, v (B, h, T, d); keep (B, 1, T) or None
        km = k if keep is None else k * keep[..., None]  # (B, h, T, d)
        beta = _wrapped_diagonal_sums(km.transpose(-1, -2) @ v).contiguous()  # (B, h, d) local part
        del km
        dist.all_reduce(beta, group=group)
        circ = _hankel(beta)  # (B, h, d, d)
        vhat = q @ circ  # (B, h, T, d)
        r_vhat, r_v = _inv_norm(vhat, eps), _inv_norm(v, eps)  # (B, h, T)
        a = _rowdot(vhat, v) * r_vhat * r_v  # (B, h, T)
        del vhat
        e = torch.exp(a) if keep is None else torch.exp(a) * keep  # (B, h, T)
        denom = e.sum(-1, keepdim=True)  # (B, h, 1) local part
        dist.all_reduce(denom, group=group)
        w = e / denom.masked_fill(denom == 0, 1.0)  # (B, h, T)
        ctx.group = group
        ctx.save_for_backward(q, k, v, keep, circ, a, w, r_vhat, r_v)
        return w[..., None] * v  # (B, h, T, d)

    @staticmethod
    def backward(ctx, g_out):
        q, k, v, keep, circ, a, w, r_vhat, r_v = ctx.saved_tensors
        g_w = _rowdot(g_out, v)  # (B, h, T)
        wg = (w * g_w).sum(-1, keepdim=True)  # (B, h, 1) local part
        dist.all_reduce(wg, group=ctx.group)
        g_a = w * (g_w - wg)  # (B, h, T)
        g_num = (g_a * r_vhat * r_v)[..., None]  # (B, h, T, 1)
        vhat = q @ circ  # (B, h, T, d) recomputed rather than stored
        g_v = (w[..., None] * g_out).addcmul_(g_num, vhat).addcmul_((g_a * a * r_v.square())[..., None], v, value=-1)
        g_vhat = vhat.mul_((g_a * a * r_vhat.square()).neg_()[..., None]).addcmul_(g_num, v)  # in place of vhat
        g_q = g_vhat @ circ.transpose(-1, -2)  # (B, h, T, d)
        g_beta = _wrapped_diagonal_sums(q.transpose(-1, -2) @ g_vhat).contiguous()  # (B, h, d) local part
        del g_vhat
        dist.all_reduce(g_beta, group=ctx.group)
        g_mkv = _hankel(g_beta)  # (B, h, d, d)
        km = k if keep is None else k * keep[..., None]
        g_v += km @ g_mkv
        g_k = v @ g_mkv.transpose(-1, -2)  # (B, h, T, d)
        if keep is not None:
            g_k *= keep[..., None]
        return g_q, g_k, g_v, None, None, None


def _sp_fourier_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None, causal: bool, group: Group, eps: float
) -> torch.Tensor:
    """The Fourier (Parseval) form with β and the normaliser summed over the group (autograd)."""
    qf, kf, vf = (torch.fft.rfft(x, dim=-1) for x in (q, k, v))  # (B, h, T, F), F = d//2 + 1
    bound = kf * vf
    if keep is not None:
        bound = bound * keep[..., None]
    chunk = torch.view_as_real(bound.sum(-2))  # (B, h, F, 2): this rank's Σ_t, as a real tensor
    if causal:
        below = torch.view_as_complex(exclusive_prefix_sum(chunk, group).contiguous())  # ranks < r
        beta = bound.cumsum(-2) + below[..., None, :]  # (B, h, T, F)
    else:
        beta = torch.view_as_complex(all_reduce_sum(chunk, group))[..., None, :]  # (B, h, 1, F)
    eps2 = torch.tensor(eps * eps, dtype=q.dtype, device=q.device)
    a = _parseval_cosine(qf, vf, v, beta, eps2, eps2)  # (B, h, T)
    e = torch.exp(a) if keep is None else torch.exp(a) * keep  # (B, h, T)
    if causal:
        denom = e.cumsum(-1) + exclusive_prefix_sum(e.sum(-1), group)[..., None]  # (B, h, T)
    else:
        denom = all_reduce_sum(e.sum(-1, keepdim=True), group)  # (B, h, 1)
    return (e / denom.masked_fill(denom == 0, 1.0))[..., None] * v


_DTYPE_CODES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _attention_facts(q, k, v, key_padding_mask, causal, method) -> tuple[list[int], str | None]:
    """This rank's verdict on its inputs and the shape facts every rank must agree on."""
    try:
        _check_attention_inputs(q, k, v, key_padding_mask)
        if method not in ("auto", "circulant", "fourier"):
            raise ValueError(f"method must be 'auto', 'circulant' or 'fourier', got {method!r}")
        if method == "circulant" and causal:
            raise ValueError("method='circulant' has no causal form (β would be a running d×d sum); use 'fourier'")
    except ValueError as err:
        return [1, -1, -1, -1, -1, int(causal)], str(err)
    b, h, _, d = q.shape
    code = _DTYPE_CODES.index(q.dtype) if q.dtype in _DTYPE_CODES else -1
    return [0, b, h, d, code, int(causal)], None


def sp_hrr_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    group: Group = None,
    method: Method = "auto",
    check: bool = True,
) -> torch.Tensor:
    """:func:`hrrformer.hrr_attention` over a sequence split across the ranks of ``group``.

    Args:
        q, k, v: (B, h, T_local, d), this rank's contiguous chunk; chunks are in rank order
            (rank r holds positions [r·T_local, (r+1)·T_local) after :func:`shard_sequence`).
            T_local may differ between ranks (the model's CLS token makes rank 0's one longer);
            B, h, d and the dtype may not.
        key_padding_mask: (B, T_local) bool, True = padding; a chunk may be all padding.
        causal: β and the normaliser run over all positions ≤ t, those of lower ranks included.
        group: the ``torch.distributed`` group; ``None`` or a group of one rank computes
            :func:`hrrformer.hrr_attention` locally, with no communication.
        method: ``"circulant"`` (non-causal, a custom autograd function: least memory),
            ``"fourier"`` (autograd through the Parseval form), ``"auto"``: circulant unless causal.
        check: all-gather each rank's shapes and input verdict first (one collective of six
            integers), so that bad input raises the same clear error on every rank instead of
            leaving some ranks waiting in a collective.

    Returns:
        (B, h, T_local, d), this rank's chunk of the output, in the dtype of q. Gradients of q,
        k, v are this rank's slice of the gradient of Σ_r loss_r (see the module docstring).
    """
    if group_size(group) == 1:
        return hrr_attention(q, k, v, key_padding_mask, causal=causal, method=method)
    if check:
        facts, error = _attention_facts(q, k, v, key_padding_mask, causal, method)
        everyone = gather_ints(facts, group, q.device if isinstance(q, torch.Tensor) else "cpu")
        bad = [r for r, f in enumerate(everyone) if f[0]]
        if error is not None:
            raise ValueError(error)
        if bad:
            raise ValueError(f"sp_hrr_attention: rank(s) {bad} of the sequence-parallel group rejected their input")
        if any(f[1:] != everyone[0][1:] for f in everyone):
            shapes = [
                f"rank {r}: B={f[1]} h={f[2]} d={f[3]} dtype={_DTYPE_CODES[f[4]]} causal={bool(f[5])}"
                for r, f in enumerate(everyone)
            ]
            raise ValueError(
                "sp_hrr_attention: the ranks disagree on batch, heads, head size, dtype or causal: " + "; ".join(shapes)
            )
    else:
        _check_attention_inputs(q, k, v, key_padding_mask)
        if method == "circulant" and causal:
            raise ValueError("method='circulant' has no causal form (β would be a running d×d sum); use 'fourier'")
    dtype = hrr.compute_dtype(q.dtype)
    q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
    keep = _keep_weights(key_padding_mask, dtype)
    if method == "fourier" or causal:
        out = _sp_fourier_attention(q_, k_, v_, keep, causal, group, COSINE_EPS)
    else:
        out = _SequenceParallelCirculant.apply(q_, k_, v_, keep, COSINE_EPS, group)
    return out.to(q.dtype)


def sp_self_attention(
    attn: nn.Module, x: torch.Tensor, key_padding_mask: torch.Tensor | None, group: Group, check: bool = True
) -> torch.Tensor:
    """``attn(x, key_padding_mask)`` for an :class:`HrrAttention` whose sequence is split over ``group``.

    x (B, T_local, E) → (B, T_local, E). The same projections, head split, optional projection
    π, dropout and output projection as ``HrrAttention.forward``; only the kernel differs.
    Softmax attention raises: it has no O(h·d)-communication form (it would need ring attention).
    """
    if not isinstance(attn, HrrAttention):
        raise ValueError(
            f"sequence parallelism supports HRR attention only, got {type(attn).__name__}: softmax "
            "attention would need O(T) communication per layer (ring attention); use attention='hrr'"
        )
    saved = attn.sequence_parallel_group, attn.sequence_parallel_check
    attn.sequence_parallel_group, attn.sequence_parallel_check = group, check
    try:
        return attn(x, key_padding_mask)  # the module's own projections and heads, the SP kernel
    finally:
        attn.sequence_parallel_group, attn.sequence_parallel_check = saved


# ----------------------------------------------------------------------------- sequences and pooling
def shard_sequence(x: torch.Tensor, group: Group, dim: int = 1, pad_value: Any = 0) -> tuple[torch.Tensor, int, int]:
    """This rank's contiguous chunk of a whole sequence → (local_chunk, global_offset, padded_length).

    The length along ``dim`` is padded at the end with ``pad_value`` to a multiple of the group
    size (0 = the models' pad token; pass ``True`` for a ``key_padding_mask``), so padding is
    masked rather than refused. Rank r gets positions [r·T_local, (r+1)·T_local) of the padded
    sequence, as a copy (the whole sequence can be freed). ``None`` or one rank: (x, 0, T).
    """
    size, rank = group_size(group), group_rank(group)
    length = x.shape[dim]
    if size == 1:
        return x, 0, length
    padded = -(-length // size) * size
    if padded > length:
        shape = list(x.shape)
        shape[dim] = padded - length
        x = torch.cat([x, x.new_full(shape, pad_value)], dim=dim)
    local = padded // size
    return x.narrow(dim, rank * local, local).clone(memory_format=torch.contiguous_format), rank * local, padded


def sp_mean_pool(x: torch.Tensor, keep: torch.Tensor, group: Group) -> torch.Tensor:
    """Mean of x over the real positions of the whole sequence, on every rank (autograd-aware).

    x (B, T_local, D); keep (B, T_local) or (B, T_local, 1), bool or float, 1 = real position
    (the negation of a ``key_padding_mask``) → (B, D). One all-reduce of (B, D + 1) sums.
    A sequence with no real position gives zeros.
    """
    keep = keep.to(x.dtype)
    if keep.dim() == 2:
        keep = keep[..., None]  # (B, T_local, 1)
    sums = torch.cat([(x * keep).sum(1), keep.sum(1)], dim=-1)  # (B, D + 1)
    sums = all_reduce_sum(sums, group)
    return sums[..., :-1] / sums[..., -1:].clamp_min(1.0)


# ----------------------------------------------------------------------------- model helpers
class ShardedPositionEmbedding(nn.Module):
    """Rows [start, start + length) of a learned position table of ``num_positions`` rows.

    With sequence parallelism each rank needs the rows of its own positions only: 4M positions ×
    256 dims are 4 GiB in float32 (16 GiB with Adam's state and the gradient) per process if
    every rank holds the whole table. ``forward(positions)`` takes global positions.
    Its parameter is per-rank (not replicated), so :func:`reduce_sequence_parallel_gradients`
    does not all-reduce it.
    """

    def __init__(
        self,
        start: int,
        length: int,
        dim: int,
        num_positions: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.start, self.length, self.num_positions = int(start), int(length), int(num_positions)
        self.weight = nn.Parameter(torch.empty(length, dim, device=device, dtype=dtype))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        idx = positions - self.start
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.length):
            raise ValueError(
                f"positions [{int(positions.min())}, {int(positions.max())}] lie outside this rank's "
                f"rows [{self.start}, {self.start + self.length}) of the position table"
            )
        return self.weight[idx]

    def extra_repr(self) -> str:
        return f"rows [{self.start}, {self.start + self.length}) of {self.num_positions}, dim={self.weight.shape[1]}"


def _encoders(model: nn.Module) -> list[nn.Module]:
    from .model import HrrformerEncoder

    found = [m for m in model.modules() if isinstance(m, HrrformerEncoder)]
    if not found:
        raise ValueError(f"{type(model).__name__} contains no HrrformerEncoder")
    return found


def enable_sequence_parallel(model: nn.Module, group: Group) -> nn.Module:
    """Make every :class:`~hrrformer.model.HrrformerEncoder` in ``model`` split its sequence over ``group``.

    Afterwards ``model(tokens)`` takes this rank's chunk of the tokens (from :func:`shard_sequence`,
    which pads with the pad token 0) and returns the whole sequence's result on every rank:
    global positions, HRR attention over the whole sequence, mean pooling over all ranks' real
    tokens, the CLS token on rank 0 broadcast to all. ``group=None`` switches it off. Softmax
    attention raises a ValueError. Returns ``model``.
    """
    encoders = _encoders(model)
    if group is not None:
        for enc in encoders:
            if enc.config.attention != "hrr":
                raise ValueError(
                    "sequence parallelism supports attention='hrr' only: softmax attention would need "
                    "O(T) communication per layer (ring attention)"
                )
            if enc.config.length_scale:
                raise ValueError("sequence parallelism does not support length_scale")
    for enc in encoders:
        enc.sequence_parallel_group = group
    return model


def shard_position_embedding(model: nn.Module, group: Group, local_length: int) -> nn.Module:
    """Replace each encoder's learned position table by this rank's rows (:class:`ShardedPositionEmbedding`).

    ``local_length`` is the number of tokens per rank (T_local of :func:`shard_sequence`). Rank 0
    also holds the CLS row. Rows are copied from the current table, so the model computes what
    it did; rows past the table's end (positions of shard padding, which are masked) are zeros.
    The table may live on the ``meta`` device, so that it is never materialised whole: then the
    shard is on ``meta`` too and must be initialised (``model.to_empty`` and ``init_weights``).
    Returns ``model``.
    """
    rank = group_rank(group)
    for enc in _encoders(model):
        table = enc.position_embedding
        if table is None or isinstance(table, ShardedPositionEmbedding):
            continue
        n_cls = int(enc.cls is not None)
        start = 0 if rank == 0 else n_cls + rank * local_length
        length = local_length + (n_cls if rank == 0 else 0)
        total = table.num_embeddings
        shard = ShardedPositionEmbedding(
            start, length, table.embedding_dim, total, table.weight.device, table.weight.dtype
        )
        with torch.no_grad():
            shard.weight.zero_()
            stop = min(start + length, total)
            if stop > start:
                shard.weight[: stop - start] = table.weight[start:stop]
        enc.position_embedding = shard
    return model


def reduce_sequence_parallel_gradients(model: nn.Module, group: Group, replicated_loss: bool = True) -> None:
    """Turn each rank's share of the gradient into the whole sequence's gradient, in place.

    Semantics: autograd through the sequence-parallel collectives gives rank r its share of the
    gradient of J = Σ_r loss_r (each rank's own loss, summed over the group). Replicated
    parameters are all-reduced (summed), giving ∇J on every rank; per-rank parameters
    (:class:`ShardedPositionEmbedding`) already hold their ∇J and are left alone. With
    ``replicated_loss=True`` (a classifier: logits, and so the loss, are identical on every rank,
    J = G·loss) all gradients are then divided by G, giving exactly the gradient of ``loss``
    that one process computes on the whole sequence. Pass ``replicated_loss=False`` when the
    ranks' losses are different terms of one objective (e.g. per-token losses of each chunk).
    A parameter a rank did not use (the CLS vector off rank 0) counts as a zero gradient. Every
    rank must call this with the same model structure. One all-reduce per (dtype, device).
    """
    size = group_size(group)
    if size == 1:
        return
    sharded = {id(p) for m in model.modules() if isinstance(m, ShardedPositionEmbedding) for p in m.parameters()}
    buckets: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in sharded:
            if replicated_loss and p.grad is not None:
                p.grad.div_(size)
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for params in buckets.values():
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, group=group)
        if replicated_loss:
            flat.div_(size)
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def communicated_bytes(
    batch: int,
    heads: int,
    head_dim: int,
    group: int,
    bytes_per_element: int = 4,
    causal: bool = False,
    method: Method = "auto",
) -> dict[str, int]:
    """Payload of the collectives of one sequence-parallel HRR attention layer, forward + backward.

    → ``{"payload": bytes each rank contributes to the layer's collectives (forward + backward),
    "ring_sent_per_rank": bytes a rank sends if each all-reduce is a ring (2(G−1)/G · n) and each
    all-gather a ring ((G−1)/G · G·n)}``. See the module docstring for the formula.
    """
    b, h, d, s, g = batch, heads, head_dim, bytes_per_element, group
    fourier = causal or method == "fourier"  # β as real and imaginary parts (2F), else in time (d); and S
    per_layer = b * h * ((2 * (d // 2 + 1) if fourier else d) + 1) * s
    if causal:
        # forward: all-gather of each rank's chunk sums; backward: all-reduce of the (G, …) gradient
        payload = per_layer + g * per_layer
        ring = (g - 1) * per_layer + 2 * (g - 1) * per_layer
    else:
        payload = 2 * per_layer  # forward sums, backward sums
        ring = 2 * (2 * (g - 1) * per_layer // g)
    return {"payload": payload, "ring_sent_per_rank": ring}


# ----------------------------------------------------------------------------- local launcher
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_entry(rank, fn, world_size, port, backend, collective_timeout_s, threads, args):
    if threads:
        torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=collective_timeout_s),
    )
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def launch_local(
    fn: Callable[..., None],
    world_size: int,
    args: tuple = (),
    *,
    backend: str = "gloo",
    timeout_s: float = 600.0,
    collective_timeout_s: float = 60.0,
    threads: int | None = 1,
) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes joined in a process group.

    The group (``backend``, default gloo) meets on a free port of 127.0.0.1; ``fn`` must be
    importable (a module-level function). Returns when every process has finished. Never hangs:
    as soon as one process raises or dies, the others are terminated and the error is raised
    here (``torch.multiprocessing.ProcessRaisedException`` / ``ProcessExitedException``); a
    collective that waits on a dead peer fails after ``collective_timeout_s``; and after
    ``timeout_s`` all processes are terminated and TimeoutError is raised. ``threads`` sets
    ``torch.set_num_threads`` in each process (1 by default: ranks share the machine's cores).
    """
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.start_processes(
        _launch_entry,
        args=(fn, world_size, port, backend, collective_timeout_s, threads, tuple(args)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=0.2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"launch_local: {world_size} processes still running after {timeout_s:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        for process in context.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
