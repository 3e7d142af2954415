"""research.mqar_figure: accuracy against width per model and shape, from finished runs, beside the
ideal memory's capacity."""

from __future__ import annotations

import json

import pytest

from research.mqar_figure import collect, main, parse_model


def _finish(run, accuracy):
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"test_accuracy": accuracy}))


def test_the_points_are_the_finished_runs_and_the_figure_is_written(tmp_path):
    pattern = str(tmp_path / "T{T}-P{P}-d{D}-model")
    _finish(tmp_path / "T64-P4-d64-model", 0.5)
    _finish(tmp_path / "T64-P4-d128-model", 0.9)
    (tmp_path / "T64-P4-d256-model").mkdir()  # unfinished: no point
    table = collect([("m", pattern)], [(64, 4), (128, 8)], [64, 128, 256])
    assert table == {"64-4": {"m": {64: 0.5, 128: 0.9}}, "128-8": {}}
    _finish(tmp_path / "T64-P4-d128-short", 0.7)
    first = collect([("m", str(tmp_path / "T{T}-P{P}-d{D}-short") + "|" + pattern)], [(64, 4)], [64, 128])
    assert first == {"64-4": {"m": {64: 0.5, 128: 0.7}}}  # the first pattern's run where it has one
    out = tmp_path / "fig.png"
    main([f"m={pattern}", "--shapes", "64:4,128:8", "--widths", "64,128", "--trials", "8", "--out", str(out)])
    assert out.stat().st_size > 1000
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["runs"]["64-4"]["m"] == {"64": 0.5, "128": 0.9}
    ideal = numbers["ideal_memory"]["64-4"]
    assert set(ideal) == {"one memory", "32 routed memories"}


def test_a_model_needs_a_label_and_a_pattern():
    assert parse_model("a=b{D}") == ("a", "b{D}")
    with pytest.raises(Exception, match="LABEL=PATTERN"):
        parse_model("nolabel")
