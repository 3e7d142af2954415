"""The model's options: :class:`HrrformerConfig`, each field with its type, choices and help.

Every field is an ``hrrformer train`` flag (``--length-scale`` for ``length_scale``) and a key of
a run's ``config.json`` "model", generated from here by :mod:`hrrformer.options`, except those the
data sets (``vocab_size``, ``num_classes``, ``pad_id``). Adding a model option is adding its
field here and its implementation in the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from . import kinds
from .attention import Routing
from .ops.hrr_attention.validation import check_recall_options
from .options import check_choices, option
from .parts import ConvInit, check_short_conv_init

__all__ = ["HrrformerConfig"]

_DATA = {"flag": False}  # set from the data, not by a flag


#: The model options that only HRR attention takes, with their values that leave the paper's
#: formula (and that any attention accepts): :mod:`hrrformer.kinds` holds them; kept for scripts.
HRR_ONLY_OPTIONS: dict[str, object] = kinds.options_of("hrr")


@dataclass
class HrrformerConfig:
    """Everything that defines an Hrrformer's shape. ``mlp_dim`` defaults to 2 × ``dim``."""

    vocab_size: int = option(256, "number of token ids (set from the data)", **_DATA)
    max_len: int = option(1024, "longest input in tokens; longer ones are truncated")
    dim: int = option(128, "embedding width D (a multiple of --heads unless --head-dim is set)")
    heads: int = option(4, "attention heads")
    layers: int = option(1, "encoder blocks")
    mlp_dim: int | None = option(None, "hidden units of each block's MLP (none: 2 × --dim)")
    dropout: float = option(0.1, "dropout probability, in [0, 1)")
    pos_embedding: Literal["learned", "sinusoidal", "none"] = option(
        "learned",
        "positions: a learned table (max_len × dim), fixed sinusoids (no table), or none (order only from "
        "--causal and --short-conv, as Zoology's MQAR models)",
    )
    norm: Literal["pre", "post", "pre_mlp"] = option(
        "pre",
        "LayerNorm before (pre) or after (post) each residual branch, or before the MLP only "
        "(pre_mlp: x + attn(x), x + MLP(LN x), the authors' ListOps and Pathfinder)",
    )
    pooling: Literal["mean", "cls", "none"] = option(
        "mean",
        "classify the mean over real tokens or a CLS token, or none: logits at every position (B, T, C), "
        "for tasks labelled per position (mqar)",
    )
    num_classes: int = option(2, "number of classes (set from the data)", **_DATA)
    attention: str = option(
        "hrr", "the attention: " + "; ".join(f"{k.name}, {k.help}" for k in kinds.KINDS.values()), choices=kinds.KINDS
    )
    pad_id: int | None = option(
        0, "the padding token id, masked everywhere (the data's; none: no padding, every position is real)", **_DATA
    )
    causal: bool = option(False, "attend to positions ≤ t only")
    projection: bool = option(False, "hrr: project q and k to a unit-magnitude spectrum before binding")
    length_scale: bool = option(
        False,
        "hrr: multiply the attention output by the number of real positions, n·w_t·v_t "
        "(the paper's w_t·v_t is ~1/T the size of the residual; EXPERIMENTS.md)",
    )
    score_scale: float | None = option(
        None,
        "hrr: per-head score scale τ, w = softmax(τ·a) (the paper's cosine scores in [-1, 1] keep every "
        "weight within e² of uniform); none: the paper (τ = 1)",
        metavar="TAU",
    )
    learn_score_scale: bool = option(
        False, "hrr: learn the score scale τ per head as exp(log τ), from --score-scale (> 0)"
    )
    hrr_output: Literal["value", "retrieved", "recall"] = option(
        "value",
        "hrr: what position t outputs: value (the paper, w_t·v_t), retrieved (w_t·|v_t|·v̂_t/|v̂_t|, "
        "what q_t unbinds from the superposition: content from the whole sequence) or recall "
        "(√d·v̂_t/|v̂_t|: no score, no softmax; refuses --length-scale and --score-scale)",
    )
    memories: int = option(
        1,
        "hrr: several β per head: M superpositions, each position's key and query routed to them by a "
        "learned softmax (β_j = Σ r^k_t(j) k_t⊛v_t, v̂_t = Σ_j r^q_t(j) q_t†⊛β_j); 1: the paper's one β",
        metavar="M",
    )
    memory_routing: Routing = option(
        "input",
        "hrr, --memories > 1: route each position by a learned map of the block's input (input), or by its "
        "own q and k (key: r = softmax(ŷ R), one map per head for both, so a query reads the memories its "
        "own key wrote to: the write is selected by the match)",
    )
    write_gate: bool = option(
        False,
        "hrr: a learned write gate g_t = sigmoid(x_t W + b) per position and head, keys g_t·k_t: "
        "β = Σ g_t k_t⊛v_t, each position decides how much it writes into the memory",
    )
    shared_qk: bool = option(
        False,
        "hrr: q and k from one projection (W_q = W_k; each keeps its own short-convolution filters): "
        "with --projection, a key unbinds the query of the same token exactly",
    )
    short_conv: int | None = option(
        None,
        "a depthwise causal convolution of kernel K over time on q, k and v after their projections, then "
        "SiLU (fla's ShortConvolution; padding zeroed first); none: the paper (no convolution)",
        metavar="K",
    )
    short_conv_init: ConvInit = option(
        "random",
        "how the short convolution's filters start: random (PyTorch's) or shift (unit impulses: k_t reads "
        "position t−1, q_t and v_t their own, so k_t⊛v_t binds each token to the next and a query of the "
        "same token finds it: associative recall)",
    )
    output_gate: bool = option(
        False, "gate the attention's output: RMSNorm over each head's channels times SiLU(x W_g), before o_proj"
    )
    value_skip: bool = option(
        False,
        "add each position's own value to the attention's output, o_t + D ⊙ v_t (D learned per head and "
        "channel, ones at first; Mamba's D): the block without attention plus the attention (hrr, softmax)",
    )
    head_dim: int | None = option(
        None,
        "each head's width d, the projections E → heads·d (hrr: the size of each memory β; n pairs "
        "unbind with crosstalk ~sqrt(n/d)); none: dim / heads",
        metavar="D",
    )
    activation_checkpointing: bool = option(False, "recompute activations in backward")
    chunk_size: int | None = option(
        None,
        "sequence chunking (hrr, none): run each block over N positions at a time, recomputing in backward; "
        "for inputs of 10^5-10^6+ tokens (hrrformer.chunked)",
        metavar="N",
    )
    # The authors' networks (docs/AUTHORS.md, tasks.AUTHORS_NETWORKS); the defaults are ours.
    embedding_norm: bool = option(False, "LayerNorm after the embedding dropout (the authors' ListOps and Retrieval)")
    mlp_activation: Literal["gelu", "gelu_tanh", "relu"] = option(
        "gelu", "the MLP's activation: exact GELU, its tanh form (Flax's nn.gelu, the authors' LRA) or ReLU"
    )
    mlp_out_bias: bool = option(True, "a bias in the MLP's second Linear (the authors' LRA MLPs have none)")
    head_activation: Literal["relu", "gelu", "gelu_tanh"] = option(
        "relu", "the classifier head's activation (the authors' LRA head: gelu_tanh)"
    )
    head_width: Literal["mlp_dim", "dim"] = option(
        "mlp_dim", "the head's hidden width: --mlp-dim, or --dim as the authors' Dense(d)"
    )
    final_norm: bool = option(True, "LayerNorm on the encoder's output before pooling (the authors have none)")
    attention_bias: bool = option(False, "biases in the q, k, v and output projections (the authors' malware net)")
    norm_eps: float = option(1e-5, "ε of every LayerNorm (PyTorch's 1e-5; Flax's, the authors', 1e-6)")
    authors_padding: bool = option(
        False, "the authors' padding: pads enter β and the mean pooling, masked in the softmax only (off: pad-exact)"
    )
    cls_position: bool = option(
        True, "CLS pooling: the CLS token takes position 0, tokens 1..T (off: the authors' malware, no position)"
    )

    def __post_init__(self) -> None:
        if self.mlp_dim is None:
            self.mlp_dim = 2 * self.dim
        for name in ("vocab_size", "max_len", "dim", "heads", "layers", "mlp_dim", "num_classes", "memories"):
            if getattr(self, name) < 1:
                raise ValueError(f"HrrformerConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.head_dim is None and self.dim % self.heads:
            raise ValueError(f"HrrformerConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HrrformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"HrrformerConfig.pad_id ({self.pad_id}) must be in [0, vocab_size={self.vocab_size})")
        check_choices(self)
        for name in ("short_conv", "chunk_size", "head_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"HrrformerConfig.{name} must be ≥ 1 or None, got {getattr(self, name)}")
        check_short_conv_init(self.short_conv, self.short_conv_init, name="HrrformerConfig.short_conv_init")
        kinds.check_config(self)  # the options and the chunking that the attention kind takes
        if self.memory_routing == "key" and self.memories == 1:
            raise ValueError("HrrformerConfig.memory_routing='key' needs memories > 1 (one memory has no routes)")
        if not self.norm_eps > 0:
            raise ValueError(f"HrrformerConfig.norm_eps must be > 0, got {self.norm_eps}")
        if self.learn_score_scale and self.score_scale is None:
            raise ValueError("HrrformerConfig.learn_score_scale needs a score_scale to start from")
        if self.learn_score_scale and not self.score_scale > 0:
            raise ValueError(
                f"HrrformerConfig.learn_score_scale learns log τ: score_scale must be > 0, got {self.score_scale}"
            )
        scaled = self.score_scale is not None or self.learn_score_scale
        check_recall_options(self.hrr_output, self.length_scale, scaled, name="HrrformerConfig.hrr_output")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HrrformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HrrformerConfig keys: {unknown}")
        return cls(**values)
