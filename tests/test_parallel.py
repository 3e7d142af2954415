"""Sequence-parallel HRR attention (``hrr_attention(..., group=...)``) and models (hrrformer.parallel)
against one process, on gloo; the processes are started by research.launch.launch_local.

Starting processes is the slow part on a 2-core machine, so each world size (2 and 4) is
launched once per module: every rank runs every scenario, records "ok" or the traceback of each
in a JSON file, and each test reads its scenario's verdicts from all ranks. Every scenario
computes the single-process reference on the whole sequence itself, in float64.
"""

from __future__ import annotations

import copy
import json
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hrrformer import Hrrformer, HrrformerConfig, hrr_attention
from hrrformer.data.base import PositionDataset
from hrrformer.distributed import DistInfo, average_gradients
from hrrformer.forward import batch_loss, batch_totals, evaluate, forward_batch
from hrrformer.model import masked_mean
from hrrformer.ops.hrr_attention import SequenceReduction
from hrrformer.parallel import (
    communicated_bytes,
    enable_sequence_parallel,
    reduce_sequence_parallel_gradients,
    shard_position_embedding,
    shard_sequence,
)
from research.launch import launch_local
from test_amp import BF16_STEP_TOLERANCE

TOL = {"rtol": 1e-9, "atol": 1e-9}


# ----------------------------------------------------------------------------- scenarios (run in every rank)
def _attention_inputs(world_size: int, d: int, with_mask: bool):
    """q, k, v (2, 2, T, d) float64 and a mask whose row 0 is real only on rank 0's chunk."""
    g = torch.Generator().manual_seed(0)
    t_local = 3
    t = t_local * world_size
    q, k, v, grad = (torch.randn(2, 2, t, d, generator=g, dtype=torch.float64) for _ in range(4))
    mask = None
    if with_mask:
        mask = torch.rand(2, t, generator=g) < 0.3
        mask[0, t_local:] = True  # every chunk but rank 0's is all padding in row 0
        mask[0, 0] = mask[1, 0] = False
    return q, k, v, grad, mask, t_local


def _check_attention(
    rank: int, world_size: int, causal: bool, method: str, d: int = 8, memories: int = 1, output: str = "value"
) -> None:
    group = dist.group.WORLD
    for with_mask in (False, True):
        q, k, v, grad, mask, t_local = _attention_inputs(world_size, d * memories, with_mask)
        v, grad = v[..., :d].contiguous(), grad[..., :d].contiguous()  # q, k: m blocks of d
        full = [x.clone().requires_grad_() for x in (q, k, v)]
        ref = hrr_attention(*full, mask, causal=causal, output=output)
        (ref * grad).sum().backward()
        sl = slice(rank * t_local, (rank + 1) * t_local)
        local = [x[:, :, sl].clone().requires_grad_() for x in (q, k, v)]
        local_mask = None if mask is None else mask[:, sl]
        out = hrr_attention(*local, local_mask, causal=causal, method=method, group=group, output=output)
        (out * grad[:, :, sl]).sum().backward()  # Σ over ranks of these losses = the reference loss
        torch.testing.assert_close(out, ref[:, :, sl], **TOL)
        reduction = SequenceReduction(group)
        explicit = hrr_attention(
            *(x.detach() for x in local), local_mask, causal, method, reduction=reduction, output=output
        )
        torch.testing.assert_close(explicit, out.detach(), rtol=0, atol=0)  # group=g is reduction=SequenceReduction(g)
        for name, a, b in zip("qkv", local, full):
            torch.testing.assert_close(a.grad, b.grad[:, :, sl], **TOL, msg=f"grad {name}, mask={with_mask}")


def _check_attention_range(rank: int, world_size: int) -> None:
    """float32 inputs scaled by 1 … 1e12, with padding: range control must act the same way on every
    rank (one common power-of-two scale), so the split sequence gives the one-process numbers."""
    group = dist.group.WORLD
    q, k, v, _, mask, t_local = _attention_inputs(world_size, 16, True)
    sl = slice(rank * t_local, (rank + 1) * t_local)
    for scale in (1.0, 1e4, 1e6, 1e12):
        x = [(t * scale).float() for t in (q, k, v)]
        for causal, method in ((False, "circulant"), (False, "fourier"), (True, "fourier")):
            ref = hrr_attention(*x, mask, causal=causal, method=method)
            assert torch.isfinite(ref).all(), (scale, causal, method)
            local = [t[:, :, sl].clone().requires_grad_() for t in x]
            out = hrr_attention(*local, mask[:, sl], causal=causal, method=method, group=group)
            err = float((out.detach() - ref[:, :, sl]).abs().max() / ref.abs().max())
            assert err < 1e-5, f"scale {scale:g}, causal={causal}, {method}: relative error {err:.3g}"
            out.sum().backward()
            assert all(torch.isfinite(t.grad).all() for t in local), (scale, causal, method)


