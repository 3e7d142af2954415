"""HRR attention, written once (Hrrformer, Alam et al. 2023).

Per head, with q, k, v of shape (T, d) and m_t = 1 for real tokens, 0 for padding::

    β     = Σ_t m_t (k_t ⊛ v_t)              # one superposition of all key-value pairs (d,)
    v̂_t   = q_t† ⊛ β                         # what query t retrieves                   (T, d)
    a_t   = cos(v_t, v̂_t)                    # in [-1, 1]                               (T,)
    w     = softmax_t(a), padded t → −∞      #                                          (T,)
    out_t = w_t · v_t                        #                                          (T, d)

The recall output (``output="recall"``) skips a_t and w: out_t = m_t √d v̂_t / ‖v̂_t‖_ε, the
direction of what query t unbinds from β, at RMS 1 (Fourier form only).

With ``causal=True``, β_t = Σ_{s≤t} m_s (k_s ⊛ v_s) and w_t = exp(a_t) / Σ_{s≤t} m_s exp(a_s).
With ``pads_in_beta=True`` (the authors' padding) β sums over every position, m_t = 1, while the
softmax still gives padding weight 0.

Positions are coupled only through two sums over time, β and the softmax normaliser (prefix
sums when causal), and these are taken through one interface, :class:`SequenceReduction`: in one
process, chunk by chunk, over a process group, or both. The layout follows
flash-linear-attention's ``fla/ops/<op>/``:

=================  ================================================================
``naive.py``       the plain reference (time domain), which the tests hold the rest to
``circulant.py``   two matrix multiplies per head, hand-derived backward (non-causal)
``fourier.py``     three rffts and Parseval, no inverse FFT, per piece (causal too)
``cosine.py``      the guarded cosine, in time or from spectra
``weights.py``     softmax over the (prefix of the) sequence; real-position counts
``range_control``  exact power-of-two downscaling, so every finite input gives finite output
``reduction.py``   the sums over the sequence: local, chunked, process group
``routed.py``      memories as one vector and its routes: matrix products instead of m spectra
``attend.py``      :func:`hrr_attention`, the entry point
=================  ================================================================
"""

from .attend import attend, hrr_attention, hrr_attention_weights
from .cosine import COSINE_EPS
from .naive import hrr_attention_reference
from .reduction import LOCAL, SequenceReduction
from .routed import Routed
from .validation import Method

__all__ = [
    "COSINE_EPS",
    "LOCAL",
    "Method",
    "Routed",
    "SequenceReduction",
    "attend",
    "hrr_attention",
    "hrr_attention_reference",
    "hrr_attention_weights",
]
