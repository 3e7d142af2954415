"""Train the authors' ListOps network (JAX/Flax, their code) and ours side by side, step by step.

Issue 17, item 3, first part. Both sides start from the same weights (theirs, initialised as their
``train`` does and converted with :func:`hrrformer.authors.from_flax`), read the same batches, use
dropout 0 and the authors' optimiser: Adam (lr 1e-3, b1 0.9, b2 0.999, eps 1e-8 added outside the
square root, eps_root 0 — the same formula in optax and torch), their continuous per-step decay
``lr(count) = max(1e-3 · 0.9^((count − 1)/steps), 1e-5)`` with ``steps = (96 000 + 2 000) // B`` and
``count`` the updates already applied (so the first two updates use 1e-3), label-smoothed (0.1)
cross-entropy with ``nan_to_num`` per example, ``nan_to_num`` on the gradients, no clipping.

Four sub-commands, two environments (jax is never imported by the package or its venv)::

    # 1. the batches: this project's generated ListOps (hrrformer.train.generated_data_dir), padded to T
    .venv/bin/python scripts/authors_side_by_side.py batches --out runs/sbs --steps 200 --batch 32 --max-len 2000
    # 2. their side, in the JAX venv: their Network, initialize_model and train_step (imported unchanged
    #    from <authors>/listops/hrrformer_mgpu.py, as scripts/authors_fixtures.py does), optax schedule
    .venv-authors/bin/python scripts/authors_side_by_side.py jax --out runs/sbs --authors /tmp/authors-hrr
    # 3. our side (needs runs/sbs/init.npz, written by 2 before it trains; 2 and 3 may run at once)
    .venv/bin/python scripts/authors_side_by_side.py torch --out runs/sbs
    # 4. the comparison: per-step |Δloss|, parameter drift, examples/s -> runs/sbs/report.json
    .venv/bin/python scripts/authors_side_by_side.py compare --out runs/sbs

Sizes are the ``cpu`` preset's ListOps network: dim 128, 4 heads, 1 layer, MLP d/2 (theirs), T =
``--max-len`` (their 2000 by default), vocabulary 17 and 10 classes (theirs). Each side uses one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np

DIM, HEADS, LAYERS, VOCAB, CLASSES = 128, 4, 1, 17, 10
LR, RATE, FLOOR, SMOOTHING = 1e-3, 0.9, 1e-5, 0.1
TABLE_STEPS = (1, 2, 3, 5, 10, 20, 50, 100, 150, 200)


def decay_steps(batch: int) -> int:
    """Their ``steps`` (listops/hrrformer_mgpu.py:207): one epoch of 96 000 + 2 000 examples."""
    return (96_000 + 2_000) // batch


def lr_at(count: int, batch: int) -> float:
    """optax.exponential_decay(1e-3, steps, 0.9, transition_begin=1, end_value=1e-5) at ``count``."""
    if count <= 1:
        return LR
    return max(LR * RATE ** ((count - 1) / decay_steps(batch)), FLOOR)


# --------------------------------------------------------------------------------------- batches
def make_batches(args: argparse.Namespace) -> None:
    from hrrformer.data import load_task
    from hrrformer.tasks import get_preset
    from hrrformer.train import generated_data_dir

    path = generated_data_dir("listops", get_preset("listops", "cpu"), 0)
    n = args.steps * args.batch
    data = load_task("listops", path, max_len=args.max_len, limit=n)
    if len(data.train) < n:
        raise SystemExit(f"only {len(data.train)} training rows for {n} examples")
    tokens = np.zeros((args.steps, args.batch, args.max_len), dtype=np.int32)  # 0 = padding, to full T as LRA
    labels = np.zeros((args.steps, args.batch), dtype=np.int32)
    for i in range(n):
        x, y = data.train[i]  # file order (LRA's files are shuffled)
        tokens[i // args.batch, i % args.batch, : len(x)] = np.asarray(x)
        labels[i // args.batch, i % args.batch] = int(y)
    assert tokens.max() < VOCAB and labels.max() < CLASSES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "batches.npz", tokens=tokens, labels=labels)
    lengths = (tokens > 0).sum(-1)
    print(
        f"{out / 'batches.npz'}: {args.steps} batches of {args.batch} x {args.max_len}; "
        f"lengths {lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}) from {path}"
    )


def load_batches(out: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(out / "batches.npz") as f:
        return f["tokens"], f["labels"]


# ------------------------------------------------------------------------------------- their side
def run_jax(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import jax
    import optax
    from authors_fixtures import load_authors_module
    from flax import jax_utils, traverse_util
    from flax.core.frozen_dict import freeze
    from flax.training import train_state
    from flax.training.common_utils import shard, shard_prng_key

    out = Path(args.out)
    tokens, labels = load_batches(out)
    steps, batch, max_len = tokens.shape
    if "tree_map" not in vars(jax):  # their grad_check (utils.py:40) calls jax.tree_map, removed in jax 0.6
        jax.tree_map = jax.tree_util.tree_map
    module = load_authors_module(Path(args.authors), "listops")
    network = module.Network(
        vocab_size=VOCAB,
        max_seq_len=max_len,
        embed_size=DIM,
        heads=HEADS,
        n_layer=LAYERS,
        output_size=CLASSES,
        dropout_rate=0.0,
    )
    # As their train() (listops/hrrformer_mgpu.py:197-216), with dropout 0.
    p_key_next, p_key = jax.random.split(jax.random.PRNGKey(0))
    d_key_next, d_key = jax.random.split(jax.random.PRNGKey(0))
    params = module.initialize_model(model=network, max_seq_len=max_len, init_rngs={"params": p_key, "dropout": d_key})

    def flat(p) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float32) for k, v in traverse_util.flatten_dict(p, sep="/").items()}

    np.savez(out / "init.npz", **flat(params))
    print(f"{out / 'init.npz'} written ({sum(v.size for v in flat(params).values())} parameters)", flush=True)
    scheduler = optax.exponential_decay(
        init_value=LR, transition_steps=decay_steps(batch), decay_rate=RATE, transition_begin=1, end_value=FLOOR
    )
    tx = optax.adam(learning_rate=scheduler)
    # flax 0.6 (theirs) returned a FrozenDict from init; their grad_check (utils.py:38-41) returns one.
    state = train_state.TrainState.create(apply_fn=network.apply, params=freeze(params), tx=tx)
    state = jax_utils.replicate(state)
    step_fn = jax.pmap(module.train_step, axis_name="batch", donate_argnums=(0,))  # their train_step, unchanged
    losses, seconds, lrs = [], [], []
    for i in range(steps):
        p_key_next, p_key = jax.random.split(p_key_next)
        d_key_next, d_key = jax.random.split(d_key_next)
        rngs = {"params": shard_prng_key(p_key), "dropout": shard_prng_key(d_key)}
        lrs.append(float(scheduler(i)))
        tic = time.perf_counter()
        state, metrics = step_fn(state, shard([tokens[i], labels[i]]), rngs)
        loss = float(np.asarray(metrics["loss"]).mean())  # blocks until the step is done
        seconds.append(time.perf_counter() - tic)
        losses.append(loss)
        if i % 10 == 0 or i == steps - 1:
            print(f"jax step {i + 1}/{steps} loss {loss:.6f} {seconds[-1]:.2f}s", flush=True)
    final = flat(jax_utils.unreplicate(state.params))
    np.savez(
        out / "jax.npz",
        loss=np.array(losses),
        seconds=np.array(seconds),
        lr=np.array(lrs),
        **{f"final/{k}": v for k, v in final.items()},
    )
    meta = dict(
        jax=jax.__version__,
        optax=optax.__version__,
        devices=str(jax.devices()),
        steps=steps,
        batch=batch,
        max_len=max_len,
    )
    (out / "jax.json").write_text(json.dumps(meta, indent=1))
    print(f"{out / 'jax.npz'} written", flush=True)


# --------------------------------------------------------------------------------------- our side
def smoothed_ce(logits, labels):
    """Their cross_entropy_loss (listops/hrrformer_mgpu.py:140-144) on our logits."""
    import torch

    pred = torch.log_softmax(logits, dim=-1)
    true = torch.nn.functional.one_hot(labels, CLASSES).to(pred.dtype)
    true = true * (1.0 - SMOOTHING) + SMOOTHING / CLASSES  # optax.smooth_labels
    return torch.nan_to_num((-true * pred).sum(-1)).mean()


def wait_for(path: Path, timeout: float) -> None:
    start = time.time()
    while not path.exists():
        if time.time() - start > timeout:
            raise SystemExit(f"{path} did not appear in {timeout:.0f}s")
        time.sleep(2)
    time.sleep(1)  # np.savez writes in one go; leave it a moment to close


def run_torch(args: argparse.Namespace) -> None:
    import torch

    from hrrformer.authors import from_flax
    from hrrformer.model import Dropout

    torch.set_num_threads(1)
    out = Path(args.out)
    tokens, labels = load_batches(out)
    steps, batch, _ = tokens.shape
    wait_for(out / "init.npz", args.wait)
    with np.load(out / "init.npz") as f:
        params = {k: f[k] for k in f.files}
    model = from_flax("listops", params, heads=HEADS).train()
    for m in model.modules():
        if isinstance(m, (Dropout, torch.nn.Dropout)):
            m.p = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda count: lr_at(count, batch) / LR)
    losses, seconds, lrs = [], [], []
    for i in range(steps):
        x, y = torch.from_numpy(tokens[i]).long(), torch.from_numpy(labels[i]).long()
        lrs.append(opt.param_groups[0]["lr"])
        tic = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = smoothed_ce(model(x), y)
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.nan_to_num_()  # their grad_check
        opt.step()
        sched.step()
        seconds.append(time.perf_counter() - tic)
        losses.append(loss.item())
        if i % 10 == 0 or i == steps - 1:
            print(f"torch step {i + 1}/{steps} loss {losses[-1]:.6f} {seconds[-1]:.2f}s", flush=True)
    final = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(
        out / "torch.npz",
        loss=np.array(losses),
        seconds=np.array(seconds),
        lr=np.array(lrs),
        **{f"final/{k}": v for k, v in final.items()},
    )
    (out / "torch.json").write_text(
        json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads()), indent=1)
    )
    print(f"{out / 'torch.npz'} written", flush=True)


# ------------------------------------------------------------------------------------- comparison
def compare(args: argparse.Namespace) -> None:
    import torch

    from hrrformer.authors import from_flax

    out = Path(args.out)
    tokens, _ = load_batches(out)
    steps, batch, max_len = tokens.shape
    theirs, ours = np.load(out / "jax.npz"), np.load(out / "torch.npz")
    dloss = np.abs(theirs["loss"] - ours["loss"])
    with np.load(out / "init.npz") as f:
        init = {k: f[k] for k in f.files}
    final_theirs = {k.removeprefix("final/"): theirs[k] for k in theirs.files if k.startswith("final/")}
    # Their final weights in our layout (from_flax does the transposes/renames), against ours.
    converted = {k: v.numpy() for k, v in from_flax("listops", final_theirs, heads=HEADS).state_dict().items()}
    start = {k: v.numpy() for k, v in from_flax("listops", init, heads=HEADS).state_dict().items()}
    ours_final = {k.removeprefix("final/"): ours[k] for k in ours.files if k.startswith("final/")}
    drift = {}
    for k, v in converted.items():
        d = np.abs(ours_final[k] - v)
        moved = np.linalg.norm(v - start[k])
        drift[k] = dict(
            max_abs=float(d.max()),
            rel_to_update=float(np.linalg.norm(ours_final[k] - v) / max(moved, 1e-30)),
            update_norm=float(moved),
        )
    # Eval-mode outputs of both final networks on the last batch, through our implementation.
    with torch.no_grad():
        x = torch.from_numpy(tokens[-1]).long()
        a = from_flax("listops", final_theirs, heads=HEADS)
        b = from_flax("listops", init, heads=HEADS)
        b.load_state_dict({k: torch.from_numpy(v) for k, v in ours_final.items()})
        dout = float((torch.log_softmax(a(x), -1) - torch.log_softmax(b(x), -1)).abs().max())

    def rate(s: np.ndarray) -> float:
        return float(batch * (len(s) - 2) / s[2:].sum())  # steps 1-2 left out: jax compiles in both

    report = dict(
        steps=int(steps),
        batch=int(batch),
        max_len=int(max_len),
        dim=DIM,
        heads=HEADS,
        layers=LAYERS,
        max_abs_dloss=float(dloss.max()),
        argmax_step=int(dloss.argmax()) + 1,
        final_abs_dloss=float(dloss[-1]),
        mean_abs_dloss=float(dloss.mean()),
        max_abs_dlr=float(np.abs(theirs["lr"] - ours["lr"]).max()),
        table={
            s: dict(theirs=float(theirs["loss"][s - 1]), ours=float(ours["loss"][s - 1]), abs_diff=float(dloss[s - 1]))
            for s in TABLE_STEPS
            if s <= steps
        },
        param_max_abs_diff=max(d["max_abs"] for d in drift.values()),
        param_max_rel_to_update=max(d["rel_to_update"] for d in drift.values()),
        params=drift,
        final_logprob_max_abs_diff_last_batch=dout,
        ex_per_s_theirs=rate(theirs["seconds"]),
        ex_per_s_ours=rate(ours["seconds"]),
        first_step_s_theirs=float(theirs["seconds"][0]),
        first_step_s_ours=float(ours["seconds"][0]),
    )
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(
        f"steps {steps}, B {batch}, T {max_len}: max |dloss| {report['max_abs_dloss']:.3e} at step "
        f"{report['argmax_step']}, final {report['final_abs_dloss']:.3e}, mean {report['mean_abs_dloss']:.3e}"
    )
    print(f"lr schedules: max |dlr| {report['max_abs_dlr']:.3e}")
    print("step  theirs     ours       |diff|")
    for s, r in report["table"].items():
        print(f"{s:>4}  {r['theirs']:.6f}  {r['ours']:.6f}  {r['abs_diff']:.2e}")
    print(
        f"params after {steps} steps: max |diff| {report['param_max_abs_diff']:.3e}; "
        f"max ||diff|| / ||update|| {report['param_max_rel_to_update']:.3e}"
    )
    for k, d in drift.items():
        print(f"  {k:<45} max|diff| {d['max_abs']:.2e}  ||diff||/||update|| {d['rel_to_update']:.2e}")
    print(f"final networks, log-probs on the last batch: max |diff| {dout:.3e}")
    print(f"examples/s (steps 3..N): theirs {report['ex_per_s_theirs']:.1f}, ours {report['ex_per_s_ours']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("batches", help="write the batches (package venv)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=2000)
    p = sub.add_parser("jax", help="train the authors' network (JAX venv)")
    p.add_argument("--authors", required=True, help="checkout of NeuromorphicComputationResearchProgram/Hrrformer")
    p = sub.add_parser("torch", help="train ours from their initial weights (package venv)")
    p.add_argument("--wait", type=float, default=1800.0, help="seconds to wait for init.npz")
    sub.add_parser("compare", help="compare the two runs (package venv)")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="folder for batches, weights, losses and the report")
    args = parser.parse_args()
    dict(batches=make_batches, jax=run_jax, torch=run_torch, compare=compare)[args.cmd](args)


if __name__ == "__main__":
    main()