def _tiny_config(**overrides) -> HrrformerConfig:
    values = dict(vocab_size=20, max_len=40, dim=16, heads=2, layers=2, dropout=0.0)
    values.update(overrides)
    return HrrformerConfig(**values)


def _model_tokens() -> torch.Tensor:
    """(2, 11): row 0 real for 5 tokens then padding, row 1 real throughout (11 divides by neither 2 nor 4)."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 20, (2, 11), generator=g)
    tokens[0, 5:] = 0
    return tokens


def _check_model(
    rank: int, world_size: int, shard_positions: bool = False, chunk_size: int | None = None, **overrides
) -> None:
    group = dist.group.WORLD
    torch.manual_seed(0)
    ref = Hrrformer(_tiny_config(**overrides)).double()
    sp = enable_sequence_parallel(copy.deepcopy(ref), group)
    for block in sp.encoder.blocks:  # sequence chunking inside each rank's part (hrrformer.chunked)
        block.chunk_size = chunk_size
    tokens = _model_tokens()
    local, offset, padded = shard_sequence(tokens, group)
    assert padded % world_size == 0 and padded >= tokens.shape[1] and offset == rank * local.shape[1]
    if shard_positions:
        shard_position_embedding(sp, group, local.shape[1])
    if ref.config.activation_checkpointing:
        ref.train()
        sp.train()
    weights = torch.randn(2, ref.config.num_classes, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits_ref, logits_sp = ref(tokens), sp(local)
    torch.testing.assert_close(logits_sp, logits_ref, **TOL)
    (logits_ref * weights).sum().backward()
    (logits_sp * weights).sum().backward()  # the same loss on every rank
    reduce_sequence_parallel_gradients(sp, group)
    sp_params = dict(sp.named_parameters())
    for name, p in ref.named_parameters():
        q = sp_params[name]
        if shard_positions and name == "encoder.position_embedding.weight":
            table = sp.encoder.position_embedding
            rows = min(table.start + table.length, p.shape[0]) - table.start
            torch.testing.assert_close(q.grad[:rows], p.grad[table.start : table.start + rows], **TOL, msg=name)
        else:
            torch.testing.assert_close(q.grad, p.grad, **TOL, msg=name)


def _check_positions(
    rank: int, world_size: int, first_chunk_only: bool = False, chunk_size: int | None = None, **overrides
) -> None:
    """pooling="none": each rank's logits (B, T_local, C) are the one-process logits of its positions,
    and the trainer's path (forward_batch with labels −100 where nothing is asked, batch_loss,
    batch_totals, average_gradients with replicated_loss=False) gives the one-process mean loss,
    accuracy and gradient; evaluate gives its accuracy, loss and sequence accuracy. ``first_chunk_only``: every label in rank 0's chunk, the others have none."""
    group = dist.group.WORLD
    torch.manual_seed(0)
    ref = Hrrformer(_tiny_config(pooling="none", **overrides)).double()
    sp = enable_sequence_parallel(copy.deepcopy(ref), group)
    for block in sp.encoder.blocks:  # sequence chunking inside each rank's part
        block.chunk_size = chunk_size
    tokens = _model_tokens()
    mask = tokens == 0
    local, offset, _ = shard_sequence(tokens, group)
    full, mine = ref(tokens), sp(local)  # (B, T, C), (B, T_local, C)
    real = ~mask[:, offset : offset + local.shape[1]]  # this rank's real positions (not padding)
    torch.testing.assert_close(mine[:, : real.shape[1]][real], full[:, offset : offset + real.shape[1]][real], **TOL)

    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, ref.config.num_classes, tokens.shape, generator=g)
    labels[(torch.rand(tokens.shape, generator=g) < 0.4) | mask] = -100
    if first_chunk_only:
        labels[:, local.shape[1] :] = -100
    batch = {"tokens": tokens, "mask": mask, "labels": labels}
    info = DistInfo(rank=rank, world_size=world_size, sequence_parallel=world_size, sp_group=group)
    expected, scores = (
        forward_batch(ref, batch, torch.device("cpu")),
        forward_batch(sp, batch, torch.device("cpu"), group),
    )
    assert scores.split and scores.rows == expected.rows == int((labels != -100).sum())
    ref_loss, loss = batch_loss(expected), batch_loss(scores)
    (ref_total, ref_correct), (total, correct) = (
        batch_totals(expected, ref_loss, DistInfo()),
        batch_totals(scores, loss, info),
    )
    assert total == pytest.approx(ref_total, rel=1e-6) and correct == ref_correct
    lengths = (~mask).sum(1).tolist()
    dataset = PositionDataset(
        [tokens[i, :n] for i, n in enumerate(lengths)], [labels[i, :n] for i, n in enumerate(lengths)]
    )
    cpu, classes = torch.device("cpu"), ref.config.num_classes
    expected_eval = evaluate(ref, dataset, batch_size=2, device=cpu, num_classes=classes)
    got = evaluate(sp, dataset, batch_size=2, device=cpu, num_classes=classes, info=info)
    assert got == pytest.approx(expected_eval, rel=1e-6) and got["positions"] == scores.rows  # each counted once
    ref_loss.backward()
    loss.backward()
    average_gradients(sp, info, replicated_loss=False)
    sp_params = dict(sp.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(sp_params[name].grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def _group_of_one(rank: int, world_size: int) -> None:
    groups = [dist.new_group([r]) for r in range(world_size)]  # every rank makes every group
    mine = groups[rank]
    q, k, v, _, mask, _ = _attention_inputs(world_size, 8, True)
    for causal in (False, True):
        torch.testing.assert_close(
            hrr_attention(q, k, v, mask, causal=causal, group=mine), hrr_attention(q, k, v, mask, causal=causal)
        )
    torch.manual_seed(0)
    ref = Hrrformer(_tiny_config(pooling="cls")).double()
    sp = enable_sequence_parallel(copy.deepcopy(ref), mine)
    tokens = _model_tokens()
    local, offset, padded = shard_sequence(tokens, mine)
    assert (offset, padded) == (0, tokens.shape[1]) and torch.equal(local, tokens)
    ref(tokens).sum().backward()
    sp(local).sum().backward()
    reduce_sequence_parallel_gradients(sp, mine)
    for (name, p), q_ in zip(ref.named_parameters(), sp.parameters()):
        torch.testing.assert_close(q_.grad, p.grad, rtol=0, atol=0, msg=name)


def _bad_input(rank: int, world_size: int) -> None:
    group = dist.group.WORLD
    model = enable_sequence_parallel(Hrrformer(_tiny_config()).double(), group)
    tokens = torch.randint(1, 20, (2, 6 if rank else 5))  # rank 0's chunk is one shorter
    with pytest.raises(ValueError, match="chunks differ in shape"):
        model(tokens)
    tokens = torch.randint(1, 20, (2, 6))
    if rank == world_size - 1:
        tokens[0, 0] = 99  # out of the vocabulary on one rank only: every rank must raise
    with pytest.raises(ValueError, match="vocab_size=20" if rank == world_size - 1 else "rejected their tokens"):
        model(tokens)
    too_long = torch.randint(1, 20, (2, 41 // world_size + 1))  # 40 = max_len real tokens would fit
    with pytest.raises(ValueError, match="max_len=40"):
        model(too_long)
    q = torch.randn(2 if rank else 3, 2, 4, 8)  # batch sizes disagree
    with pytest.raises(ValueError, match="disagree"):
        hrr_attention(q, q, q, group=group)
    softmax = Hrrformer(_tiny_config(attention="softmax"))
    with pytest.raises(ValueError, match="ring attention"):
        enable_sequence_parallel(softmax, group)
    model(torch.randint(1, 20, (2, 6)))  # the group still works after the errors


def _mean_pool(rank: int, world_size: int) -> None:
    group = dist.group.WORLD
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4 * world_size, 5, generator=g, dtype=torch.float64, requires_grad=True)
    keep = torch.rand(2, 4 * world_size, generator=g) < 0.6
    keep[0] = False  # a row with nothing real gives zeros
    ref = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
    sl = slice(4 * rank, 4 * rank + 4)
    local = x.detach()[:, sl].clone().requires_grad_()
    pooled = masked_mean(local, keep[:, sl], SequenceReduction(group))
    torch.testing.assert_close(pooled, ref, **TOL)
    weights = torch.randn(2, 5, generator=g, dtype=torch.float64)
    (ref * weights).sum().backward()
    (pooled * weights).sum().backward()  # every rank the same loss: J = G · loss
    torch.testing.assert_close(local.grad / world_size, x.grad[:, sl], **TOL)


def _halo(rank: int, world_size: int, width: int = 3) -> None:
    """SequenceReduction.halo over ranks whose parts are shorter than the width (one is empty),
    each part split into pieces of one position: the W positions before each piece of the whole
    sequence, zeros before its start, and their gradients back to the pieces they came from."""
    group = dist.group.WORLD
    lengths = [1, 0, 2, 3][:world_size]
    start, total = sum(lengths[:rank]), sum(lengths)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, total, 5, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(total, 2, width, 5, generator=g, dtype=torch.float64)  # one per piece (position)
    before = torch.cat([x.new_zeros(2, width, 5), x], dim=1)  # the plain halo: slices of it
    reference = sum((before[:, s : s + width] * upstream[s]).sum() for s in range(total))
    reference.backward()
    local = x.detach()[:, start : start + lengths[rank]].clone().requires_grad_()
    pieces = list(local.split(1, dim=1)) or [local]
    got = SequenceReduction(group).halo(pieces, width)
    for i, h in enumerate(got[: lengths[rank]]):
        torch.testing.assert_close(h, before.detach()[:, start + i : start + i + width], rtol=0, atol=0)
    loss = sum((h * upstream[start + i]).sum() for i, h in enumerate(got[: lengths[rank]]))
    (loss + sum(h.sum() * 0 for h in got)).backward()  # an empty part's rank joins the backward's collective too
    torch.testing.assert_close(local.grad, x.grad[:, start : start + lengths[rank]], **TOL)


def _model_under_autocast(rank: int, world_size: int, **overrides) -> None:
    """bf16 autocast: the split model gives the one-process model's logits and gradients, each
    computed under autocast, within bf16 rounding (tests/test_amp.py's tolerance)."""
    group = dist.group.WORLD
    torch.manual_seed(0)
    ref = Hrrformer(_tiny_config(**overrides))
    sp = enable_sequence_parallel(copy.deepcopy(ref), group)
    tokens = _model_tokens()
    local = shard_sequence(tokens, group)[0]
    weights = torch.randn(2, ref.config.num_classes, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_ref, logits_sp = ref(tokens).float(), sp(local).float()
    torch.testing.assert_close(logits_sp, logits_ref, rtol=BF16_STEP_TOLERANCE, atol=BF16_STEP_TOLERANCE)
    (logits_ref * weights).sum().backward()
    (logits_sp * weights).sum().backward()
    reduce_sequence_parallel_gradients(sp, group)
    grad_sp = torch.cat([p.grad.flatten() for p in sp.parameters()])
    grad_ref = torch.cat([p.grad.flatten() for p in ref.parameters()])
    assert torch.isfinite(grad_sp).all()
    relative = ((grad_sp - grad_ref).norm() / grad_ref.norm()).item()
    assert relative < BF16_STEP_TOLERANCE, relative


#: Both layer parts with every HRR variant at once.
PARTS_VARIANTS = dict(
    pooling="cls",
    short_conv=4,
    output_gate=True,
    hrr_output="retrieved",
    memories=2,
    score_scale=3.0,
    length_scale=True,
    projection=True,
)

SCENARIOS = {
    "attention_circulant": lambda r, w: _check_attention(r, w, causal=False, method="circulant"),
    "attention_fourier": lambda r, w: _check_attention(r, w, causal=False, method="fourier", d=7),
    "attention_causal": lambda r, w: _check_attention(r, w, causal=True, method="auto"),
    "attention_range": _check_attention_range,
    "attention_memories": lambda r, w: _check_attention(r, w, causal=False, method="circulant", d=4, memories=3),
    "attention_causal_memories": lambda r, w: _check_attention(r, w, causal=True, method="fourier", d=5, memories=2),
    "attention_recall": lambda r, w: _check_attention(r, w, causal=False, method="auto", output="recall"),
    "attention_causal_recall_memories": lambda r, w: _check_attention(
        r, w, causal=True, method="fourier", d=5, memories=2, output="recall"
    ),
    "model_mean_learned": lambda r, w: _check_model(r, w, pooling="mean"),
    "model_cls_learned": lambda r, w: _check_model(r, w, pooling="cls"),
    "model_cls_sharded_positions": lambda r, w: _check_model(r, w, shard_positions=True, pooling="cls"),
    "model_cls_sinusoidal_post_norm": lambda r, w: _check_model(
        r, w, pooling="cls", pos_embedding="sinusoidal", norm="post"
    ),
    "model_causal_mean": lambda r, w: _check_model(r, w, pooling="mean", causal=True),
    "model_causal_mean_checkpointed": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, activation_checkpointing=True
    ),
    "model_cls_chunked": lambda r, w: _check_model(r, w, pooling="cls", chunk_size=2),
    "model_length_scale": lambda r, w: _check_model(r, w, pooling="mean", length_scale=True),
    "model_variants": lambda r, w: _check_model(
        r, w, pooling="cls", score_scale=4.0, learn_score_scale=True, hrr_output="retrieved"
    ),
    "model_causal_variants_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, score_scale=4.0, hrr_output="retrieved", chunk_size=2
    ),
    "model_causal_length_scale_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, length_scale=True, chunk_size=2
    ),
    "model_causal_mean_chunked": lambda r, w: _check_model(r, w, pooling="mean", causal=True, chunk_size=2),
    "model_memories": lambda r, w: _check_model(r, w, pooling="cls", memories=3, hrr_output="retrieved"),
    "model_causal_memories_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, memories=2, chunk_size=2
    ),
    "model_bf16": lambda r, w: _model_under_autocast(r, w, pooling="cls"),
    "model_causal_retrieved_chunked_bf16": lambda r, w: _model_under_autocast(
        r, w, pooling="mean", causal=True, hrr_output="retrieved", score_scale=4.0, chunk_size=2
    ),
    "model_short_conv": lambda r, w: _check_model(r, w, pooling="mean", short_conv=4),
    "model_parts_cls_bias": lambda r, w: _check_model(
        r, w, pooling="cls", short_conv=3, output_gate=True, attention_bias=True
    ),
    "model_parts_wide_halo": lambda r, w: _check_model(r, w, pooling="cls", short_conv=6, output_gate=True),
    "model_causal_parts_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, short_conv=4, output_gate=True, chunk_size=2
    ),
    "model_parts_variants_chunked": lambda r, w: _check_model(r, w, chunk_size=1, **PARTS_VARIANTS),
    "model_recall_write_gate": lambda r, w: _check_model(r, w, pooling="cls", hrr_output="recall", write_gate=True),
    "model_causal_recall_write_gate_parts_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, hrr_output="recall", write_gate=True, short_conv=4, chunk_size=2
    ),
    "model_write_gate_memories": lambda r, w: _check_model(r, w, pooling="mean", write_gate=True, memories=2),
    "model_key_routed_recall": lambda r, w: _check_model(
        r, w, pooling="cls", memories=3, memory_routing="key", hrr_output="recall"
    ),
    "positions_key_routed_recall_chunked": lambda r, w: _check_positions(
        r,
        w,
        causal=True,
        shared_qk=True,
        projection=True,
        short_conv=4,
        short_conv_init="shift",
        hrr_output="recall",
        write_gate=True,
        memories=4,
        memory_routing="key",
        chunk_size=2,
    ),
    "positions_shared_qk_recall_pi": lambda r, w: _check_positions(
        r, w, causal=True, shared_qk=True, projection=True, short_conv=4, hrr_output="recall", write_gate=True
    ),
    "positions_wide_heads_recall_chunked": lambda r, w: _check_positions(
        r, w, causal=True, head_dim=24, short_conv=4, hrr_output="recall", write_gate=True, chunk_size=2
    ),
    "model_causal_recall_write_gate_bf16": lambda r, w: _model_under_autocast(
        r, w, pooling="mean", causal=True, hrr_output="recall", write_gate=True, short_conv=4
    ),
    "positions_causal_recall_write_gate": lambda r, w: _check_positions(
        r, w, causal=True, short_conv=4, hrr_output="recall", write_gate=True, chunk_size=2
    ),
    "model_none": lambda r, w: _check_model(r, w, pooling="mean", attention="none"),
    "model_none_parts_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", attention="none", short_conv=4, output_gate=True, chunk_size=2
    ),
    "model_parts_checkpointed": lambda r, w: _check_model(
        r, w, pooling="mean", causal=True, short_conv=4, output_gate=True, activation_checkpointing=True
    ),
    "model_parts_bf16": lambda r, w: _model_under_autocast(r, w, pooling="cls", short_conv=4, output_gate=True),
    "positions_causal_parts": lambda r, w: _check_positions(r, w, causal=True, short_conv=4),
    "positions_chunked_variants": lambda r, w: _check_positions(
        r, w, short_conv=3, output_gate=True, hrr_output="retrieved", chunk_size=2
    ),
    "model_value_skip_retrieved_chunked": lambda r, w: _check_model(
        r, w, pooling="mean", short_conv=4, output_gate=True, hrr_output="retrieved", value_skip=True, chunk_size=2
    ),
    "positions_causal_value_skip": lambda r, w: _check_positions(
        r, w, causal=True, short_conv=4, output_gate=True, hrr_output="retrieved", value_skip=True
    ),
    "positions_on_one_rank_only": lambda r, w: _check_positions(r, w, first_chunk_only=True, causal=True),
    "halo": _halo,
    "mean_pool": _mean_pool,
    "group_of_one": _group_of_one,
    "bad_input": _bad_input,
}
RUN_ON_FOUR = (
    "attention_circulant",
    "attention_range",
    "attention_causal",
    "model_cls_learned",
    "model_causal_mean",
    "model_causal_mean_chunked",
    "model_bf16",
    "model_parts_wide_halo",
    "model_causal_parts_chunked",
    "positions_causal_parts",
    "attention_recall",
    "attention_causal_recall_memories",
    "model_causal_recall_write_gate_parts_chunked",
    "halo",
)


