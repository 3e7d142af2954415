"""Attention variants of the kernel (score scale, retrieved output, the authors' padding: pads in β), held to the
same standard as the paper's form:
the plain reference (< 1e-9, float64), gradcheck, padding invariance, causality; chunked and
sequence-parallel equality are in tests/test_chunked.py and tests/test_parallel.py."""

import pytest
import torch

from hrrformer import HrrAttention, hrr_attention
from hrrformer.attention import hrr_attention_reference
from hrrformer.ops.hrr_attention.weights import MAX_SCORE_SCALE
from test_attention import random_padding, random_qkv

FORMS = [(False, "circulant"), (False, "fourier"), (True, "fourier")]
TAUS = torch.tensor([0.5, 7.0, -3.0], dtype=torch.float64)  # per head; a negative scale too
RETRIEVED_FORMS = [(False, "circulant"), (False, "fourier"), (True, "auto")]


@pytest.mark.parametrize("causal,method", RETRIEVED_FORMS)
@pytest.mark.parametrize("shape", [(3, 3, 17, 7), (2, 3, 33, 16), (3, 3, 1, 4)])
@pytest.mark.parametrize("scaled", [False, True])
def test_retrieved_output_equals_reference(causal, method, shape, scaled):
    q, k, v = random_qkv(*shape)
    mask = random_padding(shape[0], shape[2], seed=2)
    tau = TAUS[: shape[1]] if scaled else None
    fast = hrr_attention(q, k, v, mask, causal=causal, method=method, score_scale=tau, output="retrieved")
    ref = hrr_attention_reference(q, k, v, mask, causal=causal, score_scale=tau, output="retrieved")
    assert (fast - ref).abs().max().item() < 1e-9
    assert (fast - hrr_attention(q, k, v, mask, causal=causal, score_scale=tau)).abs().max().item() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_retrieved_output_gradcheck_padding_and_causality(causal):
    q, k, v = random_qkv(3, 2, 6, 5, requires_grad=True, seed=4)
    mask = random_padding(3, 6, seed=3)
    tau = TAUS[:2].clone().requires_grad_()
    for method in ("circulant", "fourier") if not causal else ("fourier",):
        assert torch.autograd.gradcheck(
            lambda a, b, c, t, m=method: hrr_attention(a, b, c, mask, causal, m, score_scale=t, output="retrieved"),
            (q, k, v, tau),
        )
    q, k, v = (x.detach() for x in (q, k, v))
    extra = random_qkv(3, 2, 4, 5, seed=9)
    padded = [torch.cat([x, e], dim=2) for x, e in zip((q, k, v), extra)]
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[:, 6:] = True
    torch.testing.assert_close(
        hrr_attention(*padded, pad, causal, output="retrieved")[:, :, :6],
        hrr_attention(q, k, v, None, causal, output="retrieved"),
    )
    if causal:  # the future changes no past output
        changed = [x.clone() for x in (q, k, v)]
        for x in changed:
            x[:, :, 4:] = torch.randn_like(x[:, :, 4:])
        torch.testing.assert_close(
            hrr_attention(*changed, None, True, output="retrieved")[:, :, :4],
            hrr_attention(q, k, v, None, True, output="retrieved")[:, :, :4],
        )


def test_retrieved_output_is_checked():
    q, k, v = random_qkv(1, 1, 4, 4)
    with pytest.raises(ValueError, match="output must be one of"):
        hrr_attention(q, k, v, output="nope")
    with pytest.raises(ValueError, match="output must be one of"):
        HrrAttention(8, 2, output="nope")


@pytest.mark.parametrize("scale", [1e5, 1e20, 1e36])
def test_retrieved_output_range_control(scale):
    """float32 inputs far past the plain formula's range: both forms stay finite and agree."""
    q, k, v = (x.float() * scale for x in random_qkv(2, 2, 9, 8, seed=6))
    outs = []
    for method in ("circulant", "fourier"):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = hrr_attention(*x, method=method, output="retrieved")
        (out / scale).sum().backward()
        assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in x), method
        outs.append(out / scale)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal,method", FORMS)
