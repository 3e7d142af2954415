"""Several β per head (memories): q, k of width m·d against v of width d, each block its own
superposition. Held to the paper's form's standard: the plain reference (< 1e-9, float64),
gradcheck, padding invariance, causality and range control here; chunked and sequence-parallel
equality in tests/test_chunked.py and tests/test_parallel.py."""

import pytest
import torch

from hrrformer import HrrAttention, hrr, hrr_attention
from hrrformer.attention import hrr_attention_reference
from hrrformer.config import HrrformerConfig
from hrrformer.ops.hrr_attention.routed import ROUTED_BLOCK, Routed, as_blocks
from test_attention import random_padding

FORMS = [(False, "circulant"), (False, "fourier"), (True, "fourier")]
TAUS = torch.tensor([0.5, 7.0, -3.0], dtype=torch.float64)
OUTPUTS = ["value", "retrieved", "recall"]


def memory_qkv(b, h, t, d, m, requires_grad=False, seed=0, dtype=torch.float64):
    """q, k (B, h, T, m·d) and v (B, h, T, d), standard normal."""
    g = torch.Generator().manual_seed(seed)
    shapes = ((b, h, t, m * d), (b, h, t, m * d), (b, h, t, d))
    return tuple(torch.randn(*s, generator=g, dtype=dtype, requires_grad=requires_grad) for s in shapes)


