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

One layer's attention over a group is :func:`hrrformer.hrr_attention` with ``group=...``: each
rank passes its chunk, (B, h, T_local, d) (T_local may differ between ranks, as the CLS token makes
rank 0's longer; B, h, d and the dtype may not), and gets its chunk of the output. Mean pooling
over a group is :func:`hrrformer.model.masked_mean` with ``SequenceReduction(group)``.
:func:`enable_sequence_parallel` makes a model's encoders do both.

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
process group's timeout (``init_process_group(timeout=...)``). Input checks are therefore made
collectively: each rank's verdict is all-gathered, and every rank raises the same error.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import kinds
from .collectives import (
    Group,
    all_gather_stack,
    all_reduce_sum,
    exclusive_prefix_sum,
    gather_ints,
    group_rank,
    group_size,
)
from .model import HrrformerEncoder, ShardedPositionEmbedding
from .ops.hrr_attention import Method

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
    "reduce_sequence_parallel_gradients",
    "shard_position_embedding",
    "shard_sequence",
]


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


# ----------------------------------------------------------------------------- model helpers
def _encoders(model: nn.Module) -> list[nn.Module]:
    found = [m for m in model.modules() if isinstance(m, HrrformerEncoder)]
    if not found:
        raise ValueError(f"{type(model).__name__} contains no HrrformerEncoder")
    return found


def enable_sequence_parallel(model: nn.Module, group: Group) -> nn.Module:
    """Make every :class:`~hrrformer.model.HrrformerEncoder` in ``model`` split its sequence over ``group``.

    Afterwards ``model(tokens)`` takes this rank's chunk of the tokens (from :func:`shard_sequence`,
    which pads with the pad token 0) and returns the whole sequence's result on every rank:
    global positions, HRR attention over the whole sequence, mean pooling over all ranks' real
    tokens, the CLS token on rank 0 broadcast to all. ``group=None`` switches it off. An attention
    kind without a sequence-parallel form (softmax) raises a ValueError. Returns ``model``.
    """
    encoders = _encoders(model)
    if group is not None:
        for enc in encoders:
            kind = kinds.get(enc.config.attention)
            if not kind.sequence_parallel:
                parallel = tuple(k.name for k in kinds.KINDS.values() if k.sequence_parallel)
                raise ValueError(f"sequence parallelism needs attention in {parallel}, not {kind.name!r}: {kind.note}")
            if enc.config.authors_padding:
                raise ValueError(
                    "sequence parallelism does not support authors_padding: padding enters β and the mean "
                    "there, so the shard padding of shard_sequence would change the result"
                )
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
        n_cls = enc.cls_shift  # rows taken by the CLS token (0 when it has no position)
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
