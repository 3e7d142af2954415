"""Options defined once: every config field has its help and (unless the data sets it) its flag;
presets, flags and config.json are generated from the dataclasses."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Literal

import pytest

from hrrformer.config import HRR_ONLY_OPTIONS, HrrformerConfig
from hrrformer.model import HrrformerConfig as ReExported
from hrrformer.options import add_flags, check_choices, flag_name, given, option
from hrrformer.tasks import RETRIEVED_VARIANT, TASKS
from hrrformer.train import RESUMABLE_CHANGES, TrainConfig, add_arguments, config_from_args

#: Set from the data or the launcher (or, TrainConfig.attention, a copy of the model's): no flag.
NOT_FLAGS = {
    HrrformerConfig: {"vocab_size", "num_classes", "pad_id"},
    TrainConfig: {"attention", "model", "pair", "class_names", "world_size"},
}


def train_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    monkeypatch.setenv("COLUMNS", "10000")  # help on one line per flag
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_model_config_is_re_exported_from_model():
    assert ReExported is HrrformerConfig


@pytest.mark.parametrize("cls", [HrrformerConfig, TrainConfig])
def test_every_option_has_help_and_its_flag_shows_it(cls, monkeypatch):
    help_text = train_parser(monkeypatch).format_help()
    for f in fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        if f.metadata["flag"]:
            assert re.search(rf"^  (--[\w-]+, )?{flag_name(f)}[ ,\n]", help_text, re.MULTILINE), f.name
            assert f.metadata["help"] in help_text, f.name
    flags = {f.name for f in fields(cls) if f.metadata["flag"]}
    assert flags == {f.name for f in fields(cls)} - NOT_FLAGS[cls]


def test_existing_flags_keep_their_names(monkeypatch):
    help_text = train_parser(monkeypatch).format_help()
    existing = [
        *("--task", "--data", "--out", "--preset", "--attention", "--layers", "--dim", "--heads", "--mlp-dim"),
        *("--max-len", "--batch-size", "--epochs", "--lr", "--dropout", "--limit", "--skip-bad", "--pooling"),
        *("--pos-embedding", "--norm", "--seed", "--amp", "--device", "--compile", "--activation-checkpointing"),
        *("--pad-multiple", "--chunk-size", "--length-scale", "--workers", "--bucket", "--log-every"),
        *("--save-every", "--max-minutes", "--sequence-parallel", "--no-progress", "--resume", "--overwrite"),
    ]
    for flag in existing:
        assert re.search(rf"^  {flag}[ ,\n]", help_text, re.MULTILINE), flag


def test_presets_are_partial_dicts_of_config_fields():
    names = {f.name for f in fields(HrrformerConfig)} | {f.name for f in fields(TrainConfig)}
    for spec in TASKS.values():
        for name, preset in spec.presets.items():
            assert set(preset.options) <= names, (spec.name, name, set(preset.options) - names)


def test_flags_override_the_preset_which_overrides_the_defaults(monkeypatch):
    parser = train_parser(monkeypatch)
    demo = config_from_args(parser.parse_args(["--task", "listops"]))
    preset = TASKS["listops"].presets["demo"].options
    assert demo.model["dim"] == preset["dim"] and demo.max_minutes == preset["max_minutes"]
    assert demo.lr_decay == 0.9 and demo.model["norm"] == "pre" and demo.progress is True
    args = ["--dim", "8", "--heads", "2", "--lr-decay", "0.5", "--causal", "--max-minutes", "none", "--no-progress"]
    custom = config_from_args(parser.parse_args(["--task", "listops", *args]))
    assert custom.model["dim"] == 8 and custom.model["causal"] is True and custom.lr_decay == 0.5
    assert custom.max_minutes is None and custom.progress is False  # "none" turns the preset's budget off
    assert custom.model["layers"] == preset["layers"]


def test_a_presets_hrr_variant_applies_to_hrr_attention_only(monkeypatch):
    """The Image cpu preset's HRR variant: HRR gets it, softmax drops it, --no-X and "none" turn
    it back into the paper's formula, and an explicit HRR-only flag with softmax is still refused."""
    parser = train_parser(monkeypatch)
    image = ["--task", "image", "--preset", "cpu"]

    def variant(args: list[str]) -> dict:
        return {k: config_from_args(parser.parse_args(args)).model[k] for k in HRR_ONLY_OPTIONS}

    assert variant(image) == {**HRR_ONLY_OPTIONS, **RETRIEVED_VARIANT}
    assert variant([*image, "--attention", "softmax"]) == HRR_ONLY_OPTIONS
    paper = ["--hrr-output", "value", "--no-length-scale", "--score-scale", "none", "--no-learn-score-scale"]
    assert variant([*image, *paper]) == HRR_ONLY_OPTIONS
    with pytest.raises(ValueError, match="length_scale needs attention='hrr'"):
        config_from_args(parser.parse_args([*image, "--attention", "softmax", "--length-scale"]))