def test_the_reference_is_the_sum_over_memories_written_out():
    """β_j = Σ_t k_t^(j) ⊛ v_t, v̂_t = Σ_j q_t^(j)† ⊛ β_j, a_t = cos(v_t, v̂_t), out = softmax(a)_t v_t."""
    q, k, v = memory_qkv(1, 1, 5, 4, 3, seed=1)
    blocks = lambda x: x.unflatten(-1, (3, 4))  # noqa: E731  (B, h, T, m, d)
    beta = hrr.bind(blocks(k), v[..., None, :]).sum(2)  # (B, h, m, d)
    vhat = hrr.bind(hrr.approx_inverse(blocks(q)), beta[:, :, None]).sum(-2)  # (B, h, T, d)
    w = torch.nn.functional.cosine_similarity(v, vhat, dim=-1).softmax(-1)
    torch.testing.assert_close(hrr_attention_reference(q, k, v), w[..., None] * v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("causal,method", FORMS)
@pytest.mark.parametrize("shape", [(3, 3, 17, 7, 2), (2, 2, 33, 16, 4), (3, 3, 1, 4, 3)])
@pytest.mark.parametrize("output", OUTPUTS)
def test_memories_equal_reference(causal, method, shape, output):
    if (method, output) == ("circulant", "recall"):
        method = "auto"  # recall has no circulant form: auto picks Fourier
    *bhtd, m = shape
    q, k, v = memory_qkv(*bhtd, m)
    mask = random_padding(shape[0], shape[2], seed=2)
    tau = None if output == "recall" else TAUS[: shape[1]]  # recall has no scores to scale
    fast = hrr_attention(q, k, v, mask, causal=causal, method=method, score_scale=tau, output=output)
    ref = hrr_attention_reference(q, k, v, mask, causal=causal, score_scale=tau, output=output)
    assert (fast - ref).abs().max().item() < 1e-9
    if shape[2] > 1:  # the blocks are not one β in disguise: summing the keys' blocks changes the output
        one = hrr_attention_reference(q[..., : bhtd[-1]], k.unflatten(-1, (m, -1)).sum(-2), v, mask, causal=causal)
        assert (ref - one).abs().max().item() > 1e-3


def test_one_memory_is_the_paper():
    q, k, v = memory_qkv(2, 3, 12, 8, 1, seed=3)
    mask = random_padding(2, 12, seed=3)
    for causal, method in FORMS:
        got = hrr_attention(q, k, v, mask, causal=causal, method=method)
        torch.testing.assert_close(got, hrr_attention_reference(q, k, v, mask, causal=causal), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("causal,method", FORMS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_memories_gradcheck(causal, method, output):
    if (method, output) == ("circulant", "recall"):
        method = "auto"
    q, k, v = memory_qkv(3, 2, 6, 5, 3, requires_grad=True, seed=4)
    mask = random_padding(3, 6, seed=3)
    if output == "recall":  # no scores: no τ
        assert torch.autograd.gradcheck(
            lambda a, b, c: hrr_attention(a, b, c, mask, causal, method, output=output), (q, k, v)
        )
        return
    tau = TAUS[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c, t: hrr_attention(a, b, c, mask, causal, method, score_scale=t, output=output),
        (q, k, v, tau),
    )


def test_memories_gradients_match_the_reference():
    q, k, v = memory_qkv(2, 3, 12, 8, 3, requires_grad=True, seed=5)
    mask = random_padding(2, 12, seed=5)
    upstream = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    for causal, method in FORMS:
        fast = torch.autograd.grad((hrr_attention(q, k, v, mask, causal, method) * upstream).sum(), (q, k, v))
        ref = torch.autograd.grad((hrr_attention_reference(q, k, v, mask, causal) * upstream).sum(), (q, k, v))
        for f, r in zip(fast, ref):
            assert (f - r).abs().max().item() < 1e-9, (causal, method)


@pytest.mark.parametrize("causal", [False, True])
def test_memories_padding_and_causality(causal):
    q, k, v = memory_qkv(2, 3, 10, 6, 3)
    extra = memory_qkv(2, 3, 7, 6, 3, seed=9)
    padded = [torch.cat([x, e], dim=2) for x, e in zip((q, k, v), extra)]
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[:, 10:] = True
    for output in OUTPUTS:
        out = hrr_attention(*padded, mask, causal=causal, output=output)[:, :, :10]
        torch.testing.assert_close(out, hrr_attention(q, k, v, causal=causal, output=output), rtol=1e-9, atol=1e-12)
    if causal:  # changing the future changes no past output
        changed = [x.clone() for x in (q, k, v)]
        for x in changed:
            x[:, :, 6:] = torch.randn_like(x[:, :, 6:])
        early = hrr_attention(*changed, causal=True)[:, :, :6]
        torch.testing.assert_close(early, hrr_attention(q, k, v, causal=True)[:, :, :6])


@pytest.mark.parametrize("scale", [1e5, 1e20, 1e36])
def test_memories_range_control(scale):
    """float32 inputs far past the plain formula's range: every form finite, and all agree."""
    q, k, v = (x * scale for x in memory_qkv(2, 2, 9, 8, 4, seed=6, dtype=torch.float32))
    outs = []
    for causal, method in ((False, "circulant"), (False, "fourier")):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = hrr_attention(*x, causal=causal, method=method, output="retrieved")
        (out / scale).sum().backward()
        assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in x), method
        outs.append(out / scale)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    causal_out = hrr_attention(q, k, v, causal=True)
    assert torch.isfinite(causal_out).all()


def test_the_layer_routes_keys_and_queries_into_its_memories():
    """q_t^(j) = r_t^q(j) q_t, k_t^(j) = r_t^k(j) k_t, routes a softmax over m per head."""
    torch.manual_seed(0)
    layer = HrrAttention(12, 3, memories=4, projection=True).double()
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    q, k, v = (y.blocks() if isinstance(y, Routed) else y for y in layer.heads(x))
    assert q.shape == k.shape == (2, 3, 9, 16) and v.shape == (2, 3, 9, 4)
    r_q, r_k = layer.routes(x)
    torch.testing.assert_close(r_q.sum(-1), torch.ones(2, 3, 9, dtype=torch.float64))
    assert (r_q - r_k).abs().max() > 1e-3  # separate routes for queries and keys
    plain = HrrAttention(12, 3, projection=True).double()
    plain.qkv_proj.load_state_dict(layer.qkv_proj.state_dict())
    q1, k1, v1 = plain.heads(x)
    torch.testing.assert_close(v, v1)
    torch.testing.assert_close(q.unflatten(-1, (4, 4)), r_q[..., None] * q1[..., None, :])
    torch.testing.assert_close(k.unflatten(-1, (4, 4)), r_k[..., None] * k1[..., None, :])
    for parts in ("q", "kv", "qv", "v"):  # a subset is the same heads
        for got, want in zip(layer.heads(x, parts), [dict(zip("qkv", (q, k, v)))[p] for p in parts]):
            torch.testing.assert_close(as_blocks(got), want)
    out = layer(x, torch.tensor([[False] * 9, [False] * 6 + [True] * 3]))
    out.square().sum().backward()
    assert layer.router.weight.grad.abs().max() > 0  # the routes learn


def test_memories_are_checked():
    with pytest.raises(ValueError, match="memories must be ≥ 1"):
        HrrAttention(8, 2, memories=0)
    with pytest.raises(ValueError, match="memories must be ≥ 1"):
        HrrformerConfig(memories=0)
    with pytest.raises(ValueError, match="memories needs attention='hrr'"):
        HrrformerConfig(memories=2, attention="softmax")
    assert HrrAttention(8, 2).router is None  # the paper's layer has no router


def routed_qkv(b, h, t, d, m, requires_grad=False, seed=0, dtype=torch.float64):
    """Routed q, k (y (B, h, T, d), routes a softmax over m) and v (B, h, T, d)."""
    g = torch.Generator().manual_seed(seed)
    ys = [torch.randn(b, h, t, d, generator=g, dtype=dtype) for _ in range(3)]
    rs = [torch.randn(b, h, t, m, generator=g, dtype=dtype).mul(3).softmax(-1) for _ in range(2)]
    for x in ys + rs:
        x.requires_grad_(requires_grad)
    return ys, rs


@pytest.mark.parametrize("causal,method", FORMS)
@pytest.mark.parametrize("t", [1, 17, ROUTED_BLOCK, 2 * ROUTED_BLOCK + 9])
@pytest.mark.parametrize("output", OUTPUTS)
def test_routed_memories_equal_their_blocks_and_the_reference(causal, method, t, output):
    """Routed q, k (one vector and its routes) are their blocks r(j)·y: the same numbers as the
    blocks form and the plain reference, causal over several blocks of the routed prefix sum too."""
    if (method, output) == ("circulant", "recall"):
        method = "auto"
    (yq, yk, v), (rq, rk) = routed_qkv(2, 2, t, 6, 5, seed=t)
    q, k = Routed(yq, rq), Routed(yk, rk)
    mask = random_padding(2, t, seed=3)
    got = hrr_attention(q, k, v, mask, causal=causal, method=method, output=output)
    blocks = hrr_attention(q.blocks(), k.blocks(), v, mask, causal=causal, method=method, output=output)
    ref = hrr_attention_reference(q.blocks(), k.blocks(), v, mask, causal=causal, output=output)
    assert (got - ref).abs().max().item() < 1e-9
    assert (got - blocks).abs().max().item() < 1e-9


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("output", ["retrieved", "recall"])
def test_routed_memories_gradcheck(causal, output):
    """Gradients of y and of the routes, over two blocks of the causal prefix sum (block of 4)."""
    (yq, yk, v), (rq, rk) = routed_qkv(2, 2, 9, 4, 3, requires_grad=True, seed=4)
    mask = random_padding(2, 9, seed=3)

    def run(a, b, c, r1, r2):
        return hrr_attention(Routed(a, r1), Routed(b, r2), c, mask, causal, "fourier", output=output)

    assert torch.autograd.gradcheck(run, (yq, yk, v, rq, rk))


def test_the_routed_prefix_sum_is_the_masked_double_sum():
    """Σ_{s≤t} (rq_t · rk_s) p_s, with blocks of 4 over 11 positions, against the double sum."""
    from hrrformer.ops.hrr_attention.routed import routed_prefix

    g = torch.Generator().manual_seed(0)
    rq, rk = (torch.rand(2, 3, 11, 5, generator=g, dtype=torch.float64) for _ in range(2))
    p = torch.randn(2, 3, 11, 7, generator=g, dtype=torch.complex128)
    weights = (rq @ rk.transpose(-1, -2)).tril()  # (B, h, T, T)
    want = torch.einsum("bhts,bhsf->bhtf", weights.to(p.dtype), p)
    for block in (1, 4, 11, 64):
        torch.testing.assert_close(routed_prefix(rq, rk, p, block=block), want, rtol=1e-12, atol=1e-12)


def test_routed_memories_padding_and_causality():
    (yq, yk, v), (rq, rk) = routed_qkv(2, 3, 70, 6, 4)
    (eq, ek, ev), (erq, erk) = routed_qkv(2, 3, 7, 6, 4, seed=9)
    mask = torch.zeros(2, 77, dtype=torch.bool)
    mask[:, 70:] = True
    cat = lambda a, b: torch.cat([a, b], dim=2)  # noqa: E731
    padded = (Routed(cat(yq, eq), cat(rq, erq)), Routed(cat(yk, ek), cat(rk, erk)), cat(v, ev))
    for causal in (False, True):
        out = hrr_attention(*padded, mask, causal=causal, output="recall")[:, :, :70]
        want = hrr_attention(Routed(yq, rq), Routed(yk, rk), v, causal=causal, output="recall")
        torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-12)
    changed = [x.clone() for x in (yq, yk, v, rq, rk)]
    for x in changed:
        x[:, :, 66:] = torch.rand_like(x[:, :, 66:])
    early = hrr_attention(Routed(changed[0], changed[3]), Routed(changed[1], changed[4]), changed[2], causal=True)
    torch.testing.assert_close(
        early[:, :, :66], hrr_attention(Routed(yq, rq), Routed(yk, rk), v, causal=True)[:, :, :66]
    )


def test_routed_memories_range_control():
    (yq, yk, v), (rq, rk) = routed_qkv(2, 2, 9, 8, 4, seed=6, dtype=torch.float32)
    for scale in (1e20, 1e36):
        x = [t.clone().mul(scale).requires_grad_() for t in (yq, yk, v)]
        out = hrr_attention(Routed(x[0], rq), Routed(x[1], rk), x[2], causal=True, output="retrieved")
        (out / scale).sum().backward()
        assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in x)


