"""Generate ground-truth fixtures from the Hrrformer authors' own JAX/Flax networks.

Run in the separate JAX environment (never the package's venv)::

    bash research/authors_venv.sh
    .venv-authors/bin/python -m research.authors_fixtures --authors /path/to/Hrrformer \\
        --commit 8a127d1de653b435a803e8f0beaf876d86453b99

``--authors`` is a checkout of NeuromorphicComputationResearchProgram/Hrrformer. Each task's
``<task>/hrrformer_mgpu.py`` is imported unchanged: only the modules it imports for data loading
(``dataset``, which needs tensorflow-datasets / torch and the LRA files) and, when absent, ``pandas``
(used by their CSV helpers) are stubbed. Their ``Network`` is built at a tiny size, initialised the way
their ``initialize_model`` does it (all-ones input, ``{'params', 'dropout'}`` keys split from a fixed
``PRNGKey``), its biases and LayerNorm scales perturbed (see ``perturb_affine``: at init they are 0 and 1,
which would hide a missing bias), and applied in eval mode to a small batch of tokens.

Each ``tests/fixtures/authors/<task>.npz`` holds:

* ``params/<flax path>``: ``flax.traverse_util.flatten_dict(variables["params"], sep="/")``, float32,
  e.g. ``params/Encoder_0/EncoderLayer_0/SelfAttention_0/query/kernel``. Strip the ``params/`` prefix to
  get the dict ``hrrformer.authors.from_flax`` takes.
* ``tokens``: int32 ``(B, max_seq_len)``, exactly what their network takes (0 = padding for
  listops/text/binaries; raw pixels 0-255 with no mask for image/pathfinder).
* ``output``: float32 ``(B, classes)``, ``Network.apply(..., training=False)``: log-softmax for the four
  LRA tasks, softmax for binaries (see ``meta["output_kind"]``).
* ``pooled``: float32 ``(B, d)``, the vector fed to the classification head (mean over all T of the
  encoder output for LRA; the CLS row of the last encoder block for binaries), for debugging.
* ``meta``: a JSON string (0-d unicode array; loads without pickle) with the task, the authors' file and
  commit, the constructor arguments, and the versions of jax/flax/hrr used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_COMMIT = "8a127d1de653b435a803e8f0beaf876d86453b99"
TASKS = ("listops", "text", "image", "pathfinder", "binaries")
# Folder of each task's hrrformer_mgpu.py in the authors' repository.
TASK_DIRS = {"listops": "listops", "text": "text", "image": "image", "pathfinder": "path", "binaries": "malware"}

# Tiny configurations. LRA tasks: keyword arguments of the authors' Network(vocab_size, max_seq_len,
# embed_size, heads, n_layer, output_size, dropout_rate). Vocabulary sizes are the authors' own
# (listops 17, text 257, image/path 256, from each file's __main__ call).
# Binaries: Network(features, vocab_size, embed_size, max_seq_len, nlayers, output_size, dropout_rate,
# training); their MHAttention always uses its default 8 heads, so embed_size 32 gives head size 4 (with
# head size 2 the approximate inverse is the identity and would test nothing). Their vocab is 257; 65 is
# used here only to keep the fixture under 50 KB (sizes are inferred from the arrays).
CONFIGS: dict[str, dict[str, Any]] = {
    "listops": dict(vocab_size=17, max_seq_len=32, embed_size=16, heads=2, n_layer=2, output_size=10, dropout_rate=0.1),
    "text": dict(vocab_size=257, max_seq_len=32, embed_size=16, heads=2, n_layer=2, output_size=2, dropout_rate=0.1),
    "image": dict(vocab_size=256, max_seq_len=64, embed_size=16, heads=4, n_layer=2, output_size=10, dropout_rate=0.1),
    "pathfinder": dict(
        vocab_size=256, max_seq_len=64, embed_size=16, heads=2, n_layer=2, output_size=2, dropout_rate=0.1
    ),
    "binaries": dict(
        features=16, vocab_size=65, embed_size=32, max_seq_len=16, nlayers=1, output_size=2, dropout_rate=0.1
    ),
}
BATCH = 4


def load_authors_module(authors: Path, task: str) -> types.ModuleType:
    """Import ``<authors>/<dir>/hrrformer_mgpu.py`` unchanged, stubbing only its data-loading imports.

    Args:
        authors: root of a checkout of the authors' repository.
        task: one of ``TASKS``.

    Returns:
        The imported module (holding their ``Network`` and the classes it uses).
    """
    task_dir = authors / TASK_DIRS[task]
    for p in (str(task_dir), str(authors)):  # task dir: malware_utils; root: embed, utils
        if p not in sys.path:
            sys.path.insert(0, p)

    def _no_data(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("data loading is stubbed out: fixtures only build and apply the network")

    stub = types.ModuleType("dataset")
    stub.load_dataset = _no_data  # type: ignore[attr-defined]
    sys.modules["dataset"] = stub
    try:
        import pandas  # noqa: F401
    except ImportError:
        sys.modules["pandas"] = types.ModuleType("pandas")  # only their CSV helpers use it
    spec = importlib.util.spec_from_file_location(f"authors_{task}", task_dir / "hrrformer_mgpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tokens(task: str, cfg: dict[str, Any], seed: int) -> np.ndarray:
    """A small int32 batch of tokens as the authors' network takes them.

    listops/text/binaries: ids in ``1..vocab-1`` with trailing zeros (padding) of varied lengths; row 0 is
    full length, the others are padded (one row keeps a single real token). image/pathfinder: raw pixel
    values ``0..255`` (0 is a real value, no mask), with some exact zeros and 255s.

    Args:
        task: one of ``TASKS``.
        cfg: the task's entry of ``CONFIGS``.
        seed: numpy seed.

    Returns:
        ``(BATCH, max_seq_len)`` int32 array.
    """
    rng = np.random.default_rng(seed)
    t, vocab = cfg["max_seq_len"], cfg["vocab_size"]
    if task in ("image", "pathfinder"):
        x = rng.integers(0, 256, size=(BATCH, t))
        x[rng.random((BATCH, t)) < 0.25] = 0
        x[rng.random((BATCH, t)) < 0.1] = 255
        return x.astype(np.int32)
    x = rng.integers(1, vocab, size=(BATCH, t))
    lengths = [t, (2 * t) // 3, t // 4, 1]
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    return x.astype(np.int32)


def build(module: types.ModuleType, task: str, cfg: dict[str, Any]) -> Any:
    """Construct the authors' ``Network`` in eval mode for ``task``."""
    if task == "binaries":
        return module.Network(training=False, **cfg)
    return module.Network(**cfg)


