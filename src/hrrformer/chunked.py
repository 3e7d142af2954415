"""Sequence chunking: an encoder block over a very long sequence, piece by piece.

An encoder block keeps about 20 numbers per position and channel for its backward pass (q, k,
v, norms, residuals, the MLP's hidden units). At T = 2²⁰ bytes and D = 256 that is ~20 GiB per
layer, past this project's 24 GB machine. Whole-block activation checkpointing does not help:
the recomputation in the backward pass needs the same memory at once.

HRR attention couples positions only through two small summaries, β (B, h, d) and the
softmax normaliser Z (B, h), so a block splits into three passes over chunks c of the sequence,
each run under :func:`torch.utils.checkpoint.checkpoint` (only its inputs are kept; the chunk's
activations are recomputed during the backward pass, one chunk at a time)::

    pass 1, per chunk:  β_c = Σ_{t∈c} m_t F(k_t) ⊙ F(v_t)              β = Σ_c β_c         (B, h, F)
    pass 2, per chunk:  a_t = cos(v_t, q_t† ⊛ β),  t ∈ c                 e = m ⊙ exp(a)      (B, h, T)
                        (small: autograd over e)                          w = e / Σ_t e_t
    pass 3, per chunk:  y_c = rest of the block(x_c, w_c · v_c)                             (B, T_c, D)

Causal mode uses β_t = β_{<c} + the running sum inside the chunk, and Z_t likewise. With a
sequence-parallel ``group``, β and Z (or their prefixes) are also summed over the ranks, as in
:mod:`hrrformer.parallel`: the two compose.

Peak memory: the block's input and output (2·T·D) plus one chunk's activations, instead of
~20·T·D. Cost: q, k, v are projected in each pass and every pass is recomputed once in the
backward pass (about 1.5× the work of an unchunked block).

Range control as in :mod:`hrrformer.attention`: each chunk divides its q, k, v by powers of two
s (per batch and head, from the chunk's own maxima, sized for the whole length T); chunk sums are
brought to the smallest scale P = min_c s_k,c s_v,c exactly (a power of two), ε scaled alike.
Where nothing is rescaled (ordinary inputs), the numbers are those of the unchunked block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hrr
from .attention import (
    COSINE_EPS,
    HrrAttention,
    _downscale,
    _parseval_cosine,
    _safe_exponent,
    _scaled_eps2,
)
from .parallel import all_reduce_sum, exclusive_prefix_sum, group_size

__all__ = ["chunked_block_forward"]


def _project(attn: HrrAttention, x: torch.Tensor, parts: str) -> dict[str, torch.Tensor]:
    """The heads of ``parts`` ⊆ "qkv" only (each (B, h, T, d), compute dtype, π applied to q, k)."""
    b, t, e = x.shape
    weight, bias = attn.qkv_proj.weight, attn.qkv_proj.bias  # (3E, E): rows q, then k, then v
    out = {}
    for part in parts:
        i = "qkv".index(part)
        rows = slice(i * e, (i + 1) * e)
        y = F.linear(x, weight[rows], None if bias is None else bias[rows])  # (B, T, E)
        y = y.view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, h, T, d)
        if attn.projection and part != "v":
            y = hrr.projection(y)
        out[part] = y.to(hrr.compute_dtype(y.dtype))
    return out


class _Passes:
    """The three passes of one block over its chunks (a closure over the block and its settings)."""

    def __init__(self, block: nn.Module, total_length: int) -> None:
        self.block, self.attn = block, block.attn
        self.causal = self.attn.causal
        self.exponent = _safe_exponent(hrr.compute_dtype(block.norm1.weight.dtype), total_length, self.attn.head_dim)

    def _keep(self, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        return None if mask is None else (~mask).to(dtype)[:, None, :, None]  # (B, 1, T_c, 1)

    def superpose(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: (Σ_t m_t F(s_k k_t) F(s_v v_t) as (B, h, F, 2) real, its scale s_k s_v (B, h, 1, 1))."""
        heads = _project(self.attn, self.block.attention_input(x), "kv")
        k, v = heads["k"], heads["v"]
        s_k, s_v = _downscale(k, self.exponent), _downscale(v, self.exponent)
        bound = torch.fft.rfft(k * s_k, dim=-1) * torch.fft.rfft(v * s_v, dim=-1)  # (B, h, T_c, F)
        keep = self._keep(mask, bound.real.dtype)
        if keep is not None:
            bound = bound * keep
        return torch.view_as_real(bound.sum(-2)), s_k * s_v

    def scores(
        self, x: torch.Tensor, mask: torch.Tensor | None, beta: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """Pass 2: a (B, h, T_c) against β (B, h, F, 2) at scale P (B, h, 1, 1); causal: β holds
        the chunks before this one, and the running sum inside it is added."""
        heads = _project(self.attn, self.block.attention_input(x), "qkv" if self.causal else "qv")
        q, v = heads["q"], heads["v"]
        s_q, s_v = _downscale(q, self.exponent), _downscale(v, self.exponent)
        qf, vf = torch.fft.rfft(q * s_q, dim=-1), torch.fft.rfft(v * s_v, dim=-1)  # (B, h, T_c, F)
        beta_f = torch.view_as_complex(beta.contiguous())[..., None, :]  # (B, h, 1, F)
        if self.causal:
            k = heads["k"]
            s_k = _downscale(k, self.exponent)
            bound = torch.fft.rfft(k * s_k, dim=-1) * vf * (scale / (s_k * s_v))  # at scale P, exactly
            keep = self._keep(mask, q.dtype)
            if keep is not None:
                bound = bound * keep
            beta_f = beta_f + bound.cumsum(-2)  # (B, h, T_c, F)
        eps2_vhat = _scaled_eps2(COSINE_EPS, q.dtype, s_q, scale)
        eps2_v = _scaled_eps2(COSINE_EPS, q.dtype, s_v)
        return _parseval_cosine(qf, vf, v * s_v, beta_f, eps2_vhat, eps2_v)

    def finish(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Pass 3: the attention output w_t v_t, output projection and the rest of the block."""
        b, t, e = x.shape
        v = _project(self.attn, self.block.attention_input(x), "v")["v"]  # (B, h, T_c, d)
        y = (weights[..., None] * v).to(x.dtype).transpose(1, 2).reshape(b, t, e)  # (B, T_c, E)
        return self.block.after_attention(x, self.attn.out_proj(self.attn.dropout(y)))


def _run(fn, *args):
    """``fn(*args)``, its activations recomputed in the backward pass when grad is on."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def chunked_block_forward(
    block: nn.Module,
    x: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    chunk_size: int,
    group: Any = None,
    first_only: bool = False,
) -> torch.Tensor:
    """An :class:`hrrformer.model.EncoderBlock` with HRR attention over x (B, T, D) in chunks of
    ``chunk_size`` positions → (B, T, D), equal to ``block(x, key_padding_mask, group)``.

    ``group``: a sequence-parallel group; x is then this rank's part of the sequence.
    ``first_only``: pass 3 for position 0 alone → (B, 1, D) (a last layer under CLS pooling).
    """
    attn = block.attn
    if not isinstance(attn, HrrAttention):
        raise ValueError(f"chunk_size needs HRR attention, got {type(attn).__name__}")
    if attn.sequence_parallel_group is not None:
        raise ValueError("chunk_size: pass the sequence-parallel group to the block, not to its attention")
    sp = group is not None and group_size(group) > 1
    total = x.shape[1] * (group_size(group) if sp else 1)
    passes = _Passes(block, total)
    xs = x.split(chunk_size, dim=1)  # views; one SplitBackward gathers their gradients
    masks = [None] * len(xs) if key_padding_mask is None else list(key_padding_mask.split(chunk_size, dim=1))

    # Pass 1: β per chunk, brought to one scale P (exact powers of two), summed (and over ranks).
    parts = [_run(passes.superpose, xc, mc) for xc, mc in zip(xs, masks, strict=True)]
    scale = torch.stack([s for _, s in parts]).amin(0)  # (B, h, 1, 1)
    if sp:
        dist.all_reduce(scale, op=dist.ReduceOp.MIN, group=group)
    sums = [b_c * (scale / s_c) for b_c, s_c in parts]  # (B, h, F, 2) each
    if passes.causal:  # β before each chunk: lower ranks, then earlier chunks of this rank
        below = exclusive_prefix_sum(torch.stack(sums).sum(0), group) if sp else torch.zeros_like(sums[0])
        befores = []
        for s in sums:
            befores.append(below)
            below = below + s
    else:
        beta = torch.stack(sums).sum(0)
        beta = all_reduce_sum(beta, group) if sp else beta
        befores = [beta] * len(xs)

    # Pass 2: scores, then the softmax over the whole sequence (|a| ≤ 1: no max needed).
    exps = []
    for xc, mc, before in zip(xs, masks, befores, strict=True):
        a = _run(passes.scores, xc, mc, before, scale)  # (B, h, T_c)
        e = torch.exp(a)
        exps.append(e if mc is None else e * (~mc).to(e.dtype)[:, None, :])
    if passes.causal:
        running = torch.stack([e.sum(-1) for e in exps]).sum(0)  # (B, h)
        offset = exclusive_prefix_sum(running, group) if sp else torch.zeros_like(running)
        denoms = []
        for e in exps:
            denoms.append(e.cumsum(-1) + offset[..., None])
            offset = offset + e.sum(-1)
    else:
        total_e = torch.stack([e.sum(-1, keepdim=True) for e in exps]).sum(0)  # (B, h, 1)
        denom = all_reduce_sum(total_e, group) if sp else total_e
        denoms = [denom] * len(exps)
    weights = [e / d.masked_fill(d == 0, 1.0) for e, d in zip(exps, denoms, strict=True)]
    if attn.record_weights:
        attn.last_weights = torch.cat(weights, dim=-1).detach()

    # Pass 3: the rest of the block, chunk by chunk.
    if first_only:
        return _run(passes.finish, xs[0][:, :1], weights[0][..., :1])  # (B, 1, D)
    return torch.cat([_run(passes.finish, xc, w) for xc, w in zip(xs, weights, strict=True)], dim=1)
