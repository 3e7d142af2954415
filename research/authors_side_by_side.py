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
    .venv/bin/python -m research.authors_side_by_side batches --out runs/sbs --steps 200 --batch 32 --max-len 2000
    # 2. their side, in the JAX venv: their Network, initialize_model and train_step (imported unchanged
    #    from <authors>/listops/hrrformer_mgpu.py, as research/authors_fixtures.py does), optax schedule
    .venv-authors/bin/python -m research.authors_side_by_side jax --out runs/sbs --authors /tmp/authors-hrr
    # 3. our side (needs runs/sbs/init.npz, written by 2 before it trains; 2 and 3 may run at once)
    .venv/bin/python -m research.authors_side_by_side torch --out runs/sbs
    # 4. the comparison: per-step |Δloss|, parameter drift, examples/s -> runs/sbs/report.json
    .venv/bin/python -m research.authors_side_by_side compare --out runs/sbs

Sizes are the ``cpu`` preset's ListOps network: dim 128, 4 heads, 1 layer, MLP d/2 (theirs), T =
``--max-len`` (their 2000 by default), vocabulary 17 and 10 classes (theirs). Each side uses one thread.

Issue 17, item 3, second part: the **timed pair**. ``data`` writes a whole task instead of fixed
batches (train and test tokens as the authors' network takes them, and one shuffled order of the
train rows per epoch); ``jax`` and ``torch`` then train with dropout until ``--minutes`` of training
have passed, reading the same batches in the same order, log each step's loss and time, and score
the test split in eval mode at the end. Run the two at once, one thread each::

    .venv/bin/python -m research.authors_side_by_side data --task listops --out runs/pair-listops
    .venv/bin/python -m research.authors_side_by_side data --task image --out runs/pair-image \
        --path ../shared/data/cifar10_train_images.tar.gz       # 45,000 train / 5,000 held out
    .venv-authors/bin/python -m research.authors_side_by_side jax --out runs/pair-listops \
        --authors /tmp/authors-hrr --dropout 0.1 --minutes 60 &
    .venv/bin/python -m research.authors_side_by_side torch --out runs/pair-listops --dropout 0.1 --minutes 60
    .venv/bin/python -m research.authors_side_by_side compare --out runs/pair-listops   # curves.csv, report

Timed sizes are each task's ``cpu`` preset size in the authors' network for that task
(``TASK_NETWORKS``); B = 32; their optimiser and their task's decay rate and decay length.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np

LR, FLOOR, SMOOTHING = 1e-3, 1e-5, 0.1
TABLE_STEPS = (1, 2, 3, 5, 10, 20, 50, 100, 150, 200)
CURVE_MINUTES = (1, 2, 5, 10, 15, 20, 30, 40, 50, 60)
STEP_WINDOW = 250  # steps per window of the same-batches loss table

#: The ``cpu`` preset's size in each task's authors' network, with that task's schedule from their
#: train(): ``decay_rate`` and ``epoch`` (their ``steps = epoch // batch_size``; listops/
#: hrrformer_mgpu.py:207-211, image/hrrformer_mgpu.py:202-205). Vocabulary and classes are theirs.
TASK_NETWORKS: dict[str, dict[str, int | float]] = {
    "listops": dict(vocab=17, classes=10, dim=128, heads=4, layers=1, max_len=2000, rate=0.9, epoch=96_000 + 2_000),
    "image": dict(vocab=256, classes=10, dim=64, heads=4, layers=1, max_len=1024, rate=0.95, epoch=50_000 + 10_000),
}


