"""hrrformer: linear-time self-attention with Holographic Reduced Representations (PyTorch)."""

from . import hrr
from .attention import HrrAttention, SoftmaxAttention, hrr_attention, softmax_attention
from .model import Hrrformer, HrrformerConfig, HrrformerDualEncoder

__version__ = "0.1.0"

__all__ = [
    "HrrAttention",
    "Hrrformer",
    "HrrformerConfig",
    "HrrformerDualEncoder",
    "SoftmaxAttention",
    "hrr",
    "hrr_attention",
    "softmax_attention",
]
