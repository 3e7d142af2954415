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

The recall output has no scores and no softmax: pass 2 is skipped, and pass 3 unbinds each chunk
against β (y_c = rest of the block(x_c, m √d v̂_c / ‖v̂_c‖)).

Peak memory: the block's input and output (2·T·D) plus one chunk's activations, instead of
~20·T·D. Cost: q, k, v are projected in each pass and every pass is recomputed once in the
backward pass (about 1.5× the work of an unchunked block).

A short convolution (:mod:`hrrformer.parts`) reads the K − 1 positions before each of its
outputs: each chunk gets them as its halo, taken once for all chunks through the same reduction
(:meth:`SequenceReduction.halo`), and each pass projects them with the chunk. An attention whose
outputs mix no positions (``NoAttention``) needs no sums: one pass per chunk, the whole block.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hrr
from .attention import HrrAttention
from .ops.hrr_attention import COSINE_EPS, LOCAL, SequenceReduction
from .ops.hrr_attention.fourier import (
    combine_superpositions,
    recalled_values,
    retrieved_values,
    scores,
    superpose,
    unbinding,
)
from .ops.hrr_attention.range_control import safe_exponent
from .ops.hrr_attention.weights import beta_keep, equal_weights, keep_weights, position_counts, softmax_weights
from .parts import Halo, halos

__all__ = ["chunked_block_forward"]

Mask = torch.Tensor | None