@pytest.mark.parametrize("shape", [(3, 3, 17, 7), (2, 3, 33, 16), (3, 3, 1, 4)])
def test_score_scale_equals_reference(causal, method, shape):
    q, k, v = random_qkv(*shape)
    mask = random_padding(shape[0], shape[2], seed=2)
    tau = TAUS[: shape[1]]
    fast = hrr_attention(q, k, v, mask, causal=causal, method=method, score_scale=tau)
    ref = hrr_attention_reference(q, k, v, mask, causal=causal, score_scale=tau)
    assert (fast - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("causal,method", FORMS)
def test_score_scale_gradcheck_including_the_scale(causal, method):
    q, k, v = random_qkv(3, 3, 6, 5, requires_grad=True, seed=4)
    mask = random_padding(3, 6, seed=3)
    tau = TAUS.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c, t: hrr_attention(a, b, c, mask, causal=causal, method=method, score_scale=t), (q, k, v, tau)
    )


def test_score_scale_gradients_match_the_reference():
    q, k, v = random_qkv(2, 3, 12, 8, requires_grad=True, seed=5)
    tau = TAUS.clone().requires_grad_()
    mask = random_padding(2, 12, seed=5)
    upstream = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    inputs = (q, k, v, tau)
    fast = torch.autograd.grad((hrr_attention(q, k, v, mask, score_scale=tau) * upstream).sum(), inputs)
    ref = torch.autograd.grad((hrr_attention_reference(q, k, v, mask, score_scale=tau) * upstream).sum(), inputs)
    for f, r in zip(fast, ref):
        assert (f - r).abs().max().item() < 1e-9


@pytest.mark.parametrize("causal", [False, True])
def test_score_scale_padding_and_causality(causal):
    q, k, v = random_qkv(2, 3, 10, 6)
    tau = TAUS
    extra = random_qkv(2, 3, 7, 6, seed=9)
    padded = [torch.cat([x, e], dim=2) for x, e in zip((q, k, v), extra)]
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[:, 10:] = True
    out = hrr_attention(*padded, mask, causal=causal, score_scale=tau)[:, :, :10]
    torch.testing.assert_close(out, hrr_attention(q, k, v, causal=causal, score_scale=tau), rtol=1e-9, atol=1e-12)
    if causal:  # changing the future changes no past output
        changed = [x.clone() for x in (q, k, v)]
        for x in changed:
            x[:, :, 6:] = torch.randn_like(x[:, :, 6:])
        early = hrr_attention(*changed, causal=True, score_scale=tau)[:, :, :6]
        torch.testing.assert_close(early, hrr_attention(q, k, v, causal=True, score_scale=tau)[:, :, :6])


def test_a_large_score_scale_focuses_the_weights_and_stays_finite():
    """With τ = 40 (the clamp) the best-scoring position takes almost all the weight; the paper's
    τ = 1 keeps every weight within e² of uniform. Scales past the clamp act as the clamp."""
    q, k, v = random_qkv(1, 1, 200, 16, dtype=torch.float32)
    q = k.clone()
    _, w_paper = hrr_attention(q, k, v, return_weights=True)
    _, w_sharp = hrr_attention(q, k, v, score_scale=torch.tensor([MAX_SCORE_SCALE]), return_weights=True)
    _, w_huge = hrr_attention(q, k, v, score_scale=torch.tensor([1e6]), return_weights=True)
    assert w_paper.max() / w_paper.min() <= torch.e**2 + 1e-3
    assert w_sharp.max() / w_sharp.min() > 1e3
    torch.testing.assert_close(w_huge, w_sharp)
    assert torch.isfinite(w_huge).all()