def test_routed_inputs_are_checked():
    (yq, yk, v), (rq, rk) = routed_qkv(1, 2, 5, 4, 3)
    with pytest.raises(ValueError, match="both routed"):
        hrr_attention(Routed(yq, rq), yk, v)
    with pytest.raises(ValueError, match="routes must be float"):
        hrr_attention(Routed(yq, rq[:, :, :4]), Routed(yk, rk), v)
    with pytest.raises(ValueError, match="routes of one shape"):
        hrr_attention(Routed(yq, rq), Routed(yk, rk[..., :2]), v)


def test_key_routing_routes_a_query_and_its_own_key_alike():
    """routing="key": r = softmax(ŷ R_h) of the head itself, so equal q and k route alike; the
    weight r^q_t · r^k_s is high for the same vector and low for others (nearly one-hot at first)."""
    torch.manual_seed(0)
    layer = HrrAttention(32, 2, memories=16, routing="key", projection=True, shared_qk=True).double()
    assert layer.router is None and layer.key_router.shape == (2, 16, 16)
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    q, k, _ = layer.heads(x)
    torch.testing.assert_close(q.r, k.r)  # W_q = W_k and no convolution: the same vectors, the same routes
    torch.testing.assert_close(q.r, layer.key_routes(q.y))
    own = (q.r * k.r).sum(-1)  # (B, h, T)
    others = torch.einsum("bhtm,bhsm->bhts", q.r, k.r)
    off_diagonal = others.masked_select(~torch.eye(40, dtype=torch.bool))
    assert own.mean() > 0.6 and off_diagonal.mean() < 0.15
    layer(x).square().sum().backward()
    assert layer.key_router.grad.abs().max() > 0  # the routes learn


def test_key_routing_is_checked():
    with pytest.raises(ValueError, match="routing must be one of"):
        HrrAttention(8, 2, memories=2, routing="hash")
    with pytest.raises(ValueError, match="routing='key' routes several memories"):
        HrrAttention(8, 2, routing="key")
    with pytest.raises(ValueError, match="memory_routing needs attention='hrr'"):
        HrrformerConfig(memory_routing="key", attention="softmax")
    with pytest.raises(ValueError, match="memory_routing='key' needs memories > 1"):
        HrrformerConfig(memory_routing="key")
