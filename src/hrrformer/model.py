"""Hrrformer models: config, embeddings, encoder block, classifier and dual encoder.

    tokens (B, T) ──embed + positions──► (B, T, D) ──N × EncoderBlock──► LayerNorm
          ──pool (mean over real tokens | CLS)──► (B, D) ──MLP head──► logits (B, C)

With ``pooling="none"`` nothing is pooled: the head runs per position, logits (B, T, C), and
``positions`` (a (B, T) bool mask, e.g. ``labels != -100``) picks the positions to score before
the head, logits (N, C) for the N positions asked: with a vocabulary of 8,192 classes the head
costs nothing where nothing is asked.

Padding (token ``pad_id``, 0 by default) is excluded everywhere: from β and the softmax of the
attention, and from mean pooling, so a padded sequence gives the same logits as the unpadded one.
``authors_padding`` is the authors' behaviour instead: pads enter β and the mean over all T
positions and are masked in the softmax only, so the output depends on how far a batch is padded.

The defaults are our network. The authors' five (docs/AUTHORS.md) differ in norm placement
(``norm``, ``embedding_norm``, ``final_norm``, ``norm_eps``), the MLP (``mlp_activation``,
``mlp_out_bias``), the head (``head_activation``, ``head_width``), projection biases
(``attention_bias``), padding (``authors_padding``, ``pad_id=None``) and the CLS position
(``cls_position``); :data:`hrrformer.tasks.AUTHORS_NETWORKS` holds each task's settings, and
:func:`hrrformer.authors.from_flax` loads their trained weights.

Initialisation, on purpose: linear layers use LeCun-normal weights (truncated normal with
std 1/sqrt(fan_in), as Flax's default in the authors' code, which keeps activations at unit
variance) and zero biases; token embeddings N(0, 1), at the scale of sinusoidal positions;
learned positions and the CLS vector N(0, 0.02²), small next to the tokens at the start;
LayerNorm (1, 0); the layer parts as in :mod:`hrrformer.parts` (the short convolution's taps
uniform on ±1/√K, ``nn.Conv1d``'s default; the gate's RMSNorm weight 1, its W_g LeCun-normal).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import kinds
from .chunked import chunked_block_forward
from .collectives import broadcast, gather_ints
from .config import HrrformerConfig
from .ops.hrr_attention import SequenceReduction

__all__ = [
    "EncoderBlock",
    "Hrrformer",
    "HrrformerConfig",
    "HrrformerDualEncoder",
    "HrrformerEncoder",
    "ShardedPositionEmbedding",
    "masked_mean",
]


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None, offset: int = 0) -> torch.Tensor:
    """(length, dim): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(...) for p = offset … offset + length − 1.

    Made on demand (``offset``: a sequence-parallel rank's first global position). The angles are
    computed in float64 and the table returned in float32, as the authors' numpy table: in float32
    the angle p · 10000^(−2i/dim) is off by up to ~p · 6e-8, 2.3e-4 in PE at p = 4,000."""
    f64 = torch.float64
    pos = torch.arange(offset, offset + length, device=device, dtype=f64)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=f64) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


#: Dropout draws 15-bit uniform integers: p is used as round(p · 2¹⁵) / 2¹⁵ (off by < 1.6e-5).
_DROPOUT_LEVELS = 2**15


def dropout_keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """(keep, 1 / P(keep)): keep (shape) bool, True with probability 1 − p' where p' = round(p·2¹⁵)/2¹⁵.

    Four masks per random draw: ``random_`` fills int64 with uniform integers on [0, 2⁶³), whose
    four 16-bit pieces (viewed as int16), each cut to its low 15 bits, are independent and uniform
    on [0, 2¹⁵). On CPUs that is ~3× faster than ``torch.rand`` (one float per element), and the
    dropout masks were the most expensive elementwise passes of a training step (BENCHMARKS.md).
    """
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()  # uniform on [0, 2⁶³)
    levels = draws.view(torch.int16)[:n].view(shape).bitwise_and_(_DROPOUT_LEVELS - 1)  # uniform on [0, 2¹⁵)
    dropped = round(p * _DROPOUT_LEVELS)
    return levels >= dropped, _DROPOUT_LEVELS / (_DROPOUT_LEVELS - dropped)


class Dropout(nn.Module):
    """Inverted dropout, ``x · 1[u ≥ p] / (1 − p)`` with u uniform on 2¹⁵ levels (:func:`dropout_keep_mask`).

    Same distribution as ``nn.Dropout`` up to p's rounding to a multiple of 2⁻¹⁵, at a fraction of
    the cost of its Bernoulli sampler on CPUs.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep, scale = dropout_keep_mask(x.shape, self.p, x.device)
        return (x * keep).mul_(scale)


def _lecun_normal_(weight: torch.Tensor) -> None:
    std = 1.0 / math.sqrt(weight.shape[1])
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def layer_norm(config: HrrformerConfig) -> nn.LayerNorm:
    """LayerNorm over ``dim`` with the config's ε: (x − mean) / sqrt(var + ε) · γ + β, biased variance."""
    return nn.LayerNorm(config.dim, eps=config.norm_eps)


def activation(name: str) -> nn.Module:
    """``gelu``: x Φ(x) (exact, erf); ``gelu_tanh``: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))), Flax's
    ``nn.gelu``; ``relu``: max(x, 0)."""
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    return nn.GELU() if name == "gelu" else nn.ReLU()


class EncoderBlock(nn.Module):
    """Attention and MLP sublayers with residuals; LayerNorm before (pre) or after (post) each, or
    before the MLP only (pre_mlp). The attention is the config's kind (:mod:`hrrformer.kinds`) with
    its options and layer parts (short convolution, output gate)."""

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        # Dropout where the authors put it: on the embeddings and on each sublayer's output (not
        # inside the attention or the MLP); on CPUs each dropout mask costs as much as a matmul.
        self.attn = kinds.build_layer(config)  # the config's attention kind, with its options and parts
        # pre_mlp: no norm before the attention (norm1 is the identity), pre-norm before the MLP
        self.norm1 = nn.Identity() if config.norm == "pre_mlp" else layer_norm(config)
        self.norm2 = layer_norm(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, config.mlp_dim),
            activation(config.mlp_activation),
            nn.Linear(config.mlp_dim, config.dim, bias=config.mlp_out_bias),
        )
        self.drop = Dropout(config.dropout)
        self.pre_norm = config.norm in ("pre", "pre_mlp")
        self.chunk_size = config.chunk_size

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        reduction: SequenceReduction | None = None,
        first_only: bool = False,
    ) -> torch.Tensor:
        """x (B, T, D) → (B, T, D). ``reduction``: how the attention sums over the sequence (None:
        x is the whole sequence; over a process group: x is this rank's part of it). With
        ``chunk_size`` set and T above it, the block runs chunk by chunk (:mod:`hrrformer.chunked`).

        ``first_only``: return position 0 only, (B, 1, D). Every position still enters the
        attention (β and the softmax normaliser), but the residual, the norms and the MLP run on
        one position (chunked: the output projection too): what a last layer under CLS pooling needs.
        """
        if self.chunk_size is not None and x.shape[1] > self.chunk_size:
            return chunked_block_forward(self, x, key_padding_mask, self.chunk_size, reduction, first_only=first_only)
        attended = self.attn(self.attention_input(x), key_padding_mask, reduction)
        if first_only:
            x, attended = x[:, :1], attended[:, :1]
        return self.after_attention(x, attended)

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the attention sees: norm1(x) (pre-norm) or x (post-norm). Per position."""
        return self.norm1(x) if self.pre_norm else x

    def after_attention(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the block, per position: residual, norms and the MLP. (B, T, D) → (B, T, D)."""
        if self.pre_norm:
            x = x + self.drop(attended)
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(attended))
        return self.norm2(x + self.drop(self.mlp(x)))


