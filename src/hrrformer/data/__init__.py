"""Data for every task: loaders of the official file formats behind one small interface.

``load_task(name, path, **options)`` returns a :class:`TaskData` (train/val/test datasets of
token sequences plus vocabulary size, classes and length); each task's module has a ``load``
function with the same options (``max_len``, ``seed``, ``val_fraction``, ``skip_bad``,
``limit``) and a ``decode`` function that shows a sequence to a person.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import binaries, image, imdb_pairs, listops, mqar, pathfinder, retrieval, text
from .base import IGNORE_INDEX, PAD_ID, DataError, PositionDataset, TaskData, TokenDataset, collate, pad_sequences

__all__ = [
    "IGNORE_INDEX",
    "PAD_ID",
    "TASKS",
    "DataError",
    "PositionDataset",
    "TaskData",
    "TokenDataset",
    "collate",
    "load_task",
    "pad_sequences",
]

#: Task name → its loader module (each has ``load(path, **options) -> TaskData`` and ``decode``).
TASKS: dict[str, ModuleType] = {
    "listops": listops,
    "text": text,
    "retrieval": retrieval,
    "imdb-pairs": imdb_pairs,
    "image": image,
    "pathfinder": pathfinder,
    "binaries": binaries,
    "mqar": mqar,
}


def load_task(name: str, path: str | Path, **kwargs) -> TaskData:
    """Load task ``name`` from ``path``; ``kwargs`` go to the task's ``load``."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name].load(path, **kwargs)
