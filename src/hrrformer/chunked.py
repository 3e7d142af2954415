"""Sequence chunking: an encoder block over a very long sequence, piece by piece.

An encoder block keeps about 20 numbers per position and channel for its backward pass (q, k,
v, norms, residuals, the MLP's hidden units). At T = 2²⁰ bytes and D = 256 that is ~20 GiB per
layer, past this project's 24 GB machine. Whole-block activation checkpointing does not help:
the recomputation in the backward pass needs the same memory at once.

HRR attention couples positions only through two small summaries, β (B, h, d) and the softmax
normaliser Z (B, h), so a block splits into three passes over chunks c of the sequence, each
run under :func:`torch.utils.checkpoint.checkpoint` (only its inputs are kept; the chunk's
activations are recomputed during the backward pass, one chunk at a time). The passes are the
steps of the Fourier kernel (:mod:`hrrformer.ops.hrr_attention.fourier`), the chunks its pieces,
and the sums between them the same :class:`~hrrformer.ops.hrr_attention.SequenceReduction` as in
one process or over a sequence-parallel group (the two compose)::

    pass 1, per chunk:  β_c = superpose(k_c, v_c)                      β = combine(β_c)        (B, h, F)
    pass 2, per chunk:  a_c = scores(q_c, v_c, β)                      w = softmax_weights(a)  (B, h, T)
    pass 3, per chunk:  y_c = rest of the block(x_c, w_c · v_c)                                (B, T_c, D)

Peak memory: the block's input and output (2·T·D) plus one chunk's activations, instead of
~20·T·D. Cost: q, k, v are projected in each pass and every pass is recomputed once in the
backward pass (about 1.5× the work of an unchunked block).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hrr
from .attention import HrrAttention
from .ops.hrr_attention import COSINE_EPS, LOCAL, SequenceReduction
from .ops.hrr_attention.fourier import combine_superpositions, retrieved_values, scores, superpose, unbinding
from .ops.hrr_attention.range_control import safe_exponent
from .ops.hrr_attention.weights import beta_keep, keep_weights, position_counts, softmax_weights

__all__ = ["chunked_block_forward"]


def _project(attn: HrrAttention, x: torch.Tensor, parts: str) -> list[torch.Tensor]:
    """The heads of ``parts`` ⊆ "qkv" only (:meth:`HrrAttention.heads`), in the compute dtype."""
    return [y.to(hrr.compute_dtype(y.dtype)) for y in attn.heads(x, parts)]


class _Passes:
    """The three passes of one block over its chunks (a closure over the block and its settings)."""

    def __init__(self, block: nn.Module, exponent: int) -> None:
        self.block, self.attn, self.exponent = block, block.attn, exponent
        self.causal = self.attn.causal

    def superpose(self, x: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: this chunk's β_c and its scale."""
        k, v = _project(self.attn, self.block.attention_input(x), "kv")
        return superpose(k, v, keep, self.exponent)

    def _unbinding_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """q, k (causal only: for the running sum inside the chunk; else None) and v of a chunk."""
        if self.causal:
            q, k, v = _project(self.attn, self.block.attention_input(x), "qkv")
            return q, k, v
        q, v = _project(self.attn, self.block.attention_input(x), "qv")
        return q, None, v

    def scores(
        self, x: torch.Tensor, keep: torch.Tensor | None, beta: torch.Tensor, common: torch.Tensor
    ) -> torch.Tensor:
        """Pass 2: a (B, h, T_c) against β (the whole sequence's, or causal: the chunks before)."""
        q, k, v = self._unbinding_heads(x)
        return scores(unbinding(q, k, v, keep, beta, common, self.causal, self.exponent, COSINE_EPS))

    def finish(
        self,
        x: torch.Tensor,
        weights: torch.Tensor,
        keep: torch.Tensor | None,
        beta: torch.Tensor,
        common: torch.Tensor,
    ) -> torch.Tensor:
        """Pass 3: the attention output (w_t v_t, or the retrieved w_t ‖v_t‖ v̂_t/‖v̂_t‖), output
        projection and the rest of the block."""
        b, t, e = x.shape
        if self.attn.output == "retrieved":
            q, k, v = self._unbinding_heads(x)
            v = retrieved_values(unbinding(q, k, v, keep, beta, common, self.causal, self.exponent, COSINE_EPS))
        else:
            [v] = _project(self.attn, self.block.attention_input(x), "v")  # (B, h, T_c, d)
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
    reduction: SequenceReduction | None = None,
    first_only: bool = False,
) -> torch.Tensor:
    """An :class:`hrrformer.model.EncoderBlock` with HRR attention over x (B, T, D) in chunks of
    ``chunk_size`` positions → (B, T, D), equal to ``block(x, key_padding_mask, reduction)``.

    ``reduction``: over a sequence-parallel group, x is this rank's part of the sequence.
    ``first_only``: pass 3 for position 0 alone → (B, 1, D) (a last layer under CLS pooling).
    """
    attn = block.attn
    if not isinstance(attn, HrrAttention):
        raise ValueError(f"chunk_size needs HRR attention, got {type(attn).__name__}")
    reduction = LOCAL if reduction is None else reduction
    dtype = hrr.compute_dtype(x.dtype)
    exponent = safe_exponent(dtype, reduction.sequence_length(x.shape[1]), attn.head_dim, attn.memories)
    passes = _Passes(block, exponent)
    xs = x.split(chunk_size, dim=1)  # views; one SplitBackward gathers their gradients
    masks = [None] * len(xs) if key_padding_mask is None else key_padding_mask.split(chunk_size, dim=1)
    keeps = [keep_weights(m, dtype) for m in masks]  # (B, 1, T_c) or None: the softmax's
    beta_keeps = [beta_keep(kc, attn.pads_in_beta) for kc in keeps]  # β's

    parts = [_run(passes.superpose, xc, kc) for xc, kc in zip(xs, beta_keeps, strict=True)]
    betas, common = combine_superpositions([p for p, _ in parts], [s for _, s in parts], passes.causal, reduction)
    a = [_run(passes.scores, xc, kc, bc, common) for xc, kc, bc in zip(xs, beta_keeps, betas, strict=True)]
    weights = softmax_weights(a, keeps, passes.causal, reduction, attn.score_scales())  # (B, h, T_c) each
    if attn.record_weights:
        attn.last_weights = torch.cat(weights, dim=-1).detach()
    if attn.length_scale:
        counts = position_counts(keeps, [xc.shape[1] for xc in xs], passes.causal, reduction, weights[0])
        weights = [w * n[..., 0] for w, n in zip(weights, counts, strict=True)]

    if first_only:
        x0, k0 = xs[0][:, :1], None if beta_keeps[0] is None else beta_keeps[0][..., :1]
        return _run(passes.finish, x0, weights[0][..., :1], k0, betas[0], common)  # (B, 1, D)
    finished = [
        _run(passes.finish, xc, w, kc, bc, common) for xc, w, kc, bc in zip(xs, weights, beta_keeps, betas, strict=True)
    ]
    return torch.cat(finished, dim=1)
