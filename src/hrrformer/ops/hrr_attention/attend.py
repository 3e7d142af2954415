"""``hrr_attention``: the kernel's one entry point, for one process, a chunk or a process group."""

from __future__ import annotations

import torch

from ... import hrr
from .circulant import CirculantHrrAttention
from .cosine import COSINE_EPS
from .fourier import combine_superpositions, recalled_values, retrieved_values, scores, superpose, unbinding
from .precision import kernel_precision
from .range_control import safe_exponent
from .reduction import LOCAL, SequenceReduction
from .routed import Routed, as_blocks
from .validation import (
    Method,
    Output,
    check_attention_inputs,
    check_method,
    check_on_every_rank,
    check_recall_options,
    memory_count,
)
from .weights import beta_keep, equal_weights, keep_weights, position_counts, softmax_weights

__all__ = ["attend", "hrr_attention", "hrr_attention_weights"]


@kernel_precision
def attend(
    q: torch.Tensor | Routed,
    k: torch.Tensor | Routed,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    causal: bool,
    method: Method,
    reduction: SequenceReduction,
    score_scale: torch.Tensor | None = None,
    output: Output = "value",
    eps: float = COSINE_EPS,
    pads_in_beta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out (B, h, T, d), w (B, h, T) or None) in the compute dtype; q, k (B, h, T, m·d) and v
    already in it, keep (B, 1, T).

    ``method``: circulant (non-causal; default then) or fourier (one piece: this
    process's part). ``score_scale``: τ (h,) or None: w = softmax(τ a). ``output``: "value" (the
    paper: w_t v_t), "retrieved" (w_t ‖v_t‖ v̂_t / ‖v̂_t‖) or "recall" (m_t √d v̂_t / ‖v̂_t‖, Fourier
    form only, whatever ``method``'s "auto" would pick: no scores, no softmax, and w None).
    ``pads_in_beta``: padding enters β (the authors' padding), and is excluded from the softmax only."""
    recall = output == "recall"
    if method == "circulant" or (method == "auto" and not causal and not recall):
        retrieved = output == "retrieved"
        q, k = as_blocks(q), as_blocks(k)
        return CirculantHrrAttention.apply(q, k, v, keep, eps, reduction, score_scale, retrieved, pads_in_beta)
    exponent = safe_exponent(q.dtype, reduction.sequence_length(q.shape[-2]), v.shape[-1], memory_count(q, v))
    keep_b = beta_keep(keep, pads_in_beta)
    part, scale = superpose(k, v, keep_b, exponent)
    [beta], common = combine_superpositions([part], [scale], causal, reduction)
    spectra = unbinding(q, k, v, keep_b, beta, common, causal, exponent, eps)  # once, for both uses
    if recall:
        return recalled_values(spectra, keep), None
    a = scores(spectra)  # (B, h, T)
    [w] = softmax_weights([a], [keep], causal, reduction, score_scale)
    values = v if output == "value" else retrieved_values(spectra)
    return w[..., None] * values, w


def hrr_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    method: Method = "auto",
    group=None,
    *,
    reduction: SequenceReduction | None = None,
    length_scale: bool = False,
    score_scale: torch.Tensor | None = None,
    output: Output = "value",
    pads_in_beta: bool = False,
    return_weights: bool = False,
    check: bool = True,
):
    """HRR attention with the calling convention of ``F.scaled_dot_product_attention``.

    Per (batch, head), m_t = 1 for real tokens, 0 for padding::

        β = Σ_t m_t (k_t ⊛ v_t),  v̂_t = q_t† ⊛ β,  a_t = cos(v_t, v̂_t),  w = softmax_t(a),  out_t = w_t v_t

    Several β per head (memories): q and k may be (B, h, T, m·d), m blocks q_t^(j), k_t^(j) of d
    against v (B, h, T, d). Then β_j = Σ_t m_t (k_t^(j) ⊛ v_t), one superposition per block, and
    v̂_t = Σ_j q_t^(j)† ⊛ β_j; the rest is unchanged, and m = 1 is the formula above. Each β_j holds
    the pairs its key blocks weight: with routing weights r (Σ_j r_t^(j) = 1, the layer's
    ``memories``), a memory sums ~T/m pairs instead of T, so its crosstalk is ~√m smaller.

    Args:
        q, k: (B, h, T, d) or (B, h, T, m·d) (m memories); v: (B, h, T, d); any float dtype (half
            precision is computed in float32).
        key_padding_mask: (B, T) bool, True = padding (PyTorch's meaning). Padding is excluded
            from β and from the softmax, so padding a sequence changes no real output.
        causal: β and the softmax normaliser run over positions ≤ t only.
        method: ``"circulant"`` (matrix form, non-causal only), ``"fourier"`` (Parseval form),
            or ``"auto"``: circulant unless causal.
        group: a ``torch.distributed`` process group over which the sequence is split (each rank
            holds a contiguous part, in rank order): β and the softmax normaliser are summed over
            it, O(h·d) numbers per call. Shorthand for ``reduction=SequenceReduction(group)``.
        reduction: how sums over the sequence are taken (:mod:`.reduction`); default one process.
        length_scale: output n·w_t·v_t, n the number of real positions the softmax runs over
            (n_t = real positions ≤ t when causal); the weights sum to 1, so w_t·v_t ≈ v_t / T.
        score_scale: τ (h,), a per-head scale of the scores: w = softmax_t(τ_h a_t). The paper's
            cosine scores lie in [−1, 1], so its weights are all within e² of uniform; |τ| ≤ 40
            (clamped) lets them focus. None: the paper (τ = 1). Differentiable.
        output: what position t outputs: ``"value"`` (the paper: w_t v_t, v_t times one scalar),
            ``"retrieved"``: w_t ‖v_t‖ v̂_t / ‖v̂_t‖, the direction of what q_t unbinds from β (content
            from the whole sequence) at the length of v_t, or ``"recall"``: √d v̂_t / ‖v̂_t‖_ε, that
            direction at RMS 1 with no score and no softmax (0 at padding; causal: from β_t).
            Recall has no circulant form (``"auto"`` picks Fourier) and refuses ``length_scale``
            and ``score_scale``, which act on weights it does not have.
        pads_in_beta: the authors' padding (their code, commit 8a127d1): β = Σ_t k_t ⊛ v_t over every
            position, pads included; padding is excluded from the softmax only (their −1e9 mask),
            so its weight and output are 0 but it changes every real output through β.
        return_weights: also return w (B, h, T) (no gradient): 0 at padding, rows sum to 1. The
            recall output has no weights: it returns those of equal scores, uniform over the real
            positions (m_t / n, causal m_t / n_t), computed only when asked for.
        check: with a group, first agree on every rank that the inputs are valid (one all-gather).

    Returns:
        (B, h, T, d) in the dtype of q (and w, with ``return_weights``).

    Range: finite for every finite input. Where q, k or v is too large for the dtype, T and d,
    it is divided by a power of two per (batch, head) before scoring (:mod:`.range_control`:
    exact, so the numbers are those of the plain formula wherever it does not overflow, and the
    same in one process, chunked or split over ranks); float32 inputs as large as 1e36 give
    finite outputs and gradients, where the plain formula overflows from about 1e5. Vectors far
    shorter than ε = 1e-6 (e.g. 1e-30) score 0, so their weights are uniform; zero vectors give
    zero output and finite gradients. NaN or infinite inputs give NaN outputs.
    """
    if reduction is None:
        reduction = LOCAL if group is None else SequenceReduction(group)
    if check and reduction.parallel:
        check_on_every_rank(q, k, v, key_padding_mask, causal, method, reduction)
    else:
        check_attention_inputs(q, k, v, key_padding_mask, memories=True)
    check_method(method, causal, output)
    check_recall_options(output, length_scale, score_scale is not None)
    dtype = hrr.compute_dtype(q.dtype)
    keep = keep_weights(key_padding_mask, dtype)
    if score_scale is not None and tuple(score_scale.shape) != (q.shape[1],):
        raise ValueError(f"score_scale must have shape (heads,) = ({q.shape[1]},), got {tuple(score_scale.shape)}")
    out, w = attend(
        q.to(dtype), k.to(dtype), v.to(dtype), keep, causal, method, reduction, score_scale, output,
        pads_in_beta=pads_in_beta,
    )  # fmt: skip
    if length_scale:
        out = out * position_counts([keep], [q.shape[-2]], causal, reduction, out)[0]
    if w is None and return_weights:  # recall: the weights of equal scores, uniform over real positions
        [w] = equal_weights([keep], [out.shape[:-1]], causal, reduction, out)
    out = out.to(q.dtype)
    return (out, w.detach()) if return_weights else out


@torch.no_grad()
def hrr_attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """The softmax weights w (B, h, T) of :func:`hrr_attention` (0 at padding; each row sums to 1
    over real positions without ``causal``) with the paper's scores, which the value and retrieved
    outputs share (the recall output has none). For attention maps; no gradient."""
    return hrr_attention(q, k, v, key_padding_mask, causal, method="fourier", return_weights=True)[1]
