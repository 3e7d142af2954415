"""hrrformer: linear-time self-attention with Holographic Reduced Representations (PyTorch)."""

from . import hrr
from .attention import HrrAttention, NoAttention, SoftmaxAttention, hrr_attention, softmax_attention
from .model import Hrrformer, HrrformerConfig, HrrformerDualEncoder

__version__ = "0.1.0"

__all__ = [
    "HrrAttention",
    "Hrrformer",
    "HrrformerConfig",
    "HrrformerDualEncoder",
    "NoAttention",
    "SoftmaxAttention",
    "hrr",
    "hrr_attention",
    "softmax_attention",
]
