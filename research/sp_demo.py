"""One training step of the malware-preset Hrrformer on one multi-million-byte input, split over processes.

    python -m research.sp_demo                         # 4,194,304 bytes over 4 processes, gloo, 1 thread each
    python -m research.sp_demo --bytes 262144 --procs 2
    torchrun --nproc_per_node 4 -m research.sp_demo    # the same, started by torchrun

(from the repository root; the processes are started by :func:`research.launch.launch_local`).

Model: vocab 257 (bytes + 1; 0 = padding), dim 256, 8 heads (head size 32), 1 layer, MLP 512,
CLS pooling, dropout 0.1, 2 classes: the paper's malware model. Each process holds T/G bytes of
the input (hrrformer.parallel.shard_sequence), the HRR attention sums β and the softmax
normaliser over the processes (hrrformer.hrr_attention with group=...), the CLS vector is broadcast
from rank 0, and after backward the parameter gradients are all-reduced
(hrrformer.parallel.reduce_sequence_parallel_gradients) before one Adam step.

Positions: ``--positions sinusoidal`` (the default here) needs no table. ``--positions learned``
gives each process only its own rows of the (T + 1) × 256 table (ShardedPositionEmbedding: 1 GiB
per process at T = 4M over 4, plus as much again for its gradient and twice for Adam's state);
the whole table, 4 GiB in float32 per process, is never materialised (the model is built on the
meta device and initialised after sharding).

Prints, and writes as JSON with ``--json``: time of each phase, peak RSS of each process, and
the bytes communicated per layer (formula in hrrformer.parallel's docstring).

Measured (one step, float32, gloo; the step is forward + backward + gradient all-reduce + Adam,
timed between barriers):

    4,194,304 B, 4 procs × 1 thread, the 2-core 23 GiB machine, --chunk-size 32768
        sinusoidal  415.7 s   peak RSS 3.6 GiB/process   (torch 2.13, 2026-11-28; two 1-thread
                                                          training runs shared the 2 cores)
    4,194,304 B, 4 procs × 4 threads, 16-core 128 GiB machine, no chunking (torch 2.11)
        sinusoidal   64.1 s   peak RSS 22.3 GiB/process
        learned      57.4 s   peak RSS 23.3 GiB/process
      524,288 B, 4 procs × 1 thread, the 2-core machine, no chunking   67.6 s   2.5 GiB/process

Communication is not the limit: the attention layer all-reduces 2,112 B per step (β and S
forward, their gradients backward: 2·B·h·(d+1)·4 B), the CLS broadcast 1 KiB each way, and
the gradient all-reduce 2.9 MB (the 725,250 replicated parameters). Memory is: without
chunking autograd keeps about 21 KiB of activations per position in float32 (embeddings,
LayerNorm inputs, q/k/v, the MLP's 512-wide hidden layer, dropout masks), 22 GiB per process
at 1M positions per process. Sequence chunking (hrrformer.chunked, ``--chunk-size``) runs each
process's part in pieces (three checkpointed passes: β, then the softmax normaliser, then the
rest of the block), and the last layer under CLS pooling computes only the CLS output, which
brings a process down to 3.6 GiB at 1M positions: the 4M-byte step fits the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hrrformer.distributed import teardown_distributed
from hrrformer.model import Hrrformer, HrrformerConfig, init_weights
from hrrformer.parallel import (
    ShardedPositionEmbedding,
    communicated_bytes,
    enable_sequence_parallel,
    reduce_sequence_parallel_gradients,
    shard_position_embedding,
    shard_sequence,
)
from research.launch import launch_local


def build_model(config: HrrformerConfig, group, local_length: int) -> Hrrformer:
    if config.pos_embedding != "learned":
        return enable_sequence_parallel(Hrrformer(config), group)
    with torch.device("meta"):  # never materialise the whole (T + 1) × dim position table
        model = Hrrformer(config)
    shard_position_embedding(model, group, local_length)
    model.to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters") and not isinstance(module, ShardedPositionEmbedding):
            module.reset_parameters()
    init_weights(model)
    with torch.no_grad():  # replicated parameters: rank 0's values everywhere
        for module in model.modules():
            if not isinstance(module, ShardedPositionEmbedding):
                for p in module.parameters(recurse=False):
                    dist.broadcast(p, src=0, group=group)
    return enable_sequence_parallel(model, group)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def step(rank: int, world_size: int, args: argparse.Namespace, out_dir: str) -> None:
    group = dist.group.WORLD
    torch.manual_seed(0)
    n = args.bytes
    g = torch.Generator().manual_seed(1234)
    data = torch.randint(0, 256, (1, n), generator=g, dtype=torch.int16)  # the same bytes on every rank
    tokens, offset, padded = shard_sequence(data, group, pad_value=-1)
    del data
    tokens = (tokens.long() + 1).contiguous()  # bytes → 1 … 256; shard padding (−1) → 0 = pad token
    label = torch.tensor([1])
    config = HrrformerConfig(
        vocab_size=257,
        max_len=n,
        dim=256,
        heads=8,
        layers=1,
        mlp_dim=512,
        pooling="cls",
        pos_embedding=args.positions,
        dropout=0.1,
        num_classes=2,
        chunk_size=args.chunk_size or None,
    )
    model = build_model(config, group, tokens.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rss_before = peak_rss_mib()
    times = {}
    dist.barrier()
    t0 = time.perf_counter()
    logits = model(tokens)
    loss = F.cross_entropy(logits, label)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    reduce_sequence_parallel_gradients(model, group)
    t3 = time.perf_counter()
    optimizer.step()
    t4 = time.perf_counter()
    dist.barrier()
    t5 = time.perf_counter()
    times = {"forward": t1 - t0, "backward": t2 - t1, "grad_all_reduce": t3 - t2, "adam": t4 - t3, "step": t5 - t0}
    grad_norm = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters() if p.grad is not None)).item()
    result = {
        "rank": rank,
        "tokens_local": tokens.shape[1],
        "offset": offset,
        "padded_length": padded,
        "loss": loss.item(),
        "logits": logits.tolist(),
        "times_s": times,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_step_mib": rss_before,
        "grad_norm_local": grad_norm,
        "threads": torch.get_num_threads(),
        "replicated_parameters": sum(
            p.numel()
            for m in model.modules()
            if not isinstance(m, ShardedPositionEmbedding)
            for p in m.parameters(recurse=False)
        ),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def summarise(args: argparse.Namespace, results: list[dict], wall_s: float) -> dict:
    g = len(results)
    n_params_replicated = results[0]["replicated_parameters"]
    per_layer = communicated_bytes(1, 8, 32, group=g, bytes_per_element=4)
    summary = {
        "bytes": args.bytes,
        "processes": g,
        "positions": args.positions,
        "chunk_size": args.chunk_size,
        "threads_per_process": results[0]["threads"],
        "loss": results[0]["loss"],
        "logits_equal_on_all_ranks": all(r["logits"] == results[0]["logits"] for r in results),
        "step_s": max(r["times_s"]["step"] for r in results),
        "phases_s_rank0": results[0]["times_s"],
        "peak_rss_mib": [round(r["peak_rss_mib"]) for r in results],
        "wall_s_including_start": wall_s,
        "attention_bytes_per_layer": per_layer,
        "formula": "per layer and step: all-reduce payload 2·B·h·(d+1)·4 B (β: B·h·d and S: B·h forward, "
        "their gradients backward) = 2·1·8·33·4 = 2,112 B; a ring sends 2(G−1)/G of each",
        "per_step_besides_layers_bytes": {
            "cls_broadcast_and_reduce": 2 * 256 * 4,
            "input_check_all_gather": 4 * 8,
            "gradient_all_reduce_payload": n_params_replicated * 4,
        },
    }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=4_194_304, help="input length in bytes (default 4,194,304)")
    parser.add_argument("--procs", type=int, default=4, help="processes when self-launched (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--positions", choices=("sinusoidal", "learned"), default="sinusoidal")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=65_536,
        help="sequence chunking inside each process (hrrformer.chunked; default 65,536; 0 = off)",
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)

    out_dir = tempfile.mkdtemp(prefix="sp_demo_")
    start = time.perf_counter()
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:  # started by torchrun
        torch.set_num_threads(args.threads)
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        out_dir = os.environ.get("SP_DEMO_OUT", "/tmp/sp_demo_torchrun")
        os.makedirs(out_dir, exist_ok=True)
        step(rank, world_size, args, out_dir)
        dist.barrier()
        teardown_distributed()
        if rank:
            return
        world = world_size
    else:
        launch_local(step, args.procs, (args, out_dir), timeout_s=3600, collective_timeout_s=1800, threads=args.threads)
        world = args.procs
    results = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]
    summary = summarise(args, results, time.perf_counter() - start)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "ranks": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