def _worker(rank: int, world_size: int, out_dir: str, names: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    results: dict[str, str] = {}
    for name in names:
        try:
            SCENARIOS[name](rank, world_size)
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


def _launch(tmp_path_factory, world_size: int, names) -> dict[str, list[str]]:
    out_dir = tmp_path_factory.mktemp(f"sp{world_size}")
    error = None
    try:
        launch_local(_worker, world_size, (str(out_dir), tuple(names)), timeout_s=240, collective_timeout_s=30)
    except Exception as err:  # report it in every scenario that did not finish
        error = f"{type(err).__name__}: {err}"
    verdicts: dict[str, list[str]] = {name: [] for name in names}
    for rank in range(world_size):
        path = out_dir / f"rank{rank}.json"
        done = json.loads(path.read_text()) if path.exists() else {}
        for name in names:
            verdicts[name].append(done.get(name, f"rank {rank} did not finish: {error}"))
    return verdicts


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _launch(tmp_path_factory, 2, tuple(SCENARIOS))


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    return _launch(tmp_path_factory, 4, RUN_ON_FOUR)


def _assert_ok(verdicts: list[str]) -> None:
    failures = [f"--- rank {r} ---\n{v}" for r, v in enumerate(verdicts) if v != "ok"]
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ranks_match_one_process(two_ranks, scenario):
    _assert_ok(two_ranks[scenario])


@pytest.mark.parametrize("scenario", RUN_ON_FOUR)
def test_four_ranks_match_one_process(four_ranks, scenario):
    _assert_ok(four_ranks[scenario])


def test_without_a_group_everything_is_local():
    q, k, v, _, mask, _ = _attention_inputs(2, 8, True)
    for causal in (False, True):
        torch.testing.assert_close(
            hrr_attention(q, k, v, mask, causal, reduction=SequenceReduction(None)),
            hrr_attention(q, k, v, mask, causal),
        )
    tokens = _model_tokens()
    assert shard_sequence(tokens, None) == (tokens, 0, 11)
    model = Hrrformer(_tiny_config())
    assert enable_sequence_parallel(model, None) is model and model.encoder.sequence_parallel_group is None


def test_communicated_bytes_formula():
    # malware preset: B = 1, h = 8, d = 32, float32; β (8 × 32) and S (8) forward, their gradients backward
    assert communicated_bytes(1, 8, 32, group=4)["payload"] == 2 * 8 * 33 * 4
    assert communicated_bytes(1, 8, 32, group=4, method="fourier")["payload"] == 2 * 8 * 35 * 4
    assert communicated_bytes(1, 8, 32, group=4, causal=True)["payload"] == 5 * 8 * 35 * 4
