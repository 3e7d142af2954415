"""The authors' fixtures (tests/fixtures/authors/*.npz, made by research/authors_fixtures.py from their JAX code).

Checks that each fixture loads and is self-consistent, and that an independent numpy (float64) rebuild of
each network, written from docs/AUTHORS.md, reproduces the authors' outputs: this is the executable form
of that spec. A few deliberate deviations (exact GELU, no involution in the unbinding, pads excluded from
the pooling, ...) must move the output by more than the 1e-4 tolerance, which shows the fixtures can catch
them. Needs only numpy: no jax, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "authors"
TASKS = ("listops", "text", "image", "pathfinder", "binaries")
TOL = 1e-4
Params = dict[str, np.ndarray]


def load(task: str) -> tuple[Params, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(params without the ``params/`` prefix, tokens, output, pooled, meta) of one fixture."""
    with np.load(FIXTURES / f"{task}.npz") as z:
        params = {k.removeprefix("params/"): z[k] for k in z.files if k.startswith("params/")}
        return params, z["tokens"], z["output"], z["pooled"], json.loads(str(z["meta"]))


# ---------------------------------------------------------------- reference ops (docs/AUTHORS.md) ---


def layer_norm(x: np.ndarray, p: Params, name: str, eps: float = 1e-6) -> np.ndarray:
    """Flax ``nn.LayerNorm(epsilon=1e-6)``: biased variance over the last axis, then scale and bias."""
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p[f"{name}/scale"] + p[f"{name}/bias"]


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """Flax ``nn.gelu`` (``approximate=True`` by default): the tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """Exact GELU (only used to show the fixtures tell it from the tanh form)."""
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def dense(x: np.ndarray, p: Params, name: str) -> np.ndarray:
    """Flax Dense/DenseGeneral: ``x @ kernel (+ bias if present)``; kernel is (in, out)."""
    y = x @ p[f"{name}/kernel"]
    return y + p[f"{name}/bias"] if f"{name}/bias" in p else y


def split(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, T, d) -> (B, h, T, d/h): head j takes features j*d/h ... (j+1)*d/h - 1."""
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def merge(x: np.ndarray) -> np.ndarray:
    """(B, h, T, d/h) -> (B, T, d), the inverse of ``split``."""
    b, h, t, e = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * e)