def test_layer_learns_its_score_scale_in_log_space():
    layer = HrrAttention(12, 3, score_scale=16.0, learn_score_scale=True).double()
    assert isinstance(layer.log_score_scale, torch.nn.Parameter) and layer.score_scale is None
    torch.testing.assert_close(layer.score_scales(), torch.full((3,), 16.0, dtype=torch.float64))
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    optimizer = torch.optim.Adam([layer.log_score_scale], lr=0.05)
    layer(x).square().sum().backward()
    assert layer.log_score_scale.grad is not None and layer.log_score_scale.grad.abs().min() > 0
    optimizer.step()
    # Adam's first step moves each log τ by lr: τ changes by the same fraction (e^±0.05) at any size
    torch.testing.assert_close((layer.score_scales() / 16.0).log().abs(), torch.full((3,), 0.05, dtype=torch.float64))
    with pytest.raises(ValueError, match="score_scale > 0"):
        HrrAttention(12, 3, score_scale=-1.0, learn_score_scale=True)
    fixed = HrrAttention(12, 3, score_scale=2.0)
    assert "score_scale" in dict(fixed.named_buffers()) and "score_scale" not in dict(fixed.named_parameters())
    with pytest.raises(ValueError, match="score_scale"):
        HrrAttention(12, 3, learn_score_scale=True)
    with pytest.raises(ValueError, match=r"shape \(heads,\)"):
        hrr_attention(*random_qkv(1, 3, 4, 4), score_scale=torch.ones(2))


# ---------------------------------------------------------------- the authors' padding: pads in β, softmax only


@pytest.mark.parametrize("causal,method", FORMS)
@pytest.mark.parametrize("shape", [(3, 3, 17, 7), (4, 2, 33, 16), (3, 1, 1, 4)])
def test_pads_in_beta_equals_reference(causal, method, shape):
    q, k, v = random_qkv(*shape)
    mask = random_padding(shape[0], shape[2], seed=2)
    fast = hrr_attention(q, k, v, mask, causal=causal, method=method, pads_in_beta=True)
    ref = hrr_attention_reference(q, k, v, mask, causal=causal, pads_in_beta=True)
    assert (fast - ref).abs().max().item() < 1e-9
    if mask.any() and shape[2] > 1:  # the option changes the output: pads do enter β
        assert (ref - hrr_attention_reference(q, k, v, mask, causal=causal)).abs().max().item() > 1e-3


@pytest.mark.parametrize("causal,method", FORMS)
def test_pads_in_beta_gradcheck(causal, method):
    q, k, v = random_qkv(3, 2, 6, 5, requires_grad=True, seed=4)
    mask = random_padding(3, 6, seed=3)
    tau = TAUS[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c, t: hrr_attention(a, b, c, mask, causal=causal, method=method, score_scale=t, pads_in_beta=True),
        (q, k, v, tau),
    )


@pytest.mark.parametrize("causal", [False, True])
def test_pads_in_beta_gradients_match_the_reference(causal):
    q, k, v = random_qkv(2, 3, 12, 8, requires_grad=True, seed=5)
    mask = random_padding(2, 12, seed=5)
    upstream = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    fast = torch.autograd.grad((hrr_attention(q, k, v, mask, causal, pads_in_beta=True) * upstream).sum(), (q, k, v))
    ref = torch.autograd.grad(
        (hrr_attention_reference(q, k, v, mask, causal, pads_in_beta=True) * upstream).sum(), (q, k, v)
    )
    for f, r in zip(fast, ref):
        assert (f - r).abs().max().item() < 1e-9


def test_pads_in_beta_pads_get_zero_weight_and_real_weights_sum_to_one():
    q, k, v = random_qkv(3, 2, 15, 6)
    mask = random_padding(3, 15, seed=1)
    _, w = hrr_attention(q, k, v, mask, pads_in_beta=True, return_weights=True)
    assert torch.equal(w.masked_fill(mask[:, None, :], 0.0), w)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


@pytest.mark.parametrize("causal,method", FORMS)
def test_pads_in_beta_with_the_retrieved_output_equals_reference(causal, method):
    q, k, v = random_qkv(3, 2, 17, 7, seed=8)
    mask = random_padding(3, 17, seed=8)
    options = dict(causal=causal, output="retrieved", pads_in_beta=True)
    fast = hrr_attention(q, k, v, mask, method=method, **options)
    assert (fast - hrr_attention_reference(q, k, v, mask, **options)).abs().max().item() < 1e-9


@pytest.mark.parametrize("causal,method", FORMS)
def test_pads_in_beta_with_the_retrieved_output_gradcheck(causal, method):
    q, k, v = random_qkv(3, 2, 6, 5, requires_grad=True, seed=4)
    mask = random_padding(3, 6, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, b, c: hrr_attention(
            a, b, c, mask, causal=causal, method=method, output="retrieved", pads_in_beta=True
        ),
        (q, k, v),
    )