class _Passes:
    """The passes of one block over its chunks (a closure over the block and its settings). Each
    takes a chunk x_c of the block's input, its padding mask and its halo (the K − 1 positions
    before it, for the short convolution; None without one)."""

    def __init__(self, block: nn.Module, exponent: int = 0) -> None:
        self.block, self.attn, self.exponent = block, block.attn, exponent
        self.causal = self.attn.causal

    def _inputs(self, x: torch.Tensor, halo: Halo | None) -> tuple[torch.Tensor, Halo | None]:
        """What the attention sees of the chunk and of its halo (the block's norm, per position)."""
        attention_input = self.block.attention_input
        return attention_input(x), None if halo is None else halo._replace(x=attention_input(halo.x))

    def _heads(self, x_in: torch.Tensor, parts: str, mask: Mask, halo_in: Halo | None) -> list[torch.Tensor]:
        """The heads of ``parts`` ⊆ "qkv" only (:meth:`HrrAttention.heads`), in the compute dtype."""
        return [y.to(hrr.compute_dtype(y.dtype)) for y in self.attn.heads(x_in, parts, mask, halo_in)]

    def _unbinding_heads(
        self, x_in: torch.Tensor, mask: Mask, halo_in: Halo | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """q, k (causal only: for the running sum inside the chunk; else None) and v of a chunk."""
        if self.causal:
            q, k, v = self._heads(x_in, "qkv", mask, halo_in)
            return q, k, v
        q, v = self._heads(x_in, "qv", mask, halo_in)
        return q, None, v

    def superpose(
        self, x: torch.Tensor, mask: Mask, halo: Halo | None, keep: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: this chunk's β_c and its scale."""
        x_in, halo_in = self._inputs(x, halo)
        k, v = self._heads(x_in, "kv", mask, halo_in)
        return superpose(k, v, keep, self.exponent)

    def scores(
        self,
        x: torch.Tensor,
        mask: Mask,
        halo: Halo | None,
        keep: torch.Tensor | None,
        beta: torch.Tensor,
        common: torch.Tensor,
    ) -> torch.Tensor:
        """Pass 2: a (B, h, T_c) against β (the whole sequence's, or causal: the chunks before)."""
        x_in, halo_in = self._inputs(x, halo)
        q, k, v = self._unbinding_heads(x_in, mask, halo_in)
        return scores(unbinding(q, k, v, keep, beta, common, self.causal, self.exponent, COSINE_EPS))

    def finish(
        self,
        x: torch.Tensor,
        mask: Mask,
        halo: Halo | None,
        weights: torch.Tensor | None,
        keep: torch.Tensor | None,
        beta: torch.Tensor,
        common: torch.Tensor,
    ) -> torch.Tensor:
        """Pass 3: the attention output (w_t v_t, the retrieved w_t ‖v_t‖ v̂_t/‖v̂_t‖, or the recall
        output m_t √d v̂_t/‖v̂_t‖, for which ``weights`` is the keep weights m (B, 1, T_c) or None),
        plus D ⊙ v_t (``value_skip``), the gate and output projection (:meth:`HrrAttention.project_out`)
        and the rest of the block."""
        x_in, halo_in = self._inputs(x, halo)
        output = self.attn.output
        if output == "value":
            [v] = self._heads(x_in, "v", mask, halo_in)  # (B, h, T_c, d)
            read = v
        else:
            q, k, v = self._unbinding_heads(x_in, mask, halo_in)
            spectra = unbinding(q, k, v, keep, beta, common, self.causal, self.exponent, COSINE_EPS)
            read = recalled_values(spectra, weights) if output == "recall" else retrieved_values(spectra)
        y = read if output == "recall" else weights[..., None] * read  # (B, h, T_c, d)
        y = self.attn.skipped(y, v)  # + D ⊙ v_t (value_skip)
        return self.block.after_attention(x, self.attn.project_out(y.to(x.dtype), x_in))

    def local(self, x: torch.Tensor, mask: Mask, halo: Halo | None) -> torch.Tensor:
        """The one pass of an attention whose outputs need no other position (but the halo's): the
        whole block on the chunk (the attention's ``piece``)."""
        x_in, halo_in = self._inputs(x, halo)
        return self.block.after_attention(x, self.attn.piece(x_in, mask, None, halo_in))


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
    """An :class:`hrrformer.model.EncoderBlock` over x (B, T, D) in chunks of ``chunk_size``
    positions → (B, T, D), equal to ``block(x, key_padding_mask, reduction)``. The block's attention
    is HRR (three passes) or one whose outputs mix no positions (one pass, e.g. ``NoAttention``).

    ``reduction``: over a sequence-parallel group, x is this rank's part of the sequence.
    ``first_only``: the last pass for position 0 alone → (B, 1, D) (a last layer under CLS pooling).
    Each chunk's short convolution (if any) gets its halo, the K − 1 positions before the chunk,
    through ``reduction`` (:func:`hrrformer.parts.halos`): from the chunks before it (several, where
    chunks are shorter than K − 1) and, for the first, from the ranks before this one.
    """
    attn = block.attn
    if attn.mixes_positions and not isinstance(attn, HrrAttention):
        raise ValueError(f"chunk_size needs HRR attention or one that mixes no positions, got {type(attn).__name__}")
    reduction = LOCAL if reduction is None else reduction
    xs = x.split(chunk_size, dim=1)  # views; one SplitBackward gathers their gradients
    masks = [None] * len(xs) if key_padding_mask is None else key_padding_mask.split(chunk_size, dim=1)
    width = attn.halo_size
    edges = halos(xs, masks, width, reduction) if width else [None] * len(xs)  # each chunk's halo
    if first_only:  # position 0 alone in the last pass: its halo is its chunk's
        last_xs, last_masks = [xs[0][:, :1]], [None if masks[0] is None else masks[0][:, :1]]
    else:
        last_xs, last_masks = xs, masks
    if not attn.mixes_positions:
        local = _Passes(block).local
        return torch.cat([_run(local, *c) for c in zip(last_xs, last_masks, edges)], dim=1)

    dtype = hrr.compute_dtype(x.dtype)
    exponent = safe_exponent(dtype, reduction.sequence_length(x.shape[1]), attn.head_dim, attn.memories)
    passes = _Passes(block, exponent)
    keeps = [keep_weights(m, dtype) for m in masks]  # (B, 1, T_c) or None: the softmax's
    beta_keeps = [beta_keep(kc, attn.pads_in_beta) for kc in keeps]  # β's
    chunks = list(zip(xs, masks, edges, strict=True))

    parts = [_run(passes.superpose, *c, kc) for c, kc in zip(chunks, beta_keeps, strict=True)]
    betas, common = combine_superpositions([p for p, _ in parts], [s for _, s in parts], passes.causal, reduction)
    if attn.output == "recall":  # no scores, no softmax: pass 3 takes the keep weights m (B, 1, T_c) or None
        weights = keeps
        if attn.record_weights:  # those of equal scores, as in one piece (hrr_attention)
            shapes = [(x.shape[0], attn.num_heads, x.shape[1]) for x in xs]
            like = x.new_empty((), dtype=dtype)
            attn.last_weights = torch.cat(equal_weights(keeps, shapes, passes.causal, reduction, like), dim=-1)
    else:
        a = [_run(passes.scores, *c, kc, bc, common) for c, kc, bc in zip(chunks, beta_keeps, betas, strict=True)]
        weights = softmax_weights(a, keeps, passes.causal, reduction, attn.score_scales())  # (B, h, T_c) each
        if attn.record_weights:
            attn.last_weights = torch.cat(weights, dim=-1).detach()
    if attn.length_scale:
        counts = position_counts(keeps, [xc.shape[1] for xc in xs], passes.causal, reduction, weights[0])
        weights = [w * n[..., 0] for w, n in zip(weights, counts, strict=True)]

    if first_only:
        weights = [None if weights[0] is None else weights[0][..., :1]]
        beta_keeps = [None if beta_keeps[0] is None else beta_keeps[0][..., :1]]
    # first_only: one last pass, zip stops at the first chunk's halo and β
    finished = [
        _run(passes.finish, xc, mc, hc, w, kc, bc, common)
        for xc, mc, hc, w, kc, bc in zip(last_xs, last_masks, edges, weights, beta_keeps, betas)
    ]
    return torch.cat(finished, dim=1)
