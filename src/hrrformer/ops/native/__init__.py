"""Native CPU kernels for the layer parts (:mod:`hrrformer.parts`), after the fused kernels of
flash-linear-attention (``fla/modules/conv``, ``fla/modules/fused_norm_gate.py``), here in C:

=================  ================================================================
``parts.c``        the short convolution + SiLU and the gated RMSNorm, forward and backward
``loader.py``      builds parts.c with the system compiler at first use, loads it (ctypes)
``kernels.py``     the autograd functions, and when a call can take them
=================  ================================================================

In eager PyTorch each part makes ~8 passes over its tensors (casts, the convolution, SiLU, their
gradients); these kernels make one per direction. ``HRRFORMER_NATIVE=0`` turns them off.
"""

from .kernels import MAX_KERNEL, available_for, conv_silu, gated_rms_norm
from .loader import enabled, library

__all__ = ["MAX_KERNEL", "available_for", "conv_silu", "enabled", "gated_rms_norm", "library"]
