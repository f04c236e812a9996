"""Guides run end to end (at tiny size) on every backend."""

import os
import runpy

import pytest

GUIDES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides")


@pytest.mark.parametrize(
    "name",
    [
        "getting_started.py",
        "evaluate_and_train_on_your_data.py",
        "lit.py",
        "three_towers.py",
        "protoclip.py",
    ],
)
def test_guide_runs(name, monkeypatch, capsys):
    monkeypatch.setenv("GUIDE_EPOCHS", "2")
    runpy.run_path(os.path.join(GUIDES, name), run_name="__main__")
    assert "zero-shot accuracy" in capsys.readouterr().out