def bind(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """HRR binding: ``real(ifft(fft(x) * fft(y)))`` over the last axis (circular convolution)."""
    return np.real(np.fft.ifft(np.fft.fft(x, axis=-1) * np.fft.fft(y, axis=-1), axis=-1))


def approx_inverse(y: np.ndarray) -> np.ndarray:
    """HRR involution ``y†[i] = y[-i mod H]``: ``roll(flip(y), 1)``."""
    return np.roll(np.flip(y, axis=-1), 1, axis=-1)


def hrr_attention(
    x: np.ndarray,
    p: Params,
    prefix: str,
    names: tuple[str, str, str, str],
    heads: int,
    mask: np.ndarray | None,
    involution: bool = True,
    mask_beta: bool = False,
) -> np.ndarray:
    """The authors' HRR self-attention, one scalar softmax weight per token and head (over T).

    ``involution=False`` and ``mask_beta=True`` are deviations (unbinding with q itself; pads left out of
    beta), used only to show that the fixtures detect them.
    """
    q, k, v = (split(dense(x, p, f"{prefix}/{n}"), heads) for n in names[:3])
    kv = bind(k, v) * mask if mask_beta and mask is not None else bind(k, v)
    beta = kv.sum(axis=-2, keepdims=True)  # (B, h, 1, H'): every position, pads included
    vp = bind(beta, approx_inverse(q) if involution else q)  # (B, h, T, H')
    cos = (v * vp).sum(-1, keepdims=True) / (
        np.linalg.norm(v, axis=-1, keepdims=True) * np.linalg.norm(vp, axis=-1, keepdims=True)
    )
    if mask is not None:  # (B, 1, T, 1), 1 = real token
        cos = cos + (1.0 - mask) * (-1e9)
    w = np.exp(cos - cos.max(axis=-2, keepdims=True))
    w = w / w.sum(axis=-2, keepdims=True)
    return dense(merge(w * v), p, f"{prefix}/{names[3]}")


def sinusoid(t: int, d: int) -> np.ndarray:
    """``embed.EmbeddingFixed``: pe[:, 0::2] = sin(pos * div), pe[:, 1::2] = cos(pos * div), float32."""
    pe = np.zeros((t, d), dtype=np.float32)
    pos = np.arange(0, t)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(np.log(10000.0) / d))
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis."""
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def n_layers(p: Params, pattern: str) -> int:
    """Number of encoder blocks, from keys containing ``pattern + index + '/'``."""
    return len({k.split(pattern, 1)[1].split("/", 1)[0] for k in p if pattern in k})


# ---------------------------------------------------------------- reference networks ---


def lra_forward(task: str, p: Params, tokens: np.ndarray, heads: int, **dev: Any) -> tuple[np.ndarray, np.ndarray]:
    """The four LRA networks (``<task>/hrrformer_mgpu.py``); returns (log-softmax output, pooled)."""
    gelu: Callable[[np.ndarray], np.ndarray] = dev.get("gelu", gelu_tanh)
    p = {k: v.astype(np.float64) for k, v in p.items()}
    t = tokens.shape[1]
    if task in ("listops", "pathfinder"):  # EmbeddingLearned
        e = "Encoder_0/EmbeddingLearned_0"
        x = p[f"{e}/Embed_0/embedding"][tokens] + p[f"{e}/Embed_1/embedding"][:t]
    else:  # EmbeddingFixed (text, image)
        x = p["Encoder_0/EmbeddingFixed_0/Embed_0/embedding"][tokens] + sinusoid(
            t, p["Encoder_0/EmbeddingFixed_0/Embed_0/embedding"].shape[1]
        )
    if task == "listops":
        x = layer_norm(x, p, "Encoder_0/LayerNorm_0")
    masked = task in ("listops", "text")
    mask = (tokens > 0).astype(np.float64)[:, None, :, None] if masked else None
    names = ("query", "key", "value", "output")
    for i in range(n_layers(p, "Encoder_0/EncoderLayer_")):
        L = f"Encoder_0/EncoderLayer_{i}"
        att = f"{L}/SelfAttention_0"
        attend = lambda h, att=att: hrr_attention(  # noqa: E731
            h, p, att, names, heads, mask, dev.get("involution", True), dev.get("mask_beta", False)
        )
        mlp = lambda h, L=L: dense(gelu(dense(h, p, f"{L}/MLP_0/Dense_0")), p, f"{L}/MLP_0/Dense_1")  # noqa: E731
        if task in ("listops", "pathfinder"):  # x + attn(x); x + MLP(LN(x))
            x = x + attend(x)
            x = x + mlp(layer_norm(x, p, f"{L}/LayerNorm_0"))
        elif task == "text":  # pre-norm
            x = x + attend(layer_norm(x, p, f"{L}/LayerNorm_0"))
            x = x + mlp(layer_norm(x, p, f"{L}/LayerNorm_1"))
        else:  # image: post-norm
            x = layer_norm(x + attend(x), p, f"{L}/LayerNorm_0")
            x = layer_norm(x + mlp(x), p, f"{L}/LayerNorm_1")
    if dev.get("masked_mean") and masked:
        m = (tokens > 0)[..., None]
        pooled = (x * m).sum(1) / m.sum(1)
    else:
        pooled = x.mean(axis=1)  # over all T, pads included
    h = gelu(dense(pooled, p, "Dense_0"))
    return log_softmax(dense(h, p, "Dense_1")), pooled


def binaries_forward(p: Params, tokens: np.ndarray, heads: int = 8, **dev: Any) -> tuple[np.ndarray, np.ndarray]:
    """``malware/hrrformer_mgpu.py`` Network; returns (softmax output, CLS vector)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    b, t = tokens.shape
    x = p["Embedding_0/Embed_0/embedding"][tokens] + p["Embedding_0/Embed_1/embedding"][np.arange(t)]
    cls = np.repeat(p["cls_token"], b, axis=0)  # (B, 1, d), no position added
    x = np.concatenate([cls, x], axis=1)  # CLS is row 0
    mask = np.concatenate([np.ones((b, 1)), (tokens > 0).astype(np.float64)], axis=1)[:, None, :, None]
    names = ("Dense_0", "Dense_1", "Dense_2", "Dense_3")  # q, k, v, o (all with bias)
    for i in range(n_layers(p, "Encoder_")):
        L = f"Encoder_{i}"
        lnx = layer_norm(x, p, f"{L}/LayerNorm_0")
        inv, mb = dev.get("involution", True), dev.get("mask_beta", False)
        x = x + hrr_attention(lnx, p, f"{L}/MHAttention_0", names, heads, mask, inv, mb)
        f = f"{L}/FeedForwardLayer_0"
        x = x + dense(
            np.maximum(dense(layer_norm(x, p, f"{L}/LayerNorm_1"), p, f"{f}/Dense_0"), 0.0), p, f"{f}/Dense_1"
        )
    pooled = x[:, 0]
    z = dense(np.maximum(dense(pooled, p, "Dense_0"), 0.0), p, "Dense_1")
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True), pooled


