"""The documentation site keeps up with the code: every command-line option and every attack is documented."""

from __future__ import annotations

import argparse
import json
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


def _speed_rows() -> list[list[str]]:
    text = (DOCS / "evaluation.md").read_text()
    section = text.split("## Speed", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.strip("|").split("|")
        for line in section.splitlines()
        if line.startswith("| natural") or line.startswith("| adversarial")
    ]
    return [[cell.strip().strip("*") for cell in row] for row in rows]


def test_the_speed_table_is_the_committed_benchmark_result() -> None:
    result = json.loads((DOCS.parent / "benchmarks" / "evaluation-result.json").read_text())
    rows = _speed_rows()
    assert len(rows) == 10
    section = (DOCS / "evaluation.md").read_text().split("## Speed", 1)[1].split("\n## ", 1)[0]
    for model in ("natural", "adversarial"):
        for variant in ("hmcam_autoattack", "torchattacks_autoattack"):
            assert f"{100 * result[model]['robust_accuracy'][variant]:.2f}%" in section
    for model, attack, reached, ours, theirs, ratio in rows:
        measured = result[model]
        if attack == "all":
            expected = (
                measured["seconds"]["hmcam_autoattack"],
                measured["seconds"]["torchattacks_autoattack"],
                measured["hmcam_autoattack_over_torchattacks_autoattack"],
            )
        else:
            by_attack = measured["autoattack_seconds_by_attack"][attack]
            expected = (by_attack["hmcam"], by_attack["torchattacks"], by_attack["ratio"])
            details = {a["name"]: a for a in measured["hmcam_autoattack_details"]["attacks"]}
            assert int(reached) == details[attack]["reached"]
        assert (float(ours), float(theirs), float(ratio)) == pytest.approx(expected, abs=0.006)