def lr_at(count: int, batch: int, task: str) -> float:
    """optax.exponential_decay(1e-3, epoch // B, rate, transition_begin=1, end_value=1e-5) at ``count``."""
    net = TASK_NETWORKS[task]
    if count <= 1:
        return LR
    return max(LR * float(net["rate"]) ** ((count - 1) / (int(net["epoch"]) // batch)), FLOOR)


# ------------------------------------------------------------------------------------------ data
class RunData:
    """What both sides read from ``out``: the batches of step ``i`` and, for timed runs, the test split.

    Step-by-step runs (``batches``): ``batches.npz`` holds (steps, B, T) tokens. Timed runs (``data``):
    ``train_tokens.npy`` (N, T) uint8, ``train_labels.npy``, ``order.npy`` (epochs, N) — the row order
    of each epoch, the same on both sides — and ``test_tokens.npy`` / ``test_labels.npy``.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.meta = json.loads((out / "meta.json").read_text())
        self.task: str = self.meta["task"]
        self.batch: int = self.meta["batch"]
        self.timed = self.meta["mode"] == "timed"
        if self.timed:
            self.tokens = np.load(out / "train_tokens.npy", mmap_mode="r")
            self.labels = np.load(out / "train_labels.npy")
            self.order = np.load(out / "order.npy")
            self.steps = self.order.shape[0] * (self.order.shape[1] // self.batch)
        else:
            with np.load(out / "batches.npz") as f:
                self.tokens, self.labels = f["tokens"], f["labels"]
            self.steps = self.tokens.shape[0]
        self.max_len: int = self.tokens.shape[-1]

    def step(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (B, T) int32 and labels (B,) int32 of step ``i`` (counting from 0)."""
        if not self.timed:
            return self.tokens[i], self.labels[i]
        per_epoch = self.order.shape[1] // self.batch
        rows = np.sort(self.order[i // per_epoch, (i % per_epoch) * self.batch :][: self.batch])
        return np.asarray(self.tokens[rows], dtype=np.int32), self.labels[rows].astype(np.int32)

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return np.load(self.out / "test_tokens.npy").astype(np.int32), np.load(self.out / "test_labels.npy")


def write_meta(out: Path, **meta: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


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
    net = TASK_NETWORKS["listops"]
    assert tokens.max() < net["vocab"] and labels.max() < net["classes"]
    out = Path(args.out)
    write_meta(out, task="listops", mode="steps", batch=args.batch)
    np.savez(out / "batches.npz", tokens=tokens, labels=labels)
    lengths = (tokens > 0).sum(-1)
    print(
        f"{out / 'batches.npz'}: {args.steps} batches of {args.batch} x {args.max_len}; "
        f"lengths {lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}) from {path}"
    )


def as_authors_tokens(split, task: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) uint8 tokens as the authors' network takes them, and (N,) labels, of one of our splits.

    ListOps: our ids, padded with 0 to T (as LRA). Image: our pixels are gray + 1 (0 = padding);
    theirs are the raw gray values 0-255 with no padding, so 1 is subtracted.
    """
    tokens = np.zeros((len(split), max_len), dtype=np.uint8)
    labels = np.zeros(len(split), dtype=np.int32)
    shift = 1 if task == "image" else 0
    for i in range(len(split)):
        x, y = split[i]
        x = np.asarray(x)[:max_len] - shift
        tokens[i, : len(x)] = x
        labels[i] = int(y)
    return tokens, labels


def make_data(args: argparse.Namespace) -> None:
    """The timed pair's data: our ``cpu``-preset splits of ``--task`` in the authors' token format."""
    from hrrformer.data import load_task
    from hrrformer.tasks import get_preset
    from hrrformer.train import generated_data_dir

    net = TASK_NETWORKS[args.task]
    if args.task == "listops":
        path = generated_data_dir("listops", get_preset("listops", "cpu"), 0)
    elif args.path is None:
        raise SystemExit("--path is required for --task image (CIFAR-10: folder or archive)")
    else:
        path = Path(args.path)
    data = load_task(args.task, path, max_len=int(net["max_len"]))
    test = data.test if data.test is not None else data.val  # image: the 10% held out of train
    out = Path(args.out)
    write_meta(out, task=args.task, mode="timed", batch=args.batch, source=str(path))
    for name, split in (("train", data.train), ("test", test)):
        tokens, labels = as_authors_tokens(split, args.task, int(net["max_len"]))
        assert labels.max() < net["classes"] and tokens.max() < net["vocab"]
        np.save(out / f"{name}_tokens.npy", tokens)
        np.save(out / f"{name}_labels.npy", labels)
        print(f"{name}: {tokens.shape} tokens, class shares {np.bincount(labels) / len(labels)}")
    rng = np.random.default_rng(0)
    np.save(out / "order.npy", np.stack([rng.permutation(len(data.train)) for _ in range(args.epochs)]))
    print(f"{out}: {args.epochs} epochs of {len(data.train)} rows in a seeded order, B = {args.batch}")


class Progress:
    """Per-step losses and times, a progress line every ``every`` steps (rate, elapsed, ETA), the budget."""

    def __init__(self, name: str, steps: int, batch: int, minutes: float | None, every: int = 20) -> None:
        self.name, self.steps, self.batch, self.every = name, steps, batch, every
        self.budget = None if minutes is None else 60.0 * minutes
        self.losses: list[float] = []
        self.seconds: list[float] = []
        self.lrs: list[float] = []
        self.start = time.perf_counter()

    def record(self, loss: float, seconds: float, lr: float) -> None:
        self.losses.append(loss)
        self.seconds.append(seconds)
        self.lrs.append(lr)
        n = len(self.losses)
        if n % self.every == 0 or n == 1:
            elapsed = sum(self.seconds)
            rate = self.batch * n / elapsed
            left = (self.budget - elapsed) if self.budget else (self.steps - n) * elapsed / n
            print(
                f"{self.name} step {n}/{self.steps} loss {np.mean(self.losses[-self.every :]):.4f} "
                f"{rate:.1f} ex/s elapsed {elapsed / 60:.1f} min ETA {max(left, 0) / 60:.1f} min",
                flush=True,
            )

    def done(self) -> bool:
        """True once the budget of training time (the steps' own seconds) is spent."""
        return self.budget is not None and sum(self.seconds) >= self.budget

    def save(self, path: Path, test_accuracy: float | None, **extra: np.ndarray) -> dict:
        import resource

        summary = dict(
            steps=len(self.losses),
            train_seconds=float(sum(self.seconds)),
            wall_seconds=time.perf_counter() - self.start,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            test_accuracy=test_accuracy,
        )
        np.savez(path, loss=np.array(self.losses), seconds=np.array(self.seconds), lr=np.array(self.lrs), **extra)
        print(f"{path} written: {summary}", flush=True)
        return summary


# ------------------------------------------------------------------------------------- their side
def run_jax(args: argparse.Namespace) -> None:
    import jax
    import optax
    from flax import jax_utils, traverse_util
    from flax.core.frozen_dict import freeze
    from flax.training import train_state
    from flax.training.common_utils import shard, shard_prng_key

    from research.authors_fixtures import load_authors_module

    out = Path(args.out)
    data = RunData(out)
    net = TASK_NETWORKS[data.task]
    if "tree_map" not in vars(jax):  # their grad_check (utils.py:40) calls jax.tree_map, removed in jax 0.6
        jax.tree_map = jax.tree_util.tree_map
    module = load_authors_module(Path(args.authors), data.task)
    network = module.Network(
        vocab_size=net["vocab"],
        max_seq_len=data.max_len,
        embed_size=net["dim"],
        heads=net["heads"],
        n_layer=net["layers"],
        output_size=net["classes"],
        dropout_rate=args.dropout,
    )
    # As their train() (listops/hrrformer_mgpu.py:197-216, image/hrrformer_mgpu.py:192-210).
    p_key_next, p_key = jax.random.split(jax.random.PRNGKey(0))
    d_key_next, d_key = jax.random.split(jax.random.PRNGKey(0))
    params = module.initialize_model(
        model=network, max_seq_len=data.max_len, init_rngs={"params": p_key, "dropout": d_key}
    )

    def flat(p) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float32) for k, v in traverse_util.flatten_dict(p, sep="/").items()}

    np.savez(out / "init.npz", **flat(params))
    print(f"{out / 'init.npz'} written ({sum(v.size for v in flat(params).values())} parameters)", flush=True)
    scheduler = optax.exponential_decay(
        init_value=LR,
        transition_steps=int(net["epoch"]) // data.batch,
        decay_rate=float(net["rate"]),
        transition_begin=1,
        end_value=FLOOR,
    )
    tx = optax.adam(learning_rate=scheduler)
    # flax 0.6 (theirs) returned a FrozenDict from init; their grad_check (utils.py:38-41) returns one.
    state = train_state.TrainState.create(apply_fn=network.apply, params=freeze(params), tx=tx)
    state = jax_utils.replicate(state)
    step_fn = jax.pmap(module.train_step, axis_name="batch", donate_argnums=(0,))  # their train_step, unchanged
    progress = Progress("jax", data.steps, data.batch, args.minutes)
    for i in range(data.steps):
        p_key_next, p_key = jax.random.split(p_key_next)
        d_key_next, d_key = jax.random.split(d_key_next)
        rngs = {"params": shard_prng_key(p_key), "dropout": shard_prng_key(d_key)}
        lr = float(scheduler(i))
        tokens, labels = data.step(i)
        tic = time.perf_counter()
        state, metrics = step_fn(state, shard([tokens, labels]), rngs)
        loss = float(np.asarray(metrics["loss"]).mean())  # blocks until the step is done
        progress.record(loss, time.perf_counter() - tic, lr)
        if progress.done():
            break
    final_params = jax_utils.unreplicate(state.params)
    accuracy = None
    if data.timed:  # eval mode (training=False: no dropout), as their predict
        apply = jax.jit(lambda p, x: network.apply({"params": p}, x, training=False))
        x, y = data.test()
        pred = np.concatenate(
            [
                np.asarray(apply(final_params, x[j : j + args.eval_batch])).argmax(-1)
                for j in range(0, len(x), args.eval_batch)
            ]
        )
        accuracy = float((pred == y).mean())
    final = flat(final_params)
    summary = progress.save(out / "jax.npz", accuracy, **{f"final/{k}": v for k, v in final.items()})
    meta = dict(
        jax=jax.__version__,
        optax=optax.__version__,
        devices=str(jax.devices()),
        batch=data.batch,
        max_len=data.max_len,
        dropout=args.dropout,
        **summary,
    )
    (out / "jax.json").write_text(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------------------- our side
def smoothed_ce(logits, labels, classes: int):
    """Their cross_entropy_loss (listops/hrrformer_mgpu.py:140-144) on our logits."""
    import torch

    pred = torch.log_softmax(logits, dim=-1)
    true = torch.nn.functional.one_hot(labels, classes).to(pred.dtype)
    true = true * (1.0 - SMOOTHING) + SMOOTHING / classes  # optax.smooth_labels
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
    torch.manual_seed(0)
    out = Path(args.out)
    data = RunData(out)
    net = TASK_NETWORKS[data.task]
    wait_for(out / "init.npz", args.wait)
    with np.load(out / "init.npz") as f:
        params = {k: f[k] for k in f.files}
    model = from_flax(data.task, params, heads=int(net["heads"])).train()
    for m in model.modules():
        if isinstance(m, (Dropout, torch.nn.Dropout)):
            m.p = args.dropout
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda count: lr_at(count, data.batch, data.task) / LR)
    progress = Progress("torch", data.steps, data.batch, args.minutes)
    for i in range(data.steps):
        tokens, labels = data.step(i)
        x, y = torch.from_numpy(tokens).long(), torch.from_numpy(labels).long()
        lr = opt.param_groups[0]["lr"]
        tic = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = smoothed_ce(model(x), y, int(net["classes"]))
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.nan_to_num_()  # their grad_check
        opt.step()
        sched.step()
        progress.record(loss.item(), time.perf_counter() - tic, lr)
        if progress.done():
            break
    accuracy = None
    if data.timed:
        model.eval()
        x, y = data.test()
        with torch.no_grad():
            pred = torch.cat(
                [
                    model(torch.from_numpy(x[j : j + args.eval_batch]).long()).argmax(-1)
                    for j in range(0, len(x), args.eval_batch)
                ]
            )
        accuracy = float((pred.numpy() == y).mean())
    final = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    summary = progress.save(out / "torch.npz", accuracy, **{f"final/{k}": v for k, v in final.items()})
    (out / "torch.json").write_text(
        json.dumps(
            dict(torch=torch.__version__, threads=torch.get_num_threads(), dropout=args.dropout, **summary), indent=1
        )
    )


# ------------------------------------------------------------------------------------- comparison
def compare(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = RunData(out)
    (compare_timed if data.timed else compare_steps)(data)


def examples_per_second(seconds: np.ndarray, batch: int) -> float:
    return float(batch * (len(seconds) - 2) / seconds[2:].sum())  # steps 1-2 left out: jax compiles in both


def compare_timed(data: RunData) -> None:
    """Loss curves against training time (curves.csv), examples/s, peak memory and test accuracy."""
    out = data.out
    runs = {side: np.load(out / f"{side}.npz") for side in ("jax", "torch")}
    info = {side: json.loads((out / f"{side}.json").read_text()) for side in runs}
    majority = float(np.bincount(data.test()[1]).max() / len(data.test()[1]))
    with (out / "curves.csv").open("w") as f:
        f.write("side,step,train_seconds,loss\n")
        for side, run in runs.items():
            for i, (t, loss) in enumerate(zip(np.cumsum(run["seconds"]), run["loss"])):
                f.write(f"{side},{i + 1},{t:.3f},{loss:.6f}\n")
    report: dict[str, object] = dict(task=data.task, batch=data.batch, max_len=data.max_len, majority=majority)
    for side, run in runs.items():
        elapsed = np.cumsum(run["seconds"])
        curve = {}
        for m in CURVE_MINUTES:  # mean loss of the steps in the minutes before m (at most 100 steps)
            i = int(np.searchsorted(elapsed, 60 * m))
            if i > 0 and (i < len(elapsed) or m * 60 <= elapsed[-1] + 1):
                curve[m] = float(run["loss"][max(0, i - 100) : i].mean())
        report[side] = dict(
            steps=len(run["loss"]),
            examples=int(len(run["loss"]) * data.batch),
            epochs=len(run["loss"]) * data.batch / len(data.labels),
            ex_per_s=examples_per_second(run["seconds"], data.batch),
            train_minutes=float(elapsed[-1] / 60),
            peak_rss_mb=info[side]["peak_rss_mb"],
            test_accuracy=info[side]["test_accuracy"],
            loss_last_100=float(run["loss"][-100:].mean()),
            loss_curve=curve,
        )
    # The same batches in the same order on both sides: the mean loss per window of steps, where both ran.
    common = min(len(run["loss"]) for run in runs.values())
    edges = [*range(0, common, STEP_WINDOW), common]
    report["loss_by_steps"] = {
        f"{a + 1}-{b}": {side: float(run["loss"][a:b].mean()) for side, run in runs.items()}
        for a, b in itertools.pairwise(edges)
        if b > a
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_curves(runs, out / "curves.png", f"{data.task}, B {data.batch}, T {data.max_len}")
    print(f"{data.task}: B {data.batch}, T {data.max_len}, test majority share {majority:.4f}")
    print("side   steps  epochs  ex/s   peak MB  test acc  loss (last 100 steps)")
    for side in runs:
        r = report[side]
        assert isinstance(r, dict)
        print(
            f"{side:<6} {r['steps']:>5}  {r['epochs']:.2f}  {r['ex_per_s']:>5.1f}  {r['peak_rss_mb']:>7.0f}  "
            f"{r['test_accuracy']:.4f}    {r['loss_last_100']:.4f}"
        )
    print("minutes  " + "  ".join(f"{m:>6}" for m in CURVE_MINUTES))
    for side in runs:
        r = report[side]
        assert isinstance(r, dict)
        print(f"{side:<7}  " + "  ".join(f"{r['loss_curve'].get(m, float('nan')):>6.4f}" for m in CURVE_MINUTES))
    print("steps (same batches)  " + "  ".join(f"{side:>6}" for side in runs))
    for window, losses in report["loss_by_steps"].items():  # type: ignore[union-attr]
        print(f"{window:<21} " + "  ".join(f"{losses[side]:>6.4f}" for side in runs))


def plot_curves(runs: dict[str, np.lib.npyio.NpzFile], path: Path, title: str, smooth: int = 50) -> None:
    """Training loss (mean of ``smooth`` steps) against training minutes and against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = {"jax": "theirs (JAX)", "torch": "ours (torch)"}
    for side, run in runs.items():
        loss = np.convolve(run["loss"], np.ones(smooth) / smooth, mode="valid")
        minutes = np.cumsum(run["seconds"])[smooth - 1 :] / 60
        axes[0].plot(minutes, loss, label=names[side])
        axes[1].plot(np.arange(smooth, len(run["loss"]) + 1), loss, label=names[side])
    axes[0].set_xlabel("training minutes (one thread each, side by side)")
    axes[1].set_xlabel("step (the same batches on both sides)")
    for ax in axes:
        ax.set_ylabel(f"training loss, mean of {smooth} steps")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def compare_steps(data: RunData) -> None:
    import torch

    from hrrformer.authors import from_flax

    out = data.out
    heads = int(TASK_NETWORKS[data.task]["heads"])
    steps, batch, max_len = data.steps, data.batch, data.max_len
    theirs, ours = np.load(out / "jax.npz"), np.load(out / "torch.npz")
    dloss = np.abs(theirs["loss"] - ours["loss"])
    with np.load(out / "init.npz") as f:
        init = {k: f[k] for k in f.files}
    final_theirs = {k.removeprefix("final/"): theirs[k] for k in theirs.files if k.startswith("final/")}
    # Their final weights in our layout (from_flax does the transposes/renames), against ours.
    converted = {k: v.numpy() for k, v in from_flax(data.task, final_theirs, heads=heads).state_dict().items()}
    start = {k: v.numpy() for k, v in from_flax(data.task, init, heads=heads).state_dict().items()}
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
        x = torch.from_numpy(data.step(steps - 1)[0]).long()
        a = from_flax(data.task, final_theirs, heads=heads)
        b = from_flax(data.task, init, heads=heads)
        b.load_state_dict({k: torch.from_numpy(v) for k, v in ours_final.items()})
        dout = float((torch.log_softmax(a(x), -1) - torch.log_softmax(b(x), -1)).abs().max())
    net = TASK_NETWORKS[data.task]
    report = dict(
        steps=int(steps),
        batch=int(batch),
        max_len=int(max_len),
        dim=net["dim"],
        heads=heads,
        layers=net["layers"],
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
        ex_per_s_theirs=examples_per_second(theirs["seconds"], batch),
        ex_per_s_ours=examples_per_second(ours["seconds"], batch),
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
    p = sub.add_parser("batches", help="write fixed batches for the step-by-step run (package venv)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=2000)
    p = sub.add_parser("data", help="write a task's splits and epoch orders for the timed pair (package venv)")
    p.add_argument("--task", choices=sorted(TASK_NETWORKS), required=True)
    p.add_argument("--path", help="the task's data (image: CIFAR-10 folder or archive); listops is generated")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30, help="epoch orders to write (more than the budget uses)")
    p = sub.add_parser("jax", help="train the authors' network (JAX venv)")
    p.add_argument("--authors", required=True, help="checkout of NeuromorphicComputationResearchProgram/Hrrformer")
    p = sub.add_parser("torch", help="train ours from their initial weights (package venv)")
    p.add_argument("--wait", type=float, default=1800.0, help="seconds to wait for init.npz")
    for name in ("jax", "torch"):
        p = sub.choices[name]
        p.add_argument("--dropout", type=float, default=0.0, help="dropout rate (their 0.1; 0 for step by step)")
        p.add_argument("--minutes", type=float, help="stop after this much training time (timed runs)")
        p.add_argument("--eval-batch", type=int, default=64)
    sub.add_parser("compare", help="compare the two runs (package venv)")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="folder for data, weights, losses and the report")
    args = parser.parse_args()
    dict(batches=make_batches, data=make_data, jax=run_jax, torch=run_torch, compare=compare)[args.cmd](args)


if __name__ == "__main__":
    main()