def forward(
    task: str, p: Params, tokens: np.ndarray, meta: dict[str, Any], **dev: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to the task's reference network."""
    if task == "binaries":
        return binaries_forward(p, tokens, meta["heads"], **dev)
    return lra_forward(task, p, tokens, meta["heads"], **dev)


# ---------------------------------------------------------------- tests ---


@pytest.mark.parametrize("task", TASKS)
def test_fixture_is_small_and_self_consistent(task: str) -> None:
    assert (FIXTURES / f"{task}.npz").stat().st_size < 50_000
    p, tokens, out, pooled, meta = load(task)
    assert meta["task"] == task and len(meta["authors_commit"]) == 40
    assert tokens.dtype == np.int32 and tokens.shape[1] == meta["max_seq_len"]
    assert out.shape == (tokens.shape[0], meta["classes"]) and out.dtype == np.float32
    assert pooled.shape[0] == tokens.shape[0]
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in p.values())
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(pooled))
    assert tokens.min() >= 0 and tokens.max() < meta["vocab_size"]
    if meta["output_kind"] == "log_softmax":
        np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-5)
    else:
        assert meta["output_kind"] == "softmax" and np.all(out >= 0)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    if task in ("listops", "text", "binaries"):
        assert (tokens == 0).any() and (tokens[:, 0] > 0).all()  # some padding, every row has a real token
    else:
        assert (tokens == 0).any() and tokens.max() <= 255  # raw pixels, 0 is a real value


@pytest.mark.parametrize("task", TASKS)
def test_numpy_reference_reproduces_authors(task: str) -> None:
    p, tokens, out, pooled, meta = load(task)
    ref, ref_pooled = forward(task, p, tokens, meta)
    np.testing.assert_allclose(ref_pooled, pooled, atol=TOL, rtol=0)
    np.testing.assert_allclose(ref, out, atol=TOL, rtol=0)


# Deviations each fixture detects at more than twice the 1e-4 tolerance. Exact (erf) GELU moves ListOps by
# 3.8e-4 and Image by 2.2e-4 but Text by only 5.7e-5 and Pathfinder by 4.8e-5, so those two are not listed:
# check the GELU form on its own as well.
DEVIATIONS = [
    ("listops", {"gelu": gelu_erf}),
    ("image", {"gelu": gelu_erf}),
    *[(t, {"involution": False}) for t in TASKS],
    *[(t, {"mask_beta": True}) for t in ("listops", "text", "binaries")],
    *[(t, {"masked_mean": True}) for t in ("listops", "text")],
]


@pytest.mark.parametrize(("task", "dev"), DEVIATIONS, ids=[f"{t}-{next(iter(d))}" for t, d in DEVIATIONS])
def test_fixtures_catch_deviations(task: str, dev: dict[str, Any]) -> None:
    p, tokens, out, _, meta = load(task)
    ref, _ = forward(task, p, tokens, meta, **dev)
    assert np.abs(ref - out).max() > 2 * TOL
