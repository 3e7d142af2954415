"""research.step_cost: interleaved CPU-time steps of a preset and its variants."""

from __future__ import annotations

import sys

import pytest

from research import step_cost


def test_prints_the_preset_each_option_and_all_of_them(monkeypatch, capsys):
    argv = ["step_cost", "image", "--dtype", "float32", "--set", "short_conv=2", "--set", "output_gate=true"]
    monkeypatch.setattr(sys, "argv", [*argv, "--repeats", "1"])
    step_cost.main()
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[2] for line in lines]
    assert names == ["preset", "short_conv=2", "output_gate=True", "all"]
    assert lines[0].endswith("+0 %")


def test_an_unknown_option_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["step_cost", "image", "--set", "no_such_field=1"])
    with pytest.raises(SystemExit):
        step_cost.main()
