"""Markdown and CSV tables, checked character by character."""

from __future__ import annotations

from hmcam.reporting.tables import markdown_table, write_csv

RECORDS = [
    {"attack": "pgd", "success_rate": 0.912345, "samples": None},
    {"attack": "hmcam", "success_rate": 0.93, "samples": 2},
]


def test_markdown_table() -> None:
    assert markdown_table(RECORDS, ["attack", "samples", "success_rate"]) == (
        "| attack | samples | success_rate |\n|---|---|---|\n| pgd | - | 0.9123 |\n| hmcam | 2 | 0.93 |\n"
    )


def test_csv(tmp_path) -> None:
    write_csv(tmp_path / "r.csv", RECORDS, ["attack", "success_rate"])
    assert (tmp_path / "r.csv").read_text().splitlines() == ["attack,success_rate", "pgd,0.912345", "hmcam,0.93"]
