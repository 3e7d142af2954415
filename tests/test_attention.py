"""Fast HRR attention against the plain reference; gradients; padding; causality; dtypes."""

import pytest
import torch

from hrrformer import HrrAttention, SoftmaxAttention, hrr_attention
from hrrformer.attention import hrr_attention_reference


def random_qkv(b, h, t, d, dtype=torch.float64, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, t, d, generator=g, dtype=dtype, requires_grad=requires_grad) for _ in range(3))


def random_padding(b, t, seed=0):
    """Row 0 right-padded, row 1 left-padded, row 2 padded at random places, other rows none."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, t, dtype=torch.bool)
    n = int(torch.randint(0, t, (1,), generator=g))
    mask[0, t - n :] = True
    if b > 1:
        mask[1, : int(torch.randint(0, t, (1,), generator=g))] = True
    if b > 2:
        mask[2] = torch.rand(t, generator=g) < 0.4
    return mask


SHAPES = [(1, 1, 1, 1), (2, 3, 1, 8), (3, 2, 17, 1), (3, 2, 17, 7), (4, 3, 33, 16), (3, 1, 9, 65)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("method", ["auto", "circulant", "fourier"])
def test_fast_equals_reference(shape, causal, padded, method):
    if causal and method == "circulant":
        pytest.skip("no causal circulant form")
    q, k, v = random_qkv(*shape)
    mask = random_padding(shape[0], shape[2]) if padded else None
    fast = hrr_attention(q, k, v, mask, causal=causal, method=method)
    ref = hrr_attention_reference(q, k, v, mask, causal=causal)
    assert (fast - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("causal,method", [(False, "circulant"), (False, "fourier"), (True, "fourier")])
def test_gradcheck_fast_path(causal, method):
    q, k, v = random_qkv(3, 2, 6, 5, requires_grad=True)
    mask = random_padding(3, 6, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, b, c: hrr_attention(a, b, c, mask, causal=causal, method=method), (q, k, v)
    )


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_reference_autograd(causal):
    q, k, v = random_qkv(3, 2, 12, 8, requires_grad=True, seed=5)
    mask = random_padding(3, 12, seed=5)
    upstream = torch.randn(3, 2, 12, 8, dtype=torch.float64)
    fast_grads = torch.autograd.grad((hrr_attention(q, k, v, mask, causal) * upstream).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((hrr_attention_reference(q, k, v, mask, causal) * upstream).sum(), (q, k, v))
    for fast, ref in zip(fast_grads, ref_grads):
        assert (fast - ref).abs().max().item() < 1e-9


def test_fully_padded_row_returns_zeros_with_finite_gradients():
    q, k, v = random_qkv(2, 2, 5, 4, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    for causal in (False, True):
        out = hrr_attention(q, k, v, mask, causal)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_no_real_output(causal):
    q, k, v = random_qkv(2, 2, 10, 6)
    extra = random_qkv(2, 2, 37, 6, seed=9)
    padded = [torch.cat([x, e], dim=2) for x, e in zip((q, k, v), extra)]
    mask = torch.zeros(2, 47, dtype=torch.bool)
    mask[:, 10:] = True
    out = hrr_attention(q, k, v, None, causal)
    out_padded = hrr_attention(*padded, mask, causal)
    torch.testing.assert_close(out_padded[:, :, :10], out, rtol=0, atol=1e-12)


def test_causal_output_ignores_the_future():
    q, k, v = random_qkv(1, 2, 20, 8)
    out = hrr_attention(q, k, v, causal=True)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, 12:] = torch.randn_like(x[:, :, 12:])
    out2 = hrr_attention(q2, k2, v2, causal=True)
    torch.testing.assert_close(out2[:, :, :12], out[:, :, :12], rtol=0, atol=0)
    assert not torch.allclose(out2[:, :, 12:], out[:, :, 12:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_close_to_float32(dtype, causal):
    q, k, v = random_qkv(2, 4, 64, 32, dtype=torch.float32)
    mask = random_padding(2, 64)
    out_half = hrr_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, causal)
    out_float = hrr_attention(q.to(dtype).float(), k.to(dtype).float(), v.to(dtype).float(), mask, causal)
    assert out_half.dtype == dtype and torch.isfinite(out_half).all()
    torch.testing.assert_close(out_half.float(), out_float, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"q": torch.randn(2, 3, 4)}, "q must have shape"),
        ({"k": torch.randn(2, 3, 5, 4)}, "q, k of shape"),
        ({"v": torch.randn(2, 3, 4, 3)}, r"q, k of shape \(B, h, T, m·d\) and v"),  # 8 is no multiple of 3
        ({"v": torch.randn(2, 3, 4, 16)}, "q, k of shape"),  # wider than q
        ({"key_padding_mask": torch.zeros(2, 5, dtype=torch.bool)}, "key_padding_mask must have shape"),
        ({"key_padding_mask": torch.zeros(2, 4)}, "must be a bool tensor"),
        ({"method": "magic"}, "method must be"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = dict(zip("qkv", random_qkv(2, 3, 4, 8, dtype=torch.float32)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hrr_attention(**args)


@pytest.mark.parametrize("cls", [HrrAttention, SoftmaxAttention])
def test_module_padding_invariance_and_shapes(cls):
    torch.manual_seed(0)
    layer = cls(24, 4).double().eval()
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    x_padded = torch.cat([x, torch.randn(2, 37, 24, dtype=torch.float64)], dim=1)
    mask = torch.zeros(2, 46, dtype=torch.bool)
    mask[:, 9:] = True
    y = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(layer(x_padded, key_padding_mask=mask)[:, :9], y)


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        HrrAttention(30, 4)
    layer = HrrAttention(16, 2)
    with pytest.raises(ValueError, match="embed_dim=16"):
        layer(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="key_padding_mask"):
        layer(torch.randn(2, 5, 16), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))


def test_projection_option_changes_scores_and_stays_finite():
    torch.manual_seed(0)
    plain, projected = HrrAttention(16, 2), HrrAttention(16, 2, projection=True)
    projected.load_state_dict(plain.state_dict())
    x = torch.randn(2, 7, 16)
    out = projected(x)
    assert torch.isfinite(out).all() and not torch.allclose(out, plain(x))


def test_module_compiles():
    layer = HrrAttention(16, 2)
    x = torch.randn(2, 11, 16)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, 8:] = True
    compiled = torch.compile(layer, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(x, mask), layer(x, mask))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_weights_reproduce_the_output(causal):
    from hrrformer.attention import hrr_attention_weights

    q, k, v = random_qkv(3, 2, 15, 6)
    mask = random_padding(3, 15, seed=2)
    w = hrr_attention_weights(q, k, v, mask, causal)
    torch.testing.assert_close(w[..., None] * v, hrr_attention(q, k, v, mask, causal), rtol=0, atol=1e-12)
    assert torch.equal(w.masked_select(mask[:, None, :].expand_as(w)), torch.zeros(int(mask.sum()) * 2, dtype=w.dtype))
    if not causal:
        sums = w.sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))


# ---------------------------------------------------------------------------- length_scale
def _scaled_reference(q, k, v, mask, causal):
    """n·w_t·v_t written plainly: the reference output times the count of real positions its
    softmax runs over (all of them, or those ≤ t when causal)."""
    t = q.shape[-2]
    keep = torch.ones(q.shape[0], t, dtype=q.dtype) if mask is None else (~mask).to(q.dtype)
    counts = torch.stack([keep[:, : i + 1].sum(-1) if causal else keep.sum(-1) for i in range(t)], -1)  # (B, T)
    return hrr_attention_reference(q, k, v, mask, causal) * counts.clamp_min(1.0)[:, None, :, None]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_length_scale_equals_count_times_reference(causal, padded):
    layer = HrrAttention(12, 3, causal=causal, length_scale=True).double()
    q, k, v = random_qkv(3, 3, 10, 4, seed=7)
    mask = random_padding(3, 10, seed=7) if padded else None
    got = layer.attend(q, k, v, mask)
    torch.testing.assert_close(got, _scaled_reference(q, k, v, mask, causal), atol=1e-10, rtol=1e-10)


def test_length_scale_gives_the_values_under_uniform_weights():
    """q = 0 scores every position 0: uniform weights 1/n, so n·w_t·v_t = v_t (the paper's form: v_t/n)."""
    layer = HrrAttention(8, 2, length_scale=True).double()
    _, k, v = random_qkv(2, 2, 9, 4, seed=1)
    q = torch.zeros_like(k)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True
    out = layer.attend(q, k, v, mask)
    real = ~mask
    torch.testing.assert_close(out.transpose(1, 2)[real], v.transpose(1, 2)[real])


def test_length_scale_gradcheck_and_padding_invariance():
    torch.manual_seed(0)
    layer = HrrAttention(8, 2, length_scale=True).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: layer(a), (x,))
    padded = torch.cat([x.detach(), torch.randn(2, 4, 8, dtype=torch.float64)], dim=1)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 5:] = True
    torch.testing.assert_close(layer(padded, key_padding_mask=mask)[:, :5], layer(x.detach()))


def test_length_scale_refuses_softmax_attention():
    """length_scale is a variant of the HRR kernel, so it works wherever the kernel runs (chunked
    and sequence-parallel: tests/test_chunked.py, tests/test_parallel.py); softmax has no such form."""
    from hrrformer.model import HrrformerConfig

    with pytest.raises(ValueError, match="length_scale"):
        HrrformerConfig(attention="softmax", length_scale=True)
