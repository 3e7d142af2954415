"""Hrrformer models: config, embeddings, encoder block, classifier and dual encoder.

    tokens (B, T) ──embed + positions──► (B, T, D) ──N × EncoderBlock──► LayerNorm
          ──pool (mean over real tokens | CLS)──► (B, D) ──MLP head──► logits (B, C)

Padding (token ``pad_id``, 0 by default) is excluded everywhere: from β and the softmax of the
attention, and from mean pooling, so a padded sequence gives the same logits as the unpadded one.

Initialisation, on purpose: linear layers use LeCun-normal weights (truncated normal with
std 1/sqrt(fan_in), as Flax's default in the authors' code, which keeps activations at unit
variance) and zero biases; token embeddings N(0, 1), at the scale of sinusoidal positions;
learned positions and the CLS vector N(0, 0.02²), small next to the tokens at the start;
LayerNorm (1, 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import HrrAttention, SoftmaxAttention

__all__ = ["EncoderBlock", "Hrrformer", "HrrformerConfig", "HrrformerDualEncoder", "HrrformerEncoder"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "pos_embedding": ("learned", "sinusoidal"),
    "norm": ("pre", "post"),
    "pooling": ("mean", "cls"),
    "attention": ("hrr", "softmax"),
}


@dataclass
class HrrformerConfig:
    """Everything that defines an Hrrformer's shape. ``mlp_dim`` defaults to 2 × ``dim``."""

    vocab_size: int = 256
    max_len: int = 1024
    dim: int = 128
    heads: int = 4
    layers: int = 1
    mlp_dim: int | None = None
    dropout: float = 0.1
    pos_embedding: Literal["learned", "sinusoidal"] = "learned"
    norm: Literal["pre", "post"] = "pre"
    pooling: Literal["mean", "cls"] = "mean"
    num_classes: int = 2
    attention: Literal["hrr", "softmax"] = "hrr"
    pad_id: int = 0
    causal: bool = False
    projection: bool = False
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.mlp_dim is None:
            self.mlp_dim = 2 * self.dim
        for name in ("vocab_size", "max_len", "dim", "heads", "layers", "mlp_dim", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"HrrformerConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"HrrformerConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HrrformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"HrrformerConfig.pad_id ({self.pad_id}) must be in [0, vocab_size={self.vocab_size})")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"HrrformerConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HrrformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HrrformerConfig keys: {unknown}")
        return cls(**values)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(...). Made on demand."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


def _lecun_normal_(weight: torch.Tensor) -> None:
    std = 1.0 / math.sqrt(weight.shape[1])
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class EncoderBlock(nn.Module):
    """Attention and MLP sublayers with residuals; LayerNorm before (pre) or after (post) each."""

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        attention_cls = HrrAttention if config.attention == "hrr" else SoftmaxAttention
        kwargs = {"projection": config.projection} if config.attention == "hrr" else {}
        self.attn = attention_cls(config.dim, config.heads, dropout=config.dropout, causal=config.causal, **kwargs)
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, config.mlp_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.mlp_dim, config.dim),
        )
        self.drop = nn.Dropout(config.dropout)
        self.pre_norm = config.norm == "pre"

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) → (B, T, D)."""
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), key_padding_mask))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, key_padding_mask)))
        return self.norm2(x + self.drop(self.mlp(x)))


class HrrformerEncoder(nn.Module):
    """tokens (B, T) → pooled features (B, D)."""

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        n_positions = config.max_len + (config.pooling == "cls")
        self.position_embedding = nn.Embedding(n_positions, config.dim) if config.pos_embedding == "learned" else None
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pooling == "cls" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(config.dim)

    def check_tokens(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
        c = self.config
        if tokens.dim() != 2 or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(
                f"tokens must be an integer tensor of shape (B, T), got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if tokens.shape[1] > c.max_len:
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

    def embed(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) → x (B, T', D) and its padding mask (B, T'), T' = T (+1 with CLS)."""
        x = self.token_embedding(tokens)  # (B, T, D)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + T, D)
            key_padding_mask = torch.cat([key_padding_mask.new_zeros(x.shape[0], 1), key_padding_mask], dim=1)
        t = x.shape[1]
        if self.position_embedding is not None:
            x = x + self.position_embedding.weight[:t]
        else:
            x = x + sinusoidal_positions(t, x.shape[-1], x.device).to(x.dtype)
        return self.drop(x), key_padding_mask

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_tokens(tokens, key_padding_mask)
        if key_padding_mask is None:
            key_padding_mask = tokens == self.config.pad_id
        x, mask = self.embed(tokens, key_padding_mask)  # (B, T', D), (B, T')
        for block in self.blocks:
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        x = self.final_norm(x)
        if self.cls is not None:
            return x[:, 0]  # (B, D)
        keep = (~mask).to(x.dtype)[..., None]  # (B, T, 1)
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)


def _classifier_head(in_dim: int, config: HrrformerConfig) -> nn.Sequential:
    """LRA's head: Linear → ReLU → Linear to the classes."""
    return nn.Sequential(nn.Linear(in_dim, config.mlp_dim), nn.ReLU(), nn.Linear(config.mlp_dim, config.num_classes))


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
    """Sequence classifier: ``forward(tokens, key_padding_mask=None)`` → logits (B, num_classes).

    The mask defaults to ``tokens == config.pad_id``.
    """

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = HrrformerEncoder(config)
        self.head = _classifier_head(config.dim, config)
        init_weights(self)

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(tokens, key_padding_mask))


class HrrformerDualEncoder(nn.Module):
    """Two-document classifier (LRA Retrieval): one shared encoder, head on [a, b, a·b, a − b].

    ``forward(tokens_a, tokens_b, mask_a=None, mask_b=None)`` → logits (B, num_classes).
    """

    def __init__(self, config: HrrformerConfig) -> None:
        super().__init__()
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
