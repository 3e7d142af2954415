"""Where hrrformer keeps what it makes once and reuses: generated data sets, built native kernels."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$HRRFORMER_CACHE``, default ``~/.cache/hrrformer``."""
    return Path(os.environ.get("HRRFORMER_CACHE", Path.home() / ".cache" / "hrrformer"))
