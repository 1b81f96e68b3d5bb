"""The documentation site keeps up with the code: every command-line option and every attack is documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hmcam.attacks import ATTACKS
from hmcam.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every command as it is typed after ``hmcam``, nested ones (``experiment at-efficiency``) included."""
    found = {}
    for name, parser in _children(build_parser()).items():
        found[name] = parser
        found.update({f"{name} {child}": nested for child, nested in _children(parser).items()})
    assert found, "the hmcam parser has no subcommands"
    return found


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
