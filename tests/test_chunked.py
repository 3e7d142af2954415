"""Sequence chunking (hrrformer.chunked): a block run chunk by chunk equals the whole block."""

from __future__ import annotations

import copy

import pytest
import torch

from hrrformer.model import Hrrformer, HrrformerConfig

TOL = dict(rtol=1e-9, atol=1e-9)


def _config(**overrides) -> HrrformerConfig:
    values = dict(vocab_size=30, max_len=64, dim=16, heads=2, layers=2, mlp_dim=24, dropout=0.0)
    values.update(overrides)
    return HrrformerConfig(**values)


def _tokens() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 30, (3, 23), generator=g)  # 23: no chunk size below divides it
    tokens[0, 9:] = 0  # padding at the end of one row
    tokens[2, 1:] = 0  # a row with one real token
    return tokens


def _pair(chunk_size: int, **overrides) -> tuple[Hrrformer, Hrrformer]:
    torch.manual_seed(0)
    whole = Hrrformer(_config(**overrides)).double()
    chunked = copy.deepcopy(whole)
    for block in chunked.encoder.blocks:
        block.chunk_size = chunk_size
    return whole, chunked


#: The MQAR preset's memory: routed by its own keys, q and k shared, π, the shift, a write gate.
KEY_ROUTED_RECALL = dict(
    causal=True, hrr_output="recall", write_gate=True, projection=True, shared_qk=True, short_conv=4,
    short_conv_init="shift", memories=4, memory_routing="key",
)  # fmt: skip

CASES = {
    "mean_pre": dict(pooling="mean"),
    "cls_pre": dict(pooling="cls"),
    "cls_post_sinusoidal": dict(pooling="cls", norm="post", pos_embedding="sinusoidal"),
    "causal_mean": dict(pooling="mean", causal=True),
    "projection": dict(projection=True),
    "one_head_odd_dim": dict(dim=7, heads=1, mlp_dim=5),
    "length_scale": dict(length_scale=True),
    "causal_length_scale_mean": dict(pooling="mean", causal=True, length_scale=True),
    "score_scale_retrieved": dict(score_scale=5.0, learn_score_scale=True, hrr_output="retrieved"),
    "causal_retrieved_mean": dict(pooling="mean", causal=True, hrr_output="retrieved", score_scale=3.0),
    "memories": dict(memories=3, projection=True),
    "causal_memories_retrieved_mean": dict(pooling="mean", causal=True, memories=2, hrr_output="retrieved"),
    "authors_listops": dict(
        authors_padding=True,
        norm="pre_mlp",
        embedding_norm=True,
        final_norm=False,
        mlp_out_bias=False,
        mlp_activation="gelu_tanh",
        head_activation="gelu_tanh",
        head_width="dim",
        norm_eps=1e-6,
    ),
    "recall": dict(hrr_output="recall"),
    "causal_recall_mean": dict(pooling="mean", causal=True, hrr_output="recall"),
    "write_gate": dict(write_gate=True, hrr_output="retrieved", score_scale=3.0),
    "causal_recall_write_gate_memories": dict(causal=True, hrr_output="recall", write_gate=True, memories=2),
    "causal_recall_key_routed": KEY_ROUTED_RECALL,
    "key_routed_retrieved_cls": dict(pooling="cls", memories=3, memory_routing="key", hrr_output="retrieved"),
    "authors_recall_write_gate": dict(authors_padding=True, hrr_output="recall", write_gate=True),
    "authors_binaries": dict(pooling="cls", cls_position=False, attention_bias=True, authors_padding=True),
    "authors_padding_causal": dict(authors_padding=True, causal=True),
    "authors_retrieved_causal": dict(authors_padding=True, causal=True, hrr_output="retrieved"),
    # the layer parts: each chunk's short convolution gets the K − 1 positions before it (a halo that
    # spans several chunks where they are shorter); the gate is per position
    "short_conv": dict(short_conv=4),
    "output_gate": dict(output_gate=True),
    "parts_causal_mean": dict(pooling="mean", causal=True, short_conv=3, output_gate=True),
    "parts_wide_kernel_bias": dict(short_conv=7, output_gate=True, attention_bias=True),
    "parts_variants": dict(
        short_conv=4,
        output_gate=True,
        projection=True,
        length_scale=True,
        score_scale=3.0,
        learn_score_scale=True,
        hrr_output="retrieved",
        memories=2,
    ),
    "parts_causal_retrieved_mean": dict(
        pooling="mean", causal=True, short_conv=4, output_gate=True, hrr_output="retrieved"
    ),
    "parts_authors_listops": dict(
        short_conv=4, output_gate=True, authors_padding=True, norm="pre_mlp", embedding_norm=True, final_norm=False
    ),
    "parts_causal_recall_write_gate_mean": dict(
        pooling="mean", causal=True, short_conv=4, output_gate=True, hrr_output="recall", write_gate=True
    ),
    "parts_post_norm": dict(norm="post", short_conv=2, output_gate=True),
    "shared_qk_causal_recall_pi": dict(
        pooling="mean", causal=True, shared_qk=True, projection=True, short_conv=4, hrr_output="recall", write_gate=True
    ),
    "wide_heads_causal_recall": dict(
        pooling="mean", causal=True, head_dim=24, short_conv=4, output_gate=True, hrr_output="recall", write_gate=True
    ),
    # the value skip: o + D ⊙ v_t, with v_t the chunk's own (the value output's, the retrieved output's)
    "value_skip_parts_mean": dict(pooling="mean", short_conv=4, output_gate=True, value_skip=True),
    "value_skip_causal_retrieved_mean": dict(
        pooling="mean", causal=True, short_conv=3, output_gate=True, hrr_output="retrieved", value_skip=True
    ),
    "value_skip_recall_write_gate_cls": dict(pooling="cls", hrr_output="recall", write_gate=True, value_skip=True),
    # the no-attention ablation: one pass per chunk
    "none": dict(attention="none"),
    "none_parts_mean": dict(attention="none", pooling="mean", short_conv=4, output_gate=True),
    "none_causal_parts": dict(attention="none", causal=True, short_conv=3, output_gate=True, attention_bias=True),
}


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 10])
@pytest.mark.parametrize("case", list(CASES))
def test_chunked_model_equals_whole_in_value_and_gradient(case: str, chunk_size: int) -> None:
    whole, chunked = _pair(chunk_size, **CASES[case])
    tokens = _tokens()
    weights = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out_whole, out_chunked = whole(tokens), chunked(tokens)
    assert not torch.allclose(out_whole[0], out_whole[1])  # the logits depend on the tokens: not a vacuous case
    torch.testing.assert_close(out_chunked, out_whole, **TOL)
    (out_whole * weights).sum().backward()
    (out_chunked * weights).sum().backward()
    grads = dict(chunked.named_parameters())
    for name, p in whole.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, **TOL, msg=name)


