"""The README's Python examples run as written and do what their comments say.

Each ```python block of README.md is executed as it stands; only the names a block leaves to the
reader (``tokens``, ``params``) are supplied. A change to the API that breaks an example fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from test_authors_fixtures import load

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_block(index: int, **given: Any) -> dict[str, Any]:
    """Execute block ``index`` with the names in ``given`` defined; return its namespace."""
    namespace: dict[str, Any] = dict(given)
    exec(compile(python_blocks()[index], f"README.md python block {index + 1}", "exec"), namespace)
    return namespace


def test_the_readme_shows_the_layer_the_model_and_the_authors_loader() -> None:
    blocks = python_blocks()
    assert len(blocks) == 3
    assert "HrrAttention(" in blocks[0] and "HrrformerConfig(" in blocks[1] and "from_flax(" in blocks[2]


def test_layer_example_pads_without_changing_real_positions_and_is_causal() -> None:
    torch.manual_seed(0)
    ns = run_block(0)
    layer, x, pad, y = ns["layer"], ns["x"], ns["pad"], ns["y"]
    assert y.shape == x.shape and torch.isfinite(y).all()
    real = int((~pad[1]).sum())  # the padded row's real prefix, alone: same outputs
    with torch.no_grad():
        alone = layer(x[1:, :real])  # (1, real, E)
    torch.testing.assert_close(y[1:, :real].detach(), alone, rtol=1e-4, atol=1e-5)

    q, k, v, out = ns["q"], ns["k"], ns["v"], ns["out"]
    assert out.shape == q.shape
    cut = 300  # causal: a prefix of the inputs gives the same prefix of the outputs
    prefix = ns["hrr_attention"](q[..., :cut, :], k[..., :cut, :], v[..., :cut, :], causal=True)
    torch.testing.assert_close(out[..., :cut, :], prefix, rtol=1e-4, atol=1e-6)


def test_model_example_gives_class_logits() -> None:
    torch.manual_seed(0)
    tokens = torch.randint(1, 257, (2, 300))
    tokens[1, 200:] = 0  # padding
    ns = run_block(1, tokens=tokens)
    model, logits = ns["model"], ns["logits"]
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[1:, :200]), model(tokens[1:]), rtol=1e-4, atol=1e-5)


def test_authors_example_gives_log_probabilities_from_their_parameters() -> None:
    params, tokens, _, _, meta = load("listops")
    ns = run_block(2, params=params, tokens=torch.from_numpy(tokens).long())
    log_probs = ns["log_probs"]
    assert log_probs.shape == (tokens.shape[0], meta["classes"])
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(tokens.shape[0]))
    assert not ns["model"].training


def test_the_readme_is_a_short_guide() -> None:
    """At most 250 lines, the two set-up commands first; details live in docs/GUIDE.md."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)
    commands = [line for line in lines if line.startswith("bash scripts/setup.sh")]
    assert commands[:2] == [
        "bash scripts/setup.sh && .venv/bin/hrrformer train",
        "bash scripts/setup.sh && .venv/bin/python -m pytest -q",
    ]
    for link in re.findall(r"\]\(([^)#]+)", README.read_text(encoding="utf-8")):
        assert (README.parent / link).exists(), link
