"""hrrformer.authors.from_flax: our model with the authors' weights reproduces their five networks.

The fixtures (tests/fixtures/authors/*.npz) hold their parameters, tokens and outputs, made by running
their JAX code (research/authors_fixtures.py); tests/test_authors_fixtures.py checks them against a numpy
rebuild. Here our PyTorch model, converted, must match their outputs to 1e-4 in float32.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from hrrformer.authors import AUTHORS_TASKS, authors_config, from_flax
from hrrformer.tasks import AUTHORS_NETWORKS, get_preset
from hrrformer.train import add_arguments, config_from_args
from test_authors_fixtures import TOL, load

#: Measured largest |ours − theirs| per task is below 1e-6; the issue's tolerance is 1e-4.
TIGHT = 2e-6


def _ours(task: str, model: torch.nn.Module, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(our output in their form: log_softmax, or softmax for binaries; our pooled features)."""
    with torch.no_grad():
        x = torch.from_numpy(tokens.astype(np.int64))
        logits, pooled = model(x), model.encoder(x)
    out = logits.softmax(-1) if task == "binaries" else logits.log_softmax(-1)
    return out.numpy(), pooled.numpy()


@pytest.mark.parametrize("task", AUTHORS_TASKS)
def test_from_flax_reproduces_the_authors(task: str) -> None:
    params, tokens, out, pooled, meta = load(task)
    model = from_flax(task, params, heads=meta["heads"], max_len=meta["max_seq_len"])
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    ours, ours_pooled = _ours(task, model, tokens)
    assert ours.dtype == np.float32 and ours.shape == out.shape
    np.testing.assert_allclose(ours_pooled, pooled, atol=TOL, rtol=0)
    np.testing.assert_allclose(ours, out, atol=TOL, rtol=0)
    assert np.abs(ours - out).max() < TIGHT


@pytest.mark.parametrize("task", AUTHORS_TASKS)
def test_sizes_are_inferred_from_the_arrays(task: str) -> None:
    params, tokens, out, _, meta = load(task)
    config = authors_config(task, params, heads=meta["heads"], max_len=meta["max_seq_len"])
    kwargs = meta["network_kwargs"]
    assert (config.vocab_size, config.num_classes) == (meta["vocab_size"], meta["classes"])
    assert config.dim == kwargs["embed_size"] and config.heads == meta["heads"]
    assert config.layers == kwargs.get("n_layer", kwargs.get("nlayers"))
    assert config.max_len == meta["max_seq_len"]
    assert {k: getattr(config, k) for k in AUTHORS_NETWORKS[task]} == AUTHORS_NETWORKS[task]
    if task in ("listops", "pathfinder", "binaries"):  # learned positions: T from the table
        assert authors_config(task, params, heads=meta["heads"]).max_len == meta["max_seq_len"]
        with pytest.raises(ValueError, match="position table"):
            authors_config(task, params, heads=meta["heads"], max_len=meta["max_seq_len"] + 1)
    else:  # sinusoidal: the paper's T by default, and any T ≥ the input gives the same output
        assert authors_config(task, params).max_len == get_preset(task, "paper").options["max_len"]
        model = from_flax(task, params, heads=meta["heads"])
        np.testing.assert_allclose(_ours(task, model, tokens)[0], out, atol=TOL, rtol=0)


def test_binaries_has_eight_heads_and_image_tokens_have_no_padding() -> None:
    params = load("binaries")[0]
    assert authors_config("binaries", params).heads == 8
    with pytest.raises(ValueError, match="8 heads"):
        authors_config("binaries", params, heads=4)
    params, tokens, *_ = load("image")
    assert (tokens == 0).any()  # pixel value 0 is a real pixel: masking it would change the output
    assert authors_config("image", params).pad_id is None


def test_bad_parameters_are_refused() -> None:
    params, *_ = load("listops")
    with pytest.raises(ValueError, match="unknown task"):
        from_flax("retrieval", params)
    with pytest.raises(ValueError, match="not in the authors' listops network"):
        from_flax("listops", {**params, "Dense_2/kernel": np.zeros((2, 2), np.float32)})
    missing = {k: v for k, v in params.items() if not k.endswith("MLP_0/Dense_1/kernel")}
    with pytest.raises(ValueError, match="missing"):
        from_flax("listops", missing)
    key = "Encoder_0/EncoderLayer_1/SelfAttention_0/output/kernel"
    with pytest.raises(ValueError, match=r"output/kernel has shape \(15, 16\), expected \(16, 16\)"):
        from_flax("listops", {**params, key: np.zeros((16, 15), np.float32)})
    prefixed = {f"params/{k}": v for k, v in params.items()}
    assert from_flax("listops", prefixed, heads=2).config == from_flax("listops", params, heads=2).config


# Exact-erf GELU instead of Flax's tanh form moves ListOps by 3.8e-4 and Image by 2.2e-4 (measured by
# the numpy rebuild), so there the fixture tells the two apart.
@pytest.mark.parametrize("task", ["listops", "image"])
def test_the_exact_gelu_would_fail(task: str) -> None:
    params, tokens, out, _, meta = load(task)
    model = from_flax(task, params, heads=meta["heads"])
    config = dataclasses.replace(model.config, mlp_activation="gelu", head_activation="gelu")
    wrong = type(model)(config).eval()
    wrong.load_state_dict(model.state_dict())
    assert np.abs(_ours(task, wrong, tokens)[0] - out).max() > 2 * TOL


@pytest.mark.parametrize("task", ["listops", "text", "binaries"])
def test_pad_exact_attention_would_fail(task: str) -> None:
    """Our default (pads out of β and of the mean) is not the authors' network."""
    params, tokens, out, _, meta = load(task)
    model = from_flax(task, params, heads=meta["heads"])
    wrong = type(model)(dataclasses.replace(model.config, authors_padding=False)).eval()
    wrong.load_state_dict(model.state_dict())
    assert np.abs(_ours(task, wrong, tokens)[0] - out).max() > 2 * TOL


@pytest.mark.parametrize(
    "task", ["listops", "text", "retrieval", "imdb-pairs", "image", "pathfinder", "pathx", "binaries"]
)
def test_paper_presets_are_the_authors_networks(task: str) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--task", task, "--preset", "paper"]))
    network = AUTHORS_NETWORKS[{"imdb-pairs": "retrieval", "pathx": "pathfinder"}.get(task, task)]
    assert {k: config.model[k] for k in network} == network
    decay = {"listops": 0.9, "text": 0.9, "retrieval": 0.9, "imdb-pairs": 0.9, "binaries": 0.85}.get(task, 0.95)
    assert (config.lr_decay, config.grad_clip) == (decay, 0.0)
    assert config.label_smoothing == (0.0 if task == "binaries" else 0.1)
    ratio = {"text": 2, "pathfinder": 1 / 4, "pathx": 1 / 4, "binaries": 2}.get(task, 1 / 2)
    assert config.model["mlp_dim"] == ratio * config.model["dim"]
    cpu = config_from_args(parser.parse_args(["--task", task, "--preset", "cpu"]))
    assert (cpu.lr_decay, cpu.grad_clip, cpu.label_smoothing) == (0.9, 1.0, 0.1)  # ours, unchanged
    assert not cpu.model["authors_padding"] and cpu.model["norm_eps"] == 1e-5
    # the final norm is the cpu preset's own measured choice (tests/test_options.py), not the authors'
    assert cpu.model["final_norm"] == get_preset(task, "cpu").options.get("final_norm", True)
