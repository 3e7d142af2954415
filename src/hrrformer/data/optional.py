"""Optional dependencies, imported only where needed, with an error that names the extra to install.

The layer and the model need neither: ``pip install hrrformer`` installs torch, numpy, safetensors
and tqdm. Pillow reads and writes images (image folders, Pathfinder, ``hrrformer explain`` on
images): ``pip install 'hrrformer[image]'``; matplotlib draws plots (``hrrformer plot``,
``explain`` heatmaps, ``bench`` plots): ``pip install 'hrrformer[plot]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "pil_image", "pyplot", "require"]

#: Top-level module → (its distribution, the hrrformer extra that installs it, what needs it).
EXTRAS = {
    "PIL": ("pillow", "image", "reading and writing images"),
    "matplotlib": ("matplotlib", "plot", "drawing plots"),
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str) -> ModuleType:
    """Import ``module`` (of a top-level package in :data:`EXTRAS`), or raise :class:`MissingExtra`."""
    top = module.partition(".")[0]
    package, extra, purpose = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or top).partition(".")[0] != top:
            raise  # the package is there, but something it needs is not
        raise MissingExtra(
            f"{purpose} needs {package}, an optional dependency: pip install 'hrrformer[{extra}]'", name=top
        ) from e


def pil_image() -> ModuleType:
    """``PIL.Image`` (Pillow), or :class:`MissingExtra` naming ``hrrformer[image]``."""
    return require("PIL.Image")


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend, or :class:`MissingExtra` naming ``hrrformer[plot]``."""
    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot")
