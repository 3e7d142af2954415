"""A task's data as every command reads it: from a path, or generated once into the cache.

:func:`load_task_data` is what ``hrrformer train``, ``eval``, ``predict`` and ``explain`` call:
the task's loader (:func:`hrrformer.data.load_task`) on ``path``, or, for a generated task
(ListOps, Pathfinder, Path-X, MQAR) without a path, on its preset's standard data set, generated into
``$HRRFORMER_CACHE`` (default ``~/.cache/hrrformer``) the first time and reused afterwards
(:func:`generated_data_dir`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..cache import default_cache_dir
from ..distributed import DistInfo, barrier
from ..tasks import Preset, get_preset, get_task
from . import load_task
from .base import TaskData

__all__ = ["LoadedData", "default_cache_dir", "generated_data_dir", "load_task_data"]


class LoadedData(NamedTuple):
    """A task's data and the path it was read from (the cache folder for generated data)."""

    data: TaskData
    path: str


def generated_data_dir(task: str, preset: Preset, seed: int, progress: bool = True) -> Path:
    """Generate the task's standard data set into the cache once (atomically), and return its path.

    ``progress=False`` turns the generator's progress bar off (``--no-progress``: logs stay clean).
    """
    spec = get_task(task)
    options = {**dict(spec.generator_options), **dict(preset.generator_options)}
    n_train, n_val, n_test = preset.generate
    make: Callable[[Path], None]
    if spec.generator == "listops":
        from .listops_gen import generate_listops

        lengths = (options.get("min_len", 500), options.get("max_len", 2000))
        suffix = "" if lengths == (500, 2000) else f"-len{lengths[0]}-{lengths[1]}"  # LRA's lengths: no suffix
        target = default_cache_dir() / f"listops-{n_train}-{n_val}-{n_test}-seed{seed}{suffix}"
        make = lambda out: generate_listops(  # noqa: E731
            out,
            train=n_train,
            val=n_val,
            test=n_test,
            seed=seed,
            min_len=lengths[0],
            max_len=lengths[1],
            progress=progress,
        )
    elif spec.generator == "mqar":
        from .mqar import generate_mqar

        v, t, k = options["vocab_size"], options["seq_len"], options["kv_pairs"]
        target = default_cache_dir() / f"mqar-v{v}-t{t}-kv{k}-{n_train}-{n_val}-{n_test}-seed{seed}"
        make = lambda out: generate_mqar(  # noqa: E731
            out, train=n_train, val=n_val, test=n_test, vocab_size=v, seq_len=t, kv_pairs=k, seed=seed
        )
    else:
        from .pathfinder_gen import generate_pathfinder

        size = options.get("size", 32)
        target = default_cache_dir() / f"pathfinder{size}-{n_train}-seed{seed}"
        make = lambda out: generate_pathfinder(out, size=size, n=n_train, seed=seed, progress=progress)  # noqa: E731
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"generating {task} data into {target} (once; reused afterwards)", file=sys.stderr)
    make(tmp)
    (tmp / ".complete").write_text("")
    if target.exists() and not (target / ".complete").exists():  # an incomplete leftover
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)  # fails if another process's complete copy is there: it may be in use
    except OSError:
        if not (target / ".complete").exists():
            raise
        shutil.rmtree(tmp)
    return target


def load_task_data(
    task: str,
    path: str | None,
    *,
    preset: str,
    max_len: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    info: DistInfo | None = None,
) -> LoadedData:
    """Task ``task``'s data from ``path``, or (``path`` None) its ``preset``'s generated data set.

    Generation happens once, on the main process (``info``; the others wait at a barrier); the
    data set is always generated with seed 0, and ``seed`` picks the held-out splits as the
    loaders do. ``max_len``, ``limit`` and ``skip_bad`` go to the task's loader; skipped bad
    inputs are reported on stderr. ValueError for a task without a generator and no ``path``.
    """
    info = info or DistInfo()
    spec = get_task(task)
    if path is None:
        if spec.generator is None:
            raise ValueError(f"--data is required for task {task!r} (it has no generator)")
        standard = get_preset(task, preset)
        if info.is_main:
            generated_data_dir(task, standard, 0, progress=progress)
        barrier(info)
        path = str(generated_data_dir(task, standard, 0, progress=progress))
    data = load_task(spec.data_task, path, max_len=max_len, seed=seed, limit=limit, skip_bad=skip_bad)
    if data.skipped and info.is_main:
        print(f"skipped bad inputs: {data.skipped}", file=sys.stderr)
    return LoadedData(data, path)