@pytest.mark.parametrize("task", ["text", "listops", "image"])
def test_these_cpu_presets_have_no_final_norm_and_the_flag_gives_it_back(monkeypatch, task):
    """The Text, ListOps and Image cpu presets pool without the final LayerNorm (measured:
    EXPERIMENTS.md); their demo presets keep it, and --final-norm on the command line wins."""
    parser = train_parser(monkeypatch)

    def final_norm(args: list[str]) -> bool:
        return config_from_args(parser.parse_args(["--task", task, *args])).model["final_norm"]

    assert not final_norm(["--preset", "cpu"])
    assert final_norm(["--preset", "cpu", "--final-norm"])
    assert final_norm(["--preset", "demo"])
    assert not final_norm(["--preset", "cpu", "--attention", "softmax"])  # the surround, not an HRR-only option


def test_every_model_flag_reaches_config_json_and_back(monkeypatch):
    """Each model option given as a flag lands in the run config's "model", survives a JSON round
    trip (what config.json and --resume read) and builds the model."""
    parser = train_parser(monkeypatch)
    args = ["--task", "listops", "--chunk-size", "64", "--projection", "--norm", "post", "--mlp-dim", "24"]
    config = config_from_args(parser.parse_args(args))
    again = TrainConfig(**json.loads(json.dumps(asdict(config))))
    assert again == config
    assert again.model["chunk_size"] == 64 and again.model["projection"] and again.model["norm"] == "post"
    model = HrrformerConfig.from_dict(again.model)
    assert model.mlp_dim == 24 and model.chunk_size == 64


def test_bad_values_are_refused_naming_the_flag(monkeypatch, capsys):
    parser = train_parser(monkeypatch)
    for bad, flag in (
        (["--norm", "mid"], "--norm"),
        (["--dim", "x"], "--dim"),
        (["--max-minutes", "y"], "--max-minutes"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert f"argument {flag}" in capsys.readouterr().err


def test_resumable_changes_are_marked_on_the_fields():
    expected = {"epochs", "device", "workers", "log_every", "save_every", "progress", "data", "max_minutes"}
    assert expected == RESUMABLE_CHANGES


def test_option_needs_help_and_gives_flags_of_any_config_class():
    with pytest.raises(ValueError, match="help"):
        option(1)

    @dataclass
    class Config:
        width: int = option(3, "how wide")
        mode: Literal["a", "b"] = option("a", "which mode")
        fast: bool = option(False, "go fast")
        quiet: bool = option(True, "say little")
        note: str | None = option(None, "a note", flag=False)

    parser = argparse.ArgumentParser()
    add_flags(parser, Config)
    assert given(parser.parse_args([]), Config) == {}
    values = given(parser.parse_args(["--width", "5", "--mode", "b", "--fast", "--no-quiet"]), Config)
    assert values == {"width": 5, "mode": "b", "fast": True, "quiet": False}
    check_choices(Config(**values))
    with pytest.raises(ValueError, match=r"Config.mode must be one of \('a', 'b'\), got 'c'"):
        check_choices(Config(mode="c"))

    preset_parser = argparse.ArgumentParser()  # "fast" set by a preset: --no-fast turns it off again
    add_flags(preset_parser, Config, from_preset={"fast"})
    assert given(preset_parser.parse_args(["--no-fast"]), Config) == {"fast": False}
    assert given(preset_parser.parse_args(["--fast", "--no-quiet"]), Config) == {"fast": True, "quiet": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-fast"])  # without a preset that sets it, the flag only turns it on

    @dataclass
    class Unsupported:
        sizes: list[int] = option(help="no flag form", factory=list)

    with pytest.raises(TypeError, match="sizes"):
        add_flags(argparse.ArgumentParser(), Unsupported)