def init_params(network: Any, task: str, cfg: dict[str, Any], seed: int) -> Any:
    """Initialise as the authors' ``train``/``initialize_model`` do, with ``PRNGKey(seed)``.

    LRA: ``init(rngs, np.ones([4, max_seq_len]))``; binaries: ``init(rngs, np.ones([1, max_seq_len]))``.
    """
    import jax
    import jax.numpy as jnp

    _, p_key = jax.random.split(jax.random.PRNGKey(seed))
    _, d_key = jax.random.split(jax.random.PRNGKey(seed))
    rngs = {"params": p_key, "dropout": d_key}
    batch = 1 if task == "binaries" else 4
    return network.init(rngs, jnp.ones([batch, cfg["max_seq_len"]]))["params"]


def perturb_affine(params: Any, seed: int) -> Any:
    """Replace the constant initial biases (zeros) and LayerNorm scales (ones) by random values.

    At Flax's initialisation every bias is 0 and every LayerNorm is the identity affine map, so a fixture
    made from fresh parameters could not tell a missing bias, a swapped LayerNorm scale/bias, or an
    affine-free norm from the right one. ``bias += 0.2 * N(0, 1)``, ``scale += 0.2 * N(0, 1)``, from
    ``PRNGKey(seed + 1)``; kernels, embeddings and the CLS token keep their initial values.
    """
    import jax
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(flat))
    out = {}
    for key, (path, value) in zip(keys, sorted(flat.items())):
        if path[-1] in ("bias", "scale"):
            value = value + 0.2 * jax.random.normal(key, value.shape, value.dtype)
        out[path] = value
    return traverse_util.unflatten_dict(out)


