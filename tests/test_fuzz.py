"""Fuzzing and numerical stress of the HRR attention layer.

* Property-based (hypothesis): random batch, heads, length (1–40), head size (1–9), padding
  (including fully padded rows), dtype, causal or not, and method give finite outputs equal to
  :func:`hrr_attention_reference` (computed in float64 on the same inputs) to a tolerance set by
  the dtype, and finite gradients that match the reference's in float64.
* Stress: float32 inputs scaled by 1e-30 … 1e36, constant and zero vectors, and mixed magnitudes
  give finite outputs and gradients, with the behaviour stated in ``hrr_attention``'s docstring
  and docs/RELIABILITY.md: large scales change nothing but the output's own scale (v's), tiny
  ones score 0 (uniform weights), constants score 1 (uniform weights), zeros give zeros.

``HRRFORMER_SLOW=1`` runs many more, non-derandomized examples.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hrrformer import HrrAttention
from hrrformer.attention import hrr_attention, hrr_attention_reference, hrr_attention_weights

SLOW = os.environ.get("HRRFORMER_SLOW") == "1"
FUZZ = settings(
    max_examples=600 if SLOW else 60,
    deadline=None,
    derandomize=not SLOW,  # CI: the same examples every run; the slow variant explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: Allowed error of the output against the float64 reference, relative to max |v|.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-5, torch.bfloat16: 2e-2}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@st.composite
def cases(draw) -> dict:
    b, h = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    t, d = draw(st.integers(1, 40)), draw(st.integers(1, 9))
    causal = draw(st.booleans())
    method = draw(st.sampled_from(["fourier", "auto"] if causal else ["auto", "circulant", "fourier"]))
    rows = draw(st.lists(st.sampled_from(["none", "all", "prefix", "suffix", "random"]), min_size=b, max_size=b))
    return {
        "shape": (b, h, t, d),
        "dtype": draw(st.sampled_from(list(DTYPES))),
        "causal": causal,
        "method": method,
        "mask": draw(st.sampled_from([None, rows])),
        "scales": [10.0 ** draw(st.integers(-2, 2)) for _ in range(3)],
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def make_inputs(case: dict) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    b, _, t, _ = case["shape"]
    g = torch.Generator().manual_seed(case["seed"])
    dtype = DTYPES[case["dtype"]]
    qkv = [(torch.randn(*case["shape"], generator=g, dtype=torch.float64) * s).to(dtype) for s in case["scales"]]
    if case["mask"] is None:
        return qkv, None
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, kind in enumerate(case["mask"]):
        cut = int(torch.randint(0, t + 1, (1,), generator=g))
        if kind == "all":
            mask[i] = True
        elif kind == "prefix":  # left padding
            mask[i, :cut] = True
        elif kind == "suffix":  # right padding
            mask[i, cut:] = True
        elif kind == "random":
            mask[i] = torch.rand(t, generator=g) < 0.4
    return qkv, mask


EDGE_CASES = [
    {"shape": (1, 1, 1, 1), "dtype": "float32", "causal": False, "method": "auto", "mask": None},
    {"shape": (2, 1, 1, 1), "dtype": "float64", "causal": True, "method": "fourier", "mask": ["all", "none"]},
    {"shape": (3, 2, 40, 9), "dtype": "bfloat16", "causal": False, "method": "circulant", "mask": ["all"] * 3},
    {"shape": (2, 3, 17, 1), "dtype": "float32", "causal": True, "method": "auto", "mask": ["prefix", "suffix"]},
    {"shape": (1, 2, 5, 8), "dtype": "float64", "causal": False, "method": "fourier", "mask": ["random"]},
]


def _with_edges(test):
    for edge in EDGE_CASES:
        test = example({**edge, "scales": [1.0, 1.0, 1.0], "seed": 7})(test)
    return test


@FUZZ
@given(cases())
@_with_edges
def test_fuzz_output_is_finite_and_matches_the_reference(case):
    (q, k, v), mask = make_inputs(case)
    causal, method = case["causal"], case["method"]
    out = hrr_attention(q, k, v, mask, causal=causal, method=method)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    ref = hrr_attention_reference(q.double(), k.double(), v.double(), mask, causal=causal)
    scale = float(v.double().abs().max()) or 1.0
    error = float((out.double() - ref).abs().max()) / scale
    assert error <= TOLERANCE[q.dtype], (error, case)
    if mask is not None:  # fully padded rows are exactly zero
        assert torch.all(out[mask.all(-1)] == 0)


@FUZZ
@given(cases().filter(lambda c: c["dtype"] != "bfloat16"))
@_with_edges
def test_fuzz_gradients_are_finite_and_match_the_reference(case):
    if case["dtype"] == "bfloat16":
        case = {**case, "dtype": "float32"}
    (q, k, v), mask = make_inputs(case)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(case["seed"] + 1), dtype=q.dtype)
    out = hrr_attention(q, k, v, mask, causal=case["causal"], method=case["method"])
    grads = torch.autograd.grad((out * upstream).sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads), case
    if q.dtype == torch.float64:
        ref = hrr_attention_reference(q, k, v, mask, causal=case["causal"])
        ref_grads = torch.autograd.grad((ref * upstream).sum(), (q, k, v))
        for g, r in zip(grads, ref_grads):
            assert float((g - r).abs().max()) <= 1e-7 * (1 + float(r.abs().max())), case


# ----------------------------------------------------------------------------- numerical stress
def _base(seed: int = 0, shape=(2, 2, 7, 8)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(3)]


MASK = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
METHODS = [("circulant", False), ("fourier", False), ("fourier", True)]


def _run(q, k, v, method, causal, mask=MASK):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = hrr_attention(q, k, v, mask, causal=causal, method=method)
    upstream = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    grads = torch.autograd.grad((out * upstream).sum(), (q, k, v))
    return out.detach(), grads


def _uniform_weights(t: int, mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, T): the weights of scores that are all equal (over real positions, prefix if causal)."""
    keep = (~mask).double()
    counts = keep.cumsum(-1) if causal else keep.sum(-1, keepdim=True).expand(-1, t)
    return (keep / counts.clamp(min=1))[:, None, :]


