"""The documentation site keeps up with the code: every command-line option and every attack is documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hmcam.attacks import ATTACKS
from hmcam.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the hmcam parser has no subcommands")


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_line_option_is_in_the_cli_page(command: str) -> None:
    page = (DOCS / "cli.md").read_text()
    assert f"hmcam {command}" in page
    options = [
        option
        for action in _subcommands()[command]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    missing = [option for option in options if f"`{option}`" not in page]
    assert missing == [], f"docs/cli.md does not document {missing} of `hmcam {command}`"


def test_every_attack_has_a_reference_block_on_the_attacks_page() -> None:
    page = (DOCS / "attacks.md").read_text()
    classes = sorted({klass.__name__ for klass in ATTACKS.values()})
    missing = [name for name in classes if f"::: hmcam.attacks.{name}\n" not in page]
    assert missing == [], f"docs/attacks.md has no `::: hmcam.attacks.NAME` block for {missing}"