def test_chunked_gradients_are_exact_with_dropout() -> None:
    """The recomputation in the backward pass must replay the forward's dropout masks."""
    torch.manual_seed(0)
    model = Hrrformer(_config(dim=4, heads=2, mlp_dim=4, layers=1, dropout=0.3, chunk_size=5)).double().train()
    tokens = _tokens()[:2, :12]
    params = tuple(model.parameters())

    def logits(*values: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(123)  # the same masks on every call of gradcheck
        out = torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], values)), (tokens,))
        return out

    assert torch.autograd.gradcheck(logits, params, eps=1e-6, atol=1e-6)


def test_chunked_attention_weights_are_recorded_and_sum_to_one() -> None:
    _, chunked = _pair(4)
    attn = chunked.encoder.blocks[0].attn
    attn.record_weights = True
    tokens = _tokens()
    with torch.no_grad():
        chunked(tokens)
    w = attn.last_weights  # (B, h, T)
    assert w.shape == (3, 2, 23)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, dtype=w.dtype))
    assert torch.all(w[0, :, 9:] == 0)


def test_chunked_block_stays_finite_for_huge_activations() -> None:
    """float32 q, k, v near 1e20: the plain formula's ‖v̂‖² overflows; range control keeps it finite."""
    whole, chunked = _pair(4, layers=1)
    block_w, block_c = whole.encoder.blocks[0].float(), chunked.encoder.blocks[0].float()
    for block in (block_w, block_c):
        with torch.no_grad():
            block.attn.qkv_proj.weight.mul_(1e20)
    x = torch.randn(2, 23, 16, requires_grad=True)
    out_w, out_c = block_w(x), block_c(x)
    assert torch.isfinite(out_c).all()
    torch.testing.assert_close(out_c, out_w, rtol=1e-3, atol=1e-3)
    out_c.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_float32_chunked_matches_whole() -> None:
    whole, chunked = _pair(6)
    whole, chunked = whole.float(), chunked.float()
    tokens = _tokens()
    torch.testing.assert_close(chunked(tokens), whole(tokens), rtol=1e-4, atol=1e-5)


def test_chunk_size_is_validated() -> None:
    with pytest.raises(ValueError, match="chunk_size must be"):
        _config(chunk_size=0)
    with pytest.raises(ValueError, match=r"chunk_size needs attention in \('hrr', 'none'\): softmax .* T × T"):
        _config(chunk_size=8, attention="softmax")
