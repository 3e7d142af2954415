"""Run a function in several local processes joined in a ``torch.distributed`` group (gloo by default).

The multi-process harness of the sequence-parallel tests (tests/test_parallel.py) and of
``python -m research.sp_demo``; ``hrrformer train`` itself runs under ``torchrun`` and never needs it.

    from research.launch import launch_local
    launch_local(step, 4, (args, out_dir), timeout_s=3600)   # step(rank, world_size, args, out_dir)
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from hrrformer.distributed import teardown_distributed

__all__ = ["free_port", "launch_local"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_entry(rank, fn, world_size, port, backend, collective_timeout_s, threads, args):
    if threads:
        torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=collective_timeout_s),
    )
    try:
        fn(rank, world_size, *args)
    finally:
        teardown_distributed()


def launch_local(
    fn: Callable[..., None],
    world_size: int,
    args: tuple = (),
    *,
    backend: str = "gloo",
    timeout_s: float = 600.0,
    collective_timeout_s: float = 60.0,
    threads: int | None = 1,
) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes joined in a process group.

    The group (``backend``, default gloo) meets on a free port of 127.0.0.1; ``fn`` must be
    importable (a module-level function). Returns when every process has finished. Never hangs:
    as soon as one process raises or dies, the others are terminated and the error is raised
    here (``torch.multiprocessing.ProcessRaisedException`` / ``ProcessExitedException``); a
    collective that waits on a dead peer fails after ``collective_timeout_s``; and after
    ``timeout_s`` all processes are terminated and TimeoutError is raised. ``threads`` sets
    ``torch.set_num_threads`` in each process (1 by default: ranks share the machine's cores).
    """
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.start_processes(
        _launch_entry,
        args=(fn, world_size, port, backend, collective_timeout_s, threads, tuple(args)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=0.2):
            if time.monotonic() > deadline:
                raise TimeoutError(f"launch_local: {world_size} processes still running after {timeout_s:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        for process in context.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
