"""research.launch.launch_local, the multi-process harness: it never hangs on a dead process.
(Its use, every sequence-parallel scenario on 2 and 4 processes: tests/test_parallel.py.)"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from research.launch import free_port, launch_local


def _sum_ranks(rank: int, world_size: int, out_dir: str) -> None:
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"world": world_size, "sum": total.item()}))


def _die_in_a_collective(rank: int, world_size: int) -> None:
    if rank == 1:
        os._exit(3)
    dist.all_reduce(torch.ones(1))  # rank 1 never joins
    time.sleep(60)


def test_every_rank_runs_in_one_group(tmp_path):
    launch_local(_sum_ranks, 3, (str(tmp_path),), timeout_s=120, collective_timeout_s=30)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert results == [{"world": 3, "sum": 3.0}] * 3


def test_a_dead_rank_ends_the_job_with_an_error():
    start = time.monotonic()
    with pytest.raises(Exception, match=r"exit|terminated|signal|Connection|closed"):
        launch_local(_die_in_a_collective, 2, timeout_s=60, collective_timeout_s=10)
    assert time.monotonic() - start < 50


def test_free_port_is_a_port():
    assert 0 < free_port() < 65536
