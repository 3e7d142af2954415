"""The registry of attention kinds (hrrformer.kinds): its capabilities hold, its options are
checked, and no other module compares kind names."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import torch

from hrrformer import Hrrformer, HrrformerConfig, kinds
from hrrformer.explain import attention_maps
from hrrformer.parallel import enable_sequence_parallel
from hrrformer.train import TrainConfig, add_arguments, check_sequence_parallel, config_from_args

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hrrformer"


def tiny(**overrides) -> HrrformerConfig:
    values = dict(vocab_size=20, max_len=32, dim=8, heads=2, layers=1, dropout=0.0)
    return HrrformerConfig(**{**values, **overrides})


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_every_kind_builds_its_layer_with_the_parts(name):
    kind = kinds.get(name)
    model = Hrrformer(tiny(attention=name, short_conv=3, output_gate=True, chunk_size=4 if kind.chunkable else None))
    layer = model.encoder.blocks[0].attn
    assert type(layer) is kind.layer and kinds.of_layer(layer) is kind
    assert layer.short_conv is not None and layer.gate is not None
    tokens = torch.randint(1, 20, (2, 9))
    assert model(tokens).shape == (2, 2)


def test_the_registry_has_the_three_kinds_and_their_capabilities():
    table = {
        k.name: (k.chunkable, k.sequence_parallel, k.position_weights, k.mixes_positions) for k in kinds.KINDS.values()
    }
    assert table == {
        "hrr": (True, True, True, True),
        "softmax": (False, False, False, True),
        "none": (True, True, False, False),
    }
    assert set(kinds.options_of("hrr")) == set(kinds.KIND_OPTIONS)
    assert kinds.untaken_options("softmax") == kinds.untaken_options("none") == kinds.KIND_OPTIONS
    with pytest.raises(ValueError, match="unknown attention 'nope'; known: hrr, softmax, none"):
        kinds.get("nope")


@pytest.mark.parametrize("option", list(kinds.KIND_OPTIONS))
@pytest.mark.parametrize("name", ["softmax", "none"])
def test_options_a_kind_does_not_take_are_refused(name, option):
    value = {"projection": True, "length_scale": True, "score_scale": 2.0, "hrr_output": "retrieved", "memories": 2}
    value["memory_routing"] = "key"
    overrides = {option: value.get(option, True)}
    if option == "learn_score_scale":
        overrides["score_scale"] = 2.0  # refused first itself: score_scale is HRR's too
    with pytest.raises(ValueError, match=r"HrrformerConfig\.\w+ needs attention='hrr'"):
        tiny(attention=name, **overrides)


def test_chunking_sequence_parallelism_and_maps_follow_the_capabilities():
    with pytest.raises(ValueError, match=r"chunk_size needs attention in \('hrr', 'none'\)"):
        tiny(attention="softmax", chunk_size=4)
    group = object()  # the checks come before the group is used
    with pytest.raises(ValueError, match="ring attention"):
        enable_sequence_parallel(Hrrformer(tiny(attention="softmax")), group)
    none = enable_sequence_parallel(Hrrformer(tiny(attention="none")), group)
    assert none.encoder.sequence_parallel_group is group
    with pytest.raises(ValueError, match="--sequence-parallel 2 needs --attention hrr, none"):
        check_sequence_parallel(TrainConfig(attention="softmax", sequence_parallel=2))
    check_sequence_parallel(TrainConfig(attention="none", sequence_parallel=2))
    for name, match in (("softmax", "T × T"), ("none", "no attention weights")):
        with pytest.raises(ValueError, match=match):
            attention_maps(Hrrformer(tiny(attention=name)), torch.ones(1, 5, dtype=torch.long))


def test_the_flags_of_the_parts_and_the_kinds(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert all(flag in parser.format_help() for flag in ("--short-conv K", "--output-gate", "{hrr,softmax,none}"))
    args = ["--task", "image", "--preset", "cpu", "--attention", "none", "--short-conv", "4", "--output-gate"]
    model = config_from_args(parser.parse_args(args)).model
    assert (model["attention"], model["short_conv"], model["output_gate"]) == ("none", 4, True)
    assert {k: model[k] for k in kinds.KIND_OPTIONS} == kinds.KIND_OPTIONS  # the preset's HRR variant dropped
    assert config_from_args(parser.parse_args([*args, "--short-conv", "none"])).model["short_conv"] is None


def _kind_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing a kind name, or an ``attention`` value with a string."""
    names = set(kinds.KINDS) - {"none"}  # "none" is also how a flag spells None

    def is_kind(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_kind, node.elts))

    def about_attention(node: ast.AST) -> bool:
        return "attention" in ast.unparse(node) and not isinstance(node, ast.Constant)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            strings = [s for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
            if any(map(is_kind, sides)) or (strings and any(map(about_attention, sides))):
                found.append(node.lineno)
    return found


def test_no_module_but_the_registry_compares_kind_names():
    offending = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if path.name != "kinds.py" and (lines := _kind_comparisons(ast.parse(path.read_text())))
    }
    assert not offending, offending
    assert _kind_comparisons(ast.parse('if config.attention == "softmax": pass'))  # the check sees one


def test_cls_pooling_needs_a_kind_that_mixes_positions_and_no_causal_mask():
    """The CLS token sits at position 0 and the short convolution is causal: without attention, or
    with causal attention, its output is the CLS embedding alone, the same for every input, so the
    config refuses it. With non-causal attention, or with mean pooling, the logits depend on the tokens."""
    with pytest.raises(ValueError, match=r"pooling='cls' needs attention in \('hrr', 'softmax'\).*--pooling mean"):
        tiny(attention="none", pooling="cls", short_conv=4)
    for name in ("hrr", "softmax"):  # a causal layer looks back only: the same blind CLS token
        with pytest.raises(ValueError, match=r"pooling='cls' needs causal=False: with a causal layer .*--pooling mean"):
            tiny(attention=name, pooling="cls", causal=True)
    tokens = torch.randint(1, 20, (2, 9), generator=torch.Generator().manual_seed(0))
    for name, pooling in (("hrr", "cls"), ("softmax", "cls"), ("none", "mean")):
        torch.manual_seed(0)
        logits = Hrrformer(tiny(attention=name, pooling=pooling, short_conv=4)).eval()(tokens)  # (2, C)
        assert not torch.allclose(logits[0], logits[1]), (name, pooling)
