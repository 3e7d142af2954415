"""The HRR attention weights of a model's layers: :func:`attention_maps` and :func:`explain_tokens`.

An HRR attention head gives one weight per position, w_t = softmax_t(cos(v_t, q_t† ⊛ β)), so a
layer's heads are H vectors over the sequence, not T × T matrices. The model runs once with
``record_weights`` set on its attention layers; its mode and the layers' flags are restored
afterwards. Softmax attention is refused (its weights are a T × T matrix per head), and so is HRR
attention with the recall output (it has no weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .. import kinds
from ..attention import HrrAttention
from ..collectives import group_size
from ..model import Hrrformer, HrrformerEncoder

__all__ = ["attention_maps", "explain_tokens", "no_weights_message"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP or torch.compile wrapper."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        model = inner if isinstance(inner, nn.Module) else model
    return model


def _encoder_of(model: nn.Module) -> HrrformerEncoder:
    """The HrrformerEncoder of a classifier, a dual encoder, or a DDP / compiled wrapper of one."""
    model = _unwrap(model)
    encoder = model if isinstance(model, HrrformerEncoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, HrrformerEncoder):
        raise TypeError(f"expected an Hrrformer, HrrformerDualEncoder or HrrformerEncoder, got {type(model).__name__}")
    return encoder


def no_weights_message(kind: kinds.AttentionKind) -> str:
    """Why an attention ``kind`` without one weight per position has no maps (names the kinds that have)."""
    weighted = "attention " + " or ".join(k.name for k in kinds.KINDS.values() if k.position_weights)
    return f"attention maps need one weight per position ({weighted}): {kind.note}"


@contextmanager
def _recording(model: nn.Module) -> Iterator[tuple[HrrformerEncoder, list[HrrAttention]]]:
    """Eval mode, no gradient, and ``record_weights`` on every attention layer; all restored after."""
    encoder = _encoder_of(model)
    layers = [block.attn for block in encoder.blocks]
    for kind in map(kinds.of_layer, layers):
        if not kind.position_weights:
            raise ValueError(no_weights_message(kind))
    if any(getattr(a, "output", None) == "recall" for a in layers):
        raise ValueError(
            "attention maps need one weight per position: HRR attention with the recall output has none "
            "(out_t = √d·v̂_t/‖v̂_t‖, no score and no softmax)"
        )
    group = encoder.sequence_parallel_group
    if group is not None and group_size(group) > 1:
        raise ValueError("attention maps are taken from a plain forward: set sequence_parallel_group to None first")
    missing = object()
    saved = [(a.__dict__.get("record_weights", missing), a.__dict__.get("last_weights", missing)) for a in layers]
    training = model.training
    try:
        model.eval()
        for a in layers:
            a.record_weights = True
            a.__dict__.pop("last_weights", None)
        with torch.no_grad():
            yield encoder, layers
    finally:
        model.train(training)
        for a, (flag, last) in zip(layers, saved):
            for name, value in (("record_weights", flag), ("last_weights", last)):
                if value is missing:
                    a.__dict__.pop(name, None)
                else:
                    a.__dict__[name] = value


def _prepare(
    model: nn.Module, tokens: torch.Tensor | np.ndarray, key_padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) tokens and mask on the model's device (a single sequence gets a batch of one)."""
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
        if key_padding_mask is not None:
            key_padding_mask = torch.as_tensor(key_padding_mask)[None]
    device = next(model.parameters()).device
    mask = None if key_padding_mask is None else torch.as_tensor(key_padding_mask).to(device)
    return tokens.to(device), mask


def _collect(encoder: HrrformerEncoder, layers: list[HrrAttention], include_cls: bool) -> np.ndarray:
    """The recorded weights as (layers, heads, B, T), the CLS column dropped unless ``include_cls``."""
    w = torch.stack([a.last_weights for a in layers])  # (L, B, h, T')
    w = w.permute(0, 2, 1, 3).float().cpu().numpy()  # (L, h, B, T')
    return w if encoder.cls is None or include_cls else w[..., 1:]


def attention_maps(
    model: nn.Module,
    tokens: torch.Tensor | np.ndarray,
    key_padding_mask: torch.Tensor | None = None,
    *,
    include_cls: bool = False,
) -> np.ndarray:
    """The HRR attention weights w_t of every layer and head: float32 array (layers, heads, B, T).

    ``model``: an Hrrformer, HrrformerDualEncoder (its shared encoder is run on ``tokens``) or
    HrrformerEncoder, with HRR attention. ``tokens``: (B, T) or (T,) integers;
    ``key_padding_mask`` (True = padding) defaults to ``tokens == pad_id`` as in the model.
    Padded positions get 0, and per head the weights sum to 1 over the real positions (for a
    ``causal`` model w_t is normalised over s ≤ t instead). With CLS pooling the CLS token's
    column is dropped unless ``include_cls`` (then T + 1 columns, CLS first).

    The model runs once, in eval mode and without gradient; its mode and the layers'
    ``record_weights`` flags are restored afterwards. Raises ValueError for softmax attention and
    for HRR attention with the recall output (no weights).
    """
    tokens, mask = _prepare(model, tokens, key_padding_mask)
    with _recording(model) as (encoder, layers):
        encoder(tokens, mask)
        return _collect(encoder, layers, include_cls)


def explain_tokens(
    model: nn.Module, tokens: torch.Tensor | np.ndarray, key_padding_mask: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (layers, heads, B, T) as :func:`attention_maps`, class probabilities (B, C) or None).

    One forward gives both for a single-sequence classifier; for a dual encoder (or a bare
    encoder) the probabilities are None, since one document alone has no prediction.
    """
    tokens, mask = _prepare(model, tokens, key_padding_mask)
    with _recording(model) as (encoder, layers):
        if isinstance(_unwrap(model), Hrrformer):
            probs = model(tokens, mask).float().softmax(-1).cpu().numpy()
        else:
            encoder(tokens, mask)
            probs = None
        return _collect(encoder, layers, include_cls=False), probs