def masked_mean(x: torch.Tensor, keep: torch.Tensor, reduction: SequenceReduction) -> torch.Tensor:
    """Mean of x (B, T, D) over the real positions (keep (B, T) or (B, T, 1), 1 = real) of the whole
    sequence → (B, D); with a process group's reduction, x is this rank's part (one all-reduce of
    (B, D + 1) sums). A sequence with no real position gives zeros."""
    keep = keep.to(x.dtype)
    if keep.dim() == 2:
        keep = keep[..., None]  # (B, T, 1)
    sums = reduction.total([torch.cat([(x * keep).sum(1), keep.sum(1)], dim=-1)])  # (B, D + 1)
    return sums[..., :-1] / sums[..., -1:].clamp_min(1.0)


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


class HrrformerEncoder(nn.Module):
    """tokens (B, T) → pooled features (B, D), or with ``pooling="none"`` features per position (B, T, D).

    One forward for every execution: ``sequence_parallel_group`` (None by default; set it with
    :func:`hrrformer.parallel.enable_sequence_parallel`) only changes where this process's tokens
    start and how sums over the sequence are taken (a
    :class:`~hrrformer.ops.hrr_attention.SequenceReduction`). With a group, ``tokens`` is this rank's
    contiguous chunk (all ranks the same length, from :func:`hrrformer.parallel.shard_sequence`),
    positions are global, attention and pooling span the whole sequence, and every rank returns
    the same pooled features (``pooling="none"``: each rank its own positions' features).
    """

    sequence_parallel_group: Any = None

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.cls_shift = int(config.pooling == "cls" and config.cls_position)  # positions taken by CLS
        n_positions = config.max_len + self.cls_shift
        self.position_embedding = nn.Embedding(n_positions, config.dim) if config.pos_embedding == "learned" else None
        self.has_positions = config.pos_embedding != "none"
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pooling == "cls" else None
        self.drop = Dropout(config.dropout)
        self.embedding_norm = layer_norm(config) if config.embedding_norm else None
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.layers))
        self.final_norm = layer_norm(config) if config.final_norm else nn.Identity()

    def check_tokens(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None, check_length: bool = True
    ) -> None:
        c = self.config
        if tokens.dim() != 2 or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(
                f"tokens must be an integer tensor of shape (B, T), got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if check_length and tokens.shape[1] > c.max_len:
            raise ValueError(f"tokens has length {tokens.shape[1]} > max_len={c.max_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
            raise ValueError(
                f"tokens must lie in [0, vocab_size={c.vocab_size}), got min {int(tokens.min())} max {int(tokens.max())}"
            )
        if key_padding_mask is not None and (
            key_padding_mask.dtype != torch.bool or key_padding_mask.shape != tokens.shape
        ):
            raise ValueError(
                f"key_padding_mask must be bool of shape {tuple(tokens.shape)} (True = padding), "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )

    def checked_mask(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None, reduction: SequenceReduction
    ) -> torch.Tensor:
        """Check the tokens (of every rank together, one all-gather of four integers per rank, so that
        bad input on any rank raises on every rank instead of a hang) → the padding mask (B, T)."""
        c, rank = self.config, reduction.rank
        error, b, t, last = None, -1, -1, -1
        try:
            self.check_tokens(tokens, key_padding_mask, check_length=not reduction.parallel)
            b, t = tokens.shape
            mask = self.default_mask(tokens) if key_padding_mask is None else key_padding_mask
        except ValueError as err:
            error = str(err)
        if not reduction.parallel:
            if error is not None:
                raise ValueError(error)
            return mask
        if error is None:
            real = (~mask).any(0).nonzero()  # (n, 1) local indices of positions real in some row
            last = rank * t + int(real[-1, 0]) if len(real) else -1  # global index of the last real token
        facts = gather_ints([error is not None, b, t, last], reduction.group, tokens.device)
        if error is not None:
            raise ValueError(error)
        bad = [r for r, f in enumerate(facts) if f[0]]
        if bad:
            raise ValueError(f"sequence-parallel forward: rank(s) {bad} rejected their tokens")
        if len({(f[1], f[2]) for f in facts}) > 1:
            raise ValueError(
                "sequence-parallel forward: the ranks' chunks differ in shape, (B, T_local) per rank "
                f"{[(f[1], f[2]) for f in facts]}; split each sequence with hrrformer.parallel.shard_sequence, "
                "which pads it to a multiple of the group size"
            )
        length = max(f[3] for f in facts) + 1  # real length of the whole sequence (padding at the end allowed)
        if length > c.max_len:
            raise ValueError(f"the sequence has real tokens up to length {length} > max_len={c.max_len}")
        return mask

    def default_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """The padding mask (B, T), True = padding: ``tokens == pad_id`` (all False without a pad_id)."""
        pad_id = self.config.pad_id
        return torch.zeros_like(tokens, dtype=torch.bool) if pad_id is None else tokens == pad_id

    def embed(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor, rank: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) → x (B, T', D) and its padding mask (B, T'): T' = T + 1 where the CLS
        token is prepended (rank 0 of a sequence-parallel group, or one process); the positions
        are global (rank r's chunk starts at r·T, after the CLS token if it takes position 0).

        x = dropout(E_tok[tokens] + P[positions]), then LayerNorm with ``embedding_norm``; the CLS
        row is the CLS vector (+ P[0] with ``cls_position``), never padding. No P with
        ``pos_embedding="none"``."""
        x = self.token_embedding(tokens)  # (B, T, D)
        if self.has_positions:
            x = x + self.positions(rank * tokens.shape[1] + self.cls_shift, tokens.shape[1], x)
        if self.cls is not None and rank == 0:
            cls = self.cls.expand(x.shape[0], -1, -1).to(x.dtype)  # (B, 1, D)
            if self.cls_shift and self.has_positions:
                cls = cls + self.positions(0, 1, x)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + T, D)
            key_padding_mask = torch.cat([key_padding_mask.new_zeros(x.shape[0], 1), key_padding_mask], dim=1)
        x = self.drop(x)
        return (x if self.embedding_norm is None else self.embedding_norm(x)), key_padding_mask

    def positions(self, start: int, length: int, like: torch.Tensor) -> torch.Tensor:
        """Position embeddings of global positions [start, start + length) → (length, D)."""
        table = self.position_embedding
        if table is None:
            return sinusoidal_positions(length, like.shape[-1], like.device, offset=start).to(like.dtype)
        if isinstance(table, ShardedPositionEmbedding):
            return table(torch.arange(start, start + length, device=like.device))
        if start + length <= table.num_embeddings:
            return table.weight[start : start + length]
        # positions of end-of-sequence shard padding past the table reuse its last row (masked anyway)
        return table.weight[torch.arange(start, start + length, device=like.device).clamp_max(table.num_embeddings - 1)]

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        reduction = SequenceReduction(self.sequence_parallel_group)
        mask = self.checked_mask(tokens, key_padding_mask, reduction)
        x, mask = self.embed(tokens, mask, reduction.rank)  # (B, T', D), (B, T')
        for i, block in enumerate(self.blocks):
            x = self._run_block(block, x, mask, reduction, first_only=self._cls_only(i))
        if self.config.pooling == "none":
            return self.final_norm(x)  # (B, T, D): this rank's positions
        if self.cls is not None:
            # Rank 0's first row is the CLS token; the other ranks pass their first row only so that
            # their backward (and its collectives) runs through their chunk, with a zero gradient.
            return broadcast(self.final_norm(x[:, 0]), reduction.group, src=0)  # (B, D)
        keep = torch.ones_like(mask) if self.config.authors_padding else ~mask  # authors: mean over all T
        return masked_mean(self.final_norm(x), keep, reduction)  # (B, D)

    def _cls_only(self, index: int) -> bool:
        """Whether block ``index`` need only output position 0: the last block under CLS pooling."""
        return self.cls is not None and index == len(self.blocks) - 1

    def _run_block(
        self, block: nn.Module, x: torch.Tensor, mask: torch.Tensor, reduction: SequenceReduction, first_only: bool
    ) -> torch.Tensor:
        if self.config.activation_checkpointing and self.training:
            return checkpoint(block, x, mask, reduction, first_only, use_reentrant=False)
        return block(x, mask, reduction, first_only)


def _classifier_head(in_dim: int, config: HrrformerConfig) -> nn.Sequential:
    """LRA's head: Linear(in, H) → activation → Linear(H, classes), H = ``mlp_dim`` or ``dim`` (``head_width``)."""
    hidden = config.dim if config.head_width == "dim" else config.mlp_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden), activation(config.head_activation), nn.Linear(hidden, config.num_classes)
    )


def init_weights(model: nn.Module) -> None:
    """Apply the initialisation stated in this module's docstring."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _lecun_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, HrrformerEncoder):
            nn.init.normal_(module.token_embedding.weight, std=1.0)
            if module.position_embedding is not None:
                nn.init.normal_(module.position_embedding.weight, std=0.02)
            if module.cls is not None:
                nn.init.normal_(module.cls, std=0.02)


class Hrrformer(nn.Module):
    """Sequence classifier: ``forward(tokens, key_padding_mask=None)`` → logits (B, num_classes), or
    with ``pooling="none"`` a classifier per position → logits (B, T, num_classes).

    The mask defaults to ``tokens == config.pad_id``. ``positions`` (``pooling="none"`` only), a
    (B, T) bool tensor, picks the positions to score: the head runs on their features only and the
    logits are (N, num_classes), N = ``positions.sum()``, in row-major order (those of
    ``logits[positions]``; the labels ``labels[positions]`` go with them). Under sequence
    parallelism T is this rank's part of the sequence, for the tokens and the positions alike.
    """

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = HrrformerEncoder(config)
        self.head = _classifier_head(config.dim, config)
        init_weights(self)

    @property
    def per_position(self) -> bool:
        """Whether the model classifies every position (``pooling="none"``) rather than the sequence."""
        return self.config.pooling == "none"

    def forward(
        self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if positions is not None and (
            not self.per_position or positions.dtype != torch.bool or positions.shape != tokens.shape
        ):
            raise ValueError(
                "positions must be a bool tensor shaped like the tokens, for a model with pooling='none'; "
                f"got {positions.dtype} {tuple(positions.shape)} for tokens {tuple(tokens.shape)}, "
                f"pooling={self.config.pooling!r}"
            )
        features = self.encoder(tokens, key_padding_mask)  # (B, D), or (B, T, D) per position
        if positions is not None:
            features = features[positions]  # (N, D): the positions asked, and nothing else, reach the head
        return self.head(features)  # (B, C), (B, T, C) or (N, C)


class HrrformerDualEncoder(nn.Module):
    """Two-document classifier (LRA Retrieval): one shared encoder, head on [a, b, a·b, a − b].

    ``forward(tokens_a, tokens_b, mask_a=None, mask_b=None)`` → logits (B, num_classes).
    """

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        if config.pooling == "none":
            raise ValueError("a two-document classifier pools each document: pooling='none' has no meaning here")
        self.config = config
        self.encoder = HrrformerEncoder(config)
        self.head = _classifier_head(4 * config.dim, config)
        init_weights(self)

    def forward(
        self,
        tokens_a: torch.Tensor,
        tokens_b: torch.Tensor,
        mask_a: torch.Tensor | None = None,
        mask_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        a, b = self.encoder(tokens_a, mask_a), self.encoder(tokens_b, mask_b)  # (B, D) each
        return self.head(torch.cat([a, b, a * b, a - b], dim=-1))