@pytest.mark.parametrize("method,causal", METHODS)
@pytest.mark.parametrize("scale", [1e5, 1e10, 1e20, 1e30, 1e36])
def test_huge_float32_inputs_change_only_the_output_scale(method, causal, scale):
    q, k, v = _base()
    out1, _ = _run(q, k, v, method, causal)
    out, grads = _run(q * scale, k * scale, v * scale, method, causal)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    # The scores are scale-invariant: the weights are those at scale 1, the output is scaled by v's.
    torch.testing.assert_close(out.double() / scale, out1.double(), rtol=1e-4, atol=1e-5)
    reference = hrr_attention_reference(q.double() * scale, k.double() * scale, v.double() * scale, MASK, causal)
    assert float((out.double() - reference).abs().max() / reference.abs().max()) < 1e-5


@pytest.mark.parametrize("method,causal", METHODS)
def test_each_of_q_k_v_may_be_huge_alone(method, causal):
    base = _base(1)
    for i in range(3):
        inputs = [x * (1e30 if j == i else 1.0) for j, x in enumerate(base)]
        out, grads = _run(*inputs, method, causal)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads), i
        reference = hrr_attention_reference(*(x.double() for x in inputs), MASK, causal)
        assert float((out.double() - reference).abs().max() / reference.abs().max()) < 1e-5, i


@pytest.mark.parametrize("method,causal", METHODS)
@pytest.mark.parametrize("scale", [1e-30, 1e-12])
def test_tiny_float32_inputs_score_zero_so_weights_are_uniform(method, causal, scale):
    q, k, v = (x * scale for x in _base())
    out, grads = _run(q, k, v, method, causal)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    expected = _uniform_weights(7, MASK, causal)[..., None] * v.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("method,causal", METHODS)
@pytest.mark.parametrize("value", [3.0, -1e30, 1e15])
def test_constant_vectors_score_one_so_weights_are_uniform(method, causal, value):
    q = k = v = torch.full((2, 2, 7, 8), value)
    out, grads = _run(q, k, v, method, causal)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    weights = hrr_attention_weights(q, k, v, MASK, causal)
    expected = _uniform_weights(7, MASK, causal).expand_as(weights).float()
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method,causal", METHODS)
def test_zero_vectors_give_zero_output_and_finite_gradients(method, causal):
    q, k, v = _base(2)
    for zeroed in ([0, 1, 2], [2], [0, 1]):
        inputs = [torch.zeros_like(x) if i in zeroed else x for i, x in enumerate((q, k, v))]
        out, grads = _run(*inputs, method, causal)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads), zeroed
        if 2 in zeroed:
            assert torch.equal(out, torch.zeros_like(out))
        else:  # q or k zero: β or v̂ is 0, every score is 0, the weights are uniform
            expected = _uniform_weights(7, MASK, causal)[..., None] * v.double()
            torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method,causal", METHODS)
def test_one_huge_position_among_ordinary_ones(method, causal):
    base = _base(3)
    for outlier, exact in ((1e8, True), (1e30, False)):
        q, k, v = (x.clone() for x in base)
        for x in (q, k, v):
            x[:, :, 3] *= outlier
        out, grads = _run(q, k, v, method, causal)
        assert torch.isfinite(out).all(), outlier
        if exact:  # within the documented range: finite gradients, and every row accurate
            assert all(torch.isfinite(g).all() for g in grads)
            reference = hrr_attention_reference(q.double(), k.double(), v.double(), MASK, causal)
            row_error = (out.double() - reference).abs().amax(-1) / reference.abs().amax(-1).clamp(min=1e-300)
            assert float(row_error.max()) < 1e-5


def test_scaling_is_exact_so_padding_and_the_future_still_change_nothing():
    # The power-of-two factors depend on every position of a head, padding and future included;
    # being exact, they change no bit of the other outputs (no underflow at these magnitudes).
    q, k, v = _base(4, (1, 2, 9, 6))
    out = hrr_attention(q, k, v, causal=True)
    later = [x.clone() for x in (q, k, v)]
    for x in later:
        x[:, :, 6:] *= 1e6  # future positions 1e6 larger: the factors change
    torch.testing.assert_close(hrr_attention(*later, causal=True)[:, :, :6], out[:, :, :6], rtol=0, atol=0)
    q, k, v = (x.double() for x in (q, k, v))
    padded = [torch.cat([x, 1e60 * torch.randn(1, 2, 4, 6, dtype=torch.float64)], dim=2) for x in (q, k, v)]
    mask = torch.tensor([[False] * 9 + [True] * 4])
    torch.testing.assert_close(hrr_attention(*padded, mask)[:, :, :9], hrr_attention(q, k, v), rtol=0, atol=1e-12)


def test_module_with_huge_activations_stays_finite():
    torch.manual_seed(0)
    layer = HrrAttention(16, 2)
    x = (torch.randn(2, 11, 16) * 1e30).requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