def apply_eval(network: Any, task: str, params: Any, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Network.apply`` in eval mode; returns (output, pooled head input)."""
    import jax.numpy as jnp

    x = jnp.asarray(tokens)
    if task == "binaries":
        out, state = network.apply(
            {"params": params}, x, capture_intermediates=lambda mdl, _: (mdl.name or "").startswith("Encoder_")
        )
        last = f"Encoder_{network.nlayers - 1}"
        pooled = state["intermediates"][last]["__call__"][0][:, 0]
    else:
        out, state = network.apply(
            {"params": params}, x, training=False, capture_intermediates=lambda mdl, _: mdl.name == "Encoder_0"
        )
        pooled = jnp.mean(state["intermediates"]["Encoder_0"]["__call__"][0], axis=1)
    return np.asarray(out, dtype=np.float32), np.asarray(pooled, dtype=np.float32)


def make_fixture(authors: Path, task: str, commit: str, seed: int) -> dict[str, np.ndarray]:
    """Build, initialise and apply one task's network; return the arrays to save."""
    import flax
    import HRR
    import jax
    from flax import traverse_util

    cfg = CONFIGS[task]
    module = load_authors_module(authors, task)
    network = build(module, task, cfg)
    params = perturb_affine(flax.core.unfreeze(init_params(network, task, cfg, seed)), seed)
    tokens = make_tokens(task, cfg, seed)
    out, pooled = apply_eval(network, task, params, tokens)
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    arrays: dict[str, np.ndarray] = {f"params/{k}": np.asarray(v, dtype=np.float32) for k, v in flat.items()}
    meta = {
        "task": task,
        "authors_repo": "NeuromorphicComputationResearchProgram/Hrrformer",
        "authors_commit": commit,
        "authors_file": f"{TASK_DIRS[task]}/hrrformer_mgpu.py",
        "network_kwargs": cfg,
        "training": False,
        "heads": 8 if task == "binaries" else cfg["heads"],
        "max_seq_len": cfg["max_seq_len"],
        "vocab_size": cfg["vocab_size"],
        "classes": cfg["output_size"],
        "output_kind": "softmax" if task == "binaries" else "log_softmax",
        "padding": "0 = padding (masked in the softmax only)" if task in ("listops", "text", "binaries") else "none",
        "init": f"PRNGKey({seed}) split as in their train(), ones input; then every bias and LayerNorm scale"
        f" += 0.2 * N(0, 1) from PRNGKey({seed + 1})",
        "token_seed": seed,
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "hrr": getattr(HRR, "__version__", "1.2.3")},
    }
    arrays["tokens"] = tokens
    arrays["output"] = out
    arrays["pooled"] = pooled
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    if not np.all(np.isfinite(out)):
        raise RuntimeError(f"{task}: non-finite output")
    return arrays


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write one ``<task>.npz`` per task."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", type=Path, required=True, help="checkout of the authors' Hrrformer repo")
    parser.add_argument("--commit", default=DEFAULT_COMMIT, help="the authors' commit (recorded in meta)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/authors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        arrays = make_fixture(args.authors.resolve(), task, args.commit, args.seed)
        path = args.out / f"{task}.npz"
        np.savez_compressed(path, **arrays)
        n_params = sum(v.size for k, v in arrays.items() if k.startswith("params/"))
        print(f"{task}: {path} ({path.stat().st_size} bytes, {n_params} params), output[0] = {arrays['output'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
