"""The one registry of experiments feeds the command line, ``hmcam reproduce`` and the docs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hmcam.cli import experiment as experiment_cli
from hmcam.experiments.registry import EXPERIMENTS, REPRODUCED, SCALE_NAMES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "experiments.md"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_entry_loads_the_experiment_of_its_name_at_every_scale(name: str) -> None:
    experiment = EXPERIMENTS[name].load()
    assert experiment.name == name and experiment.claims
    if EXPERIMENTS[name].kind != "tour":
        assert set(SCALE_NAMES) <= set(experiment.scales) and set(SCALE_NAMES) <= set(experiment.settings)


def test_the_command_line_offers_every_experiment_the_registry_holds() -> None:
    parser = argparse.ArgumentParser()
    experiment_cli.register(parser.add_subparsers())
    offered = parser._subparsers._group_actions[0].choices["experiment"]._subparsers._group_actions[0].choices
    assert list(offered) == [name for name, entry in EXPERIMENTS.items() if entry.kind != "tour"]
    assert list(REPRODUCED) == list(offered)


def test_the_docs_describe_every_experiment_as_the_registry_does() -> None:
    text = DOCS.read_text()
    for name, entry in EXPERIMENTS.items():
        assert f"`{name}`" in text and entry.reproduces in text, name
