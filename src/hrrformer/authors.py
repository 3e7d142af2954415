"""The authors' networks with their weights: :func:`from_flax` (issue 17; docs/AUTHORS.md).

``from_flax(task, params)`` builds our :class:`~hrrformer.model.Hrrformer` configured as the task's
network in the authors' JAX/Flax code (commit 8a127d1, :data:`hrrformer.tasks.AUTHORS_NETWORKS`),
loads their parameters into it and returns it in eval mode. For their tokens x::

    log_softmax(model(x)) = Network.apply(variables, x, training=False)    # listops, text, image, pathfinder
    softmax(model(x))     = Network(training=False).apply(variables, x)    # binaries (their output is softmax)

to float32 round-off (the largest differences on tests/fixtures/authors are below 1e-6). ``params``
is ``flax.traverse_util.flatten_dict(variables["params"], sep="/")`` as numpy arrays; no jax needed.

The networks, op by op (d = dim, h heads, LN = LayerNorm with ε = 1e-6, GELU = the tanh form,
Flax's ``nn.gelu``; every attention is HRR attention with pads in β, masked in the softmax only)::

    listops     x = LN(E[x] + P)        x += attn(x);     x += MLP(LN x)     MLP d → d/2 → d
    pathfinder  x = E[x] + P            x += attn(x);     x += MLP(LN x)     MLP d → d/4 → d
    text        x = E[x] + sinusoid     x += attn(LN x);  x += MLP(LN x)     MLP d → 2d → d
    image       x = E[x] + sinusoid     x = LN(x + attn(x)); x = LN(x + MLP(x))   MLP d → d/2 → d
      → mean over all T positions → Dense(d) → GELU → Dense(C)           (MLP: Dense, GELU, Dense without bias)
    binaries    x = [cls; E[x] + P]     x += attn(LN x);  x += FFN(LN x)     FFN d → F → d, ReLU, biases
      → row 0 (CLS) → Dense(d) → ReLU → Dense(2)                        (q, k, v, o with biases; 8 heads)

Token conventions are theirs: listops, text and binaries use 0 as padding; image and pathfinder
take raw pixel values 0–255 with no padding and no mask (``pad_id=None``), whatever our own data
pipeline does (it shifts pixels by one and keeps 0 for padding).

Only difference left: our cosine guards its norms with ε = 1e-6 (``‖x‖_ε = sqrt(‖x‖² + ε²)``),
theirs has none; at unit-scale vectors that moves a score by ~1e-12.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .model import Hrrformer, HrrformerConfig
from .tasks import AUTHORS_NETWORKS, get_preset

__all__ = ["AUTHORS_TASKS", "authors_config", "from_flax"]

#: The tasks whose networks :func:`from_flax` converts.
AUTHORS_TASKS = ("listops", "text", "image", "pathfinder", "binaries")

Params = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class _Layout:
    """Where a task's parameters sit in the authors' Flax tree."""

    embedding: str  # the embedding module: Embed_0 the tokens, Embed_1 the learned positions
    layer: str  # one encoder block, formatted with its index
    attention: str  # the attention under a block
    qkvo: tuple[str, str, str, str]  # its q, k, v and output Dense layers
    mlp: str  # the MLP under a block: Dense_0, Dense_1
    norms: tuple[tuple[str, str], ...]  # (our norm, their LayerNorm) under a block


_LRA_ATTENTION = ("SelfAttention_0", ("query", "key", "value", "output"), "MLP_0")
_LEARNED = ("Encoder_0/EmbeddingLearned_0", "Encoder_0/EncoderLayer_{}")
_FIXED = ("Encoder_0/EmbeddingFixed_0", "Encoder_0/EncoderLayer_{}")
_TWO_NORMS = (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_1"))
_LAYOUTS: dict[str, _Layout] = {
    "listops": _Layout(*_LEARNED, *_LRA_ATTENTION, (("norm2", "LayerNorm_0"),)),
    "pathfinder": _Layout(*_LEARNED, *_LRA_ATTENTION, (("norm2", "LayerNorm_0"),)),
    "text": _Layout(*_FIXED, *_LRA_ATTENTION, _TWO_NORMS),
    "image": _Layout(*_FIXED, *_LRA_ATTENTION, _TWO_NORMS),
    "binaries": _Layout(
        "Embedding_0",
        "Encoder_{}",
        "MHAttention_0",
        ("Dense_0", "Dense_1", "Dense_2", "Dense_3"),
        "FeedForwardLayer_0",
        _TWO_NORMS,
    ),
}
_EMBEDDING_NORM = "Encoder_0/LayerNorm_0"  # listops: LN after the embedding dropout
_BINARIES_HEADS = 8  # malware/hrrformer_mgpu.py:15; the Encoder never passes heads


def _count_layers(params: Params, layer: str) -> int:
    """How many blocks ``layer.format(i)`` has parameters, i = 0, 1, …"""
    n = 0
    while any(k.startswith(layer.format(n) + "/") for k in params):
        n += 1
    return n


def _array(params: Params, key: str) -> np.ndarray:
    if key not in params:
        raise ValueError(f"from_flax: parameter {key!r} is missing")
    return np.asarray(params[key])


def authors_config(task: str, params: Params, heads: int | None = None, max_len: int | None = None) -> HrrformerConfig:
    """Our config of the authors' ``task`` network with the sizes of ``params``.

    Sizes come from the arrays: vocabulary and dim from the token table, layers from the block
    names, the MLP width, the classes from the last Dense and, for learned positions, T from the
    position table. Two cannot be read from the arrays: ``heads`` (binaries: always 8; others:
    default the ``paper`` preset's) and, for the sinusoidal tasks (text, image), ``max_len``
    (default the ``paper`` preset's T; any T ≥ the input length gives the same outputs).
    """
    if task not in AUTHORS_TASKS:
        raise ValueError(f"from_flax: unknown task {task!r}; one of {', '.join(AUTHORS_TASKS)}")
    lay, paper = _LAYOUTS[task], get_preset(task, "paper").options
    vocab_size, dim = _array(params, f"{lay.embedding}/Embed_0/embedding").shape
    table = f"{lay.embedding}/Embed_1/embedding"
    if table in params:
        rows = _array(params, table).shape[0]
        if max_len not in (None, rows):
            raise ValueError(f"from_flax: max_len={max_len}, but the position table has {rows} rows")
        max_len = rows
    if task == "binaries":
        if heads not in (None, _BINARIES_HEADS):
            raise ValueError(f"from_flax: the authors' binaries network always has 8 heads, got heads={heads}")
        heads = _BINARIES_HEADS
    layers = _count_layers(params, lay.layer)
    if layers == 0:
        raise ValueError(f"from_flax: no {lay.layer.format(0)}/… parameters for task {task!r}")
    mlp_dim = _array(params, f"{lay.layer.format(0)}/{lay.mlp}/Dense_0/kernel").shape[1]
    return HrrformerConfig(
        **AUTHORS_NETWORKS[task],
        vocab_size=int(vocab_size),
        dim=int(dim),
        max_len=int(max_len or paper["max_len"]),
        heads=int(heads or paper["heads"]),
        layers=layers,
        mlp_dim=int(mlp_dim),
        num_classes=int(_array(params, "Dense_1/kernel").shape[1]),
        pad_id=None if task in ("image", "pathfinder") else 0,
        dropout=0.1,  # theirs everywhere (eval mode: unused)
    )


def _theirs(config: HrrformerConfig, task: str) -> dict[str, tuple[str, ...]]:
    """Our state-dict name → their parameter key(s), concatenated along our output axis; a kernel
    (in, out) becomes our weight (out, in)."""
    lay = _LAYOUTS[task]
    names: dict[str, tuple[str, ...]] = {
        "encoder.token_embedding.weight": (f"{lay.embedding}/Embed_0/embedding",),
        "head.0.weight": ("Dense_0/kernel",),
        "head.0.bias": ("Dense_0/bias",),
        "head.2.weight": ("Dense_1/kernel",),
        "head.2.bias": ("Dense_1/bias",),
    }
    if config.pos_embedding == "learned":
        names["encoder.position_embedding.weight"] = (f"{lay.embedding}/Embed_1/embedding",)
    if config.pooling == "cls":
        names["encoder.cls"] = ("cls_token",)
    if config.embedding_norm:
        names |= {"encoder.embedding_norm.weight": (f"{_EMBEDDING_NORM}/scale",)}
        names |= {"encoder.embedding_norm.bias": (f"{_EMBEDDING_NORM}/bias",)}
    for i in range(config.layers):
        ours, layer = f"encoder.blocks.{i}", lay.layer.format(i)
        att, mlp = f"{layer}/{lay.attention}", f"{layer}/{lay.mlp}"
        names[f"{ours}.attn.qkv_proj.weight"] = tuple(f"{att}/{n}/kernel" for n in lay.qkvo[:3])
        names[f"{ours}.attn.out_proj.weight"] = (f"{att}/{lay.qkvo[3]}/kernel",)
        if config.attention_bias:
            names[f"{ours}.attn.qkv_proj.bias"] = tuple(f"{att}/{n}/bias" for n in lay.qkvo[:3])
            names[f"{ours}.attn.out_proj.bias"] = (f"{att}/{lay.qkvo[3]}/bias",)
        names[f"{ours}.mlp.0.weight"] = (f"{mlp}/Dense_0/kernel",)
        names[f"{ours}.mlp.0.bias"] = (f"{mlp}/Dense_0/bias",)
        names[f"{ours}.mlp.2.weight"] = (f"{mlp}/Dense_1/kernel",)
        if config.mlp_out_bias:
            names[f"{ours}.mlp.2.bias"] = (f"{mlp}/Dense_1/bias",)
        for norm, theirs in lay.norms:
            names[f"{ours}.{norm}.weight"] = (f"{layer}/{theirs}/scale",)
            names[f"{ours}.{norm}.bias"] = (f"{layer}/{theirs}/bias",)
    return names


def _tensor(params: Params, keys: tuple[str, ...], like: torch.Tensor) -> torch.Tensor:
    """Their arrays for one of our parameters: kernels transposed, then concatenated (q, k, v)."""
    arrays = [_array(params, k) for k in keys]
    arrays = [a.T if k.endswith("/kernel") else a for k, a in zip(keys, arrays, strict=True)]
    value = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]))
    if value.shape != like.shape:
        raise ValueError(f"from_flax: {'+'.join(keys)} has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
    return value.to(like.dtype)


def from_flax(task: str, params: Params, *, heads: int | None = None, max_len: int | None = None) -> Hrrformer:
    """Our Hrrformer holding the authors' trained ``task`` network, in eval mode (float32).

    ``task``: listops, text, image, pathfinder or binaries. ``params``: their flattened parameters,
    keys like ``Encoder_0/EncoderLayer_0/SelfAttention_0/query/kernel`` (a ``params/`` prefix is
    dropped). ``heads``, ``max_len``: see :func:`authors_config`. It takes their tokens as their
    network does (module docstring) and returns logits: log_softmax of them (softmax for binaries)
    is their output. Raises ValueError for a missing, unused or misshapen parameter.
    """
    params = {k.removeprefix("params/"): v for k, v in params.items()}
    model = Hrrformer(authors_config(task, params, heads, max_len))
    names = _theirs(model.config, task)
    state = model.state_dict()
    if set(names) != set(state):
        raise AssertionError(f"from_flax: unmapped parameters {sorted(set(state) ^ set(names))}")  # a bug here
    used = {k for keys in names.values() for k in keys}
    unused = sorted(set(params) - used)
    if unused:
        raise ValueError(f"from_flax: parameters not in the authors' {task} network: {unused}")
    model.load_state_dict({name: _tensor(params, keys, state[name]) for name, keys in names.items()})
    return model.eval()
