"""Machine-readable and human-readable tables: CSV and Markdown from a list of records."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from hmcam.core.storage import atomic_write


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table with one row per record and the given columns (missing values as '-')."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(record.get(column)) for column in columns) + " |" for record in records]
    return "\n".join(lines) + "\n"


def write_csv(
    path: str | os.PathLike[str],
    records: Sequence[dict[str, Any]],
    columns: Sequence[str],
    lineterminator: str = "\r\n",
) -> None:
    """Write the records as CSV, atomically; lines end with ``lineterminator`` (the csv module's CRLF by default)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(records)
    atomic_write(path, buffer.getvalue().encode())
