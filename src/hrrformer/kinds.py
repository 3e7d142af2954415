"""The attention kinds, in one table: each kind's layer and what it can do.

=========  ===================  =========  ==================  ================  ==========  ===========================
kind       layer                chunkable  sequence-parallel   position weights  mixes pos.  its own options
=========  ===================  =========  ==================  ================  ==========  ===========================
hrr        HrrAttention         yes        yes                 yes (w_t)         yes         projection, length_scale,
                                                                                             score_scale, learn_score_scale,
                                                                                             hrr_output, memories,
                                                                                             memory_routing, write_gate,
                                                                                             shared_qk
softmax    SoftmaxAttention     no         no                  no (T × T)        yes         —
none       NoAttention          yes        yes                 no                no          —
=========  ===================  =========  ==================  ================  ==========  ===========================

"Mixes pos." (``mixes_positions``): an output at position t can depend on every position (in a
non-causal layer), not only on t and the short convolution's window before it.
CLS pooling needs it, and a non-causal layer: the CLS token sits at position 0 and the short
convolution is causal, so without attention, or with causal attention, the classifier would see the
CLS token alone and every input would get the same logits. :func:`check_config` refuses both.

Every kind takes the options of :data:`COMMON_OPTIONS` (bias, causal and the layer parts: short
convolution, output gate and value skip, the last only where it mixes positions) and
``authors_padding`` where it has a use for it. An option of
:data:`KIND_OPTIONS` that a kind does not take must keep its neutral value there (the paper's
formula), and :func:`check_config` says which kinds take it. Nothing else in the package compares
kind names: adding a kind is its layer class, its entry here and nothing more; adding a layer part
is its module, its keyword in :data:`COMMON_OPTIONS` and its config field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .attention import HrrAttention, NoAttention, SoftmaxAttention

__all__ = [
    "COMMON_OPTIONS",
    "KINDS",
    "KIND_OPTIONS",
    "AttentionKind",
    "build_layer",
    "check_config",
    "get",
    "of_layer",
    "options_of",
    "untaken_options",
]


@dataclass(frozen=True)
class AttentionKind:
    """One kind of attention: its layer class and its capabilities.

    ``options`` maps the config fields the layer takes beyond :data:`COMMON_OPTIONS` to its keywords;
    ``note`` says, in refusals, what the kind cannot do and why."""

    name: str
    layer: type[nn.Module]
    help: str
    chunkable: bool
    sequence_parallel: bool
    position_weights: bool
    mixes_positions: bool = True
    options: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


#: Config field → layer keyword, taken by every kind (with ``dim`` and ``heads``, positional).
COMMON_OPTIONS: dict[str, str] = {
    "attention_bias": "bias",
    "causal": "causal",
    "short_conv": "short_conv",
    "short_conv_init": "short_conv_init",
    "output_gate": "output_gate",
    "value_skip": "value_skip",
    "head_dim": "head_dim",
}

#: The options only some kinds take, with the value every kind accepts (the paper's formula).
KIND_OPTIONS: dict[str, Any] = {
    "projection": False,
    "length_scale": False,
    "score_scale": None,
    "learn_score_scale": False,
    "hrr_output": "value",
    "memories": 1,
    "write_gate": False,
    "shared_qk": False,
    "memory_routing": "input",
}

KINDS: dict[str, AttentionKind] = {
    kind.name: kind
    for kind in (
        AttentionKind(
            "hrr",
            HrrAttention,
            "HRR attention (linear in T)",
            chunkable=True,
            sequence_parallel=True,
            position_weights=True,
            options={
                "projection": "projection",
                "length_scale": "length_scale",
                "score_scale": "score_scale",
                "learn_score_scale": "learn_score_scale",
                "hrr_output": "output",
                "memories": "memories",
                "write_gate": "write_gate",
                "shared_qk": "shared_qk",
                "memory_routing": "routing",
                "authors_padding": "pads_in_beta",
            },
        ),
        AttentionKind(
            "softmax",
            SoftmaxAttention,
            "its softmax twin",
            chunkable=False,
            sequence_parallel=False,
            position_weights=False,
            note=(
                "softmax attention's weights are a T × T matrix per head, coupling every pair of positions: "
                "no small summary of a chunk or rank computes them (chunking or sequence parallelism would "
                "need ring attention, O(T) communication per layer)"
            ),
        ),
        AttentionKind(
            "none",
            NoAttention,
            "no attention, the ablation: the attention's output is v_t (only the short convolution crosses positions)",
            chunkable=True,
            sequence_parallel=True,
            position_weights=False,
            mixes_positions=False,
            note="attention 'none' has no attention weights (its output is v_t)",
        ),
    )
}


def get(name: str) -> AttentionKind:
    """The kind called ``name``; ValueError naming the known ones."""
    if name not in KINDS:
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def of_layer(layer: nn.Module) -> AttentionKind:
    """The kind of an attention layer (an instance of one of the kinds' classes)."""
    for kind in KINDS.values():
        if isinstance(layer, kind.layer):
            return kind
    raise ValueError(f"{type(layer).__name__} is not the layer of any attention kind ({', '.join(KINDS)})")


def options_of(name: str) -> dict[str, Any]:
    """The options of :data:`KIND_OPTIONS` that kind ``name`` takes, at their neutral values."""
    taken = get(name).options
    return {option: neutral for option, neutral in KIND_OPTIONS.items() if option in taken}


def untaken_options(name: str) -> dict[str, Any]:
    """The options of :data:`KIND_OPTIONS` that kind ``name`` does not take, at their neutral values
    (what a preset's variant for another kind is reset to)."""
    taken = get(name).options
    return {option: neutral for option, neutral in KIND_OPTIONS.items() if option not in taken}


def _takers(test) -> str:
    names = [kind.name for kind in KINDS.values() if test(kind)]
    return f"attention={names[0]!r}" if len(names) == 1 else f"attention in {tuple(names)}"


def check_config(config: Any, prefix: str = "HrrformerConfig.") -> None:
    """ValueError for an option of ``config`` (an HrrformerConfig) that its attention kind does not
    take (set away from its neutral value), or a chunk size it cannot run with."""
    kind = get(config.attention)
    for option, neutral in untaken_options(kind.name).items():
        if getattr(config, option) != neutral:
            raise ValueError(f"{prefix}{option} needs {_takers(lambda k, o=option: o in k.options)}")
    if getattr(config, "value_skip", False) and not kind.mixes_positions:
        needs = _takers(lambda k: k.mixes_positions)
        raise ValueError(f"{prefix}value_skip needs {needs}: attention={kind.name!r} outputs v_t itself")
    if getattr(config, "chunk_size", None) is not None and not kind.chunkable:
        raise ValueError(f"{prefix}chunk_size needs {_takers(lambda k: k.chunkable)}: {kind.note}")
    blind_cls: tuple[str, str] | None = None  # (what CLS pooling needs, why it is blind without it)
    if getattr(config, "pooling", None) == "cls" and not kind.mixes_positions:
        blind_cls = _takers(lambda k: k.mixes_positions), f"attention={kind.name!r} and a causal short convolution"
    elif getattr(config, "pooling", None) == "cls" and getattr(config, "causal", False):
        blind_cls = "causal=False", "a causal layer"
    if blind_cls is not None:
        needs, why = blind_cls
        raise ValueError(
            f"{prefix}pooling='cls' needs {needs}: with {why} the CLS token at position 0 sees no later token, "
            "so every input gets the same logits; use pooling='mean' (--pooling mean)"
        )


def build_layer(config: Any) -> nn.Module:
    """The attention layer of an HrrformerConfig: its kind's class with the config's options."""
    kind = get(config.attention)
    keywords = {**COMMON_OPTIONS, **kind.options}
    return kind.layer(config.dim, config.heads, **{kw: getattr(config, name) for name, kw in keywords.items()})
