"""Machine-readable and human-readable tables: CSV and Markdown from a list of records."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
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


#: The columns of a table of judged claims (:func:`hmcam.experiments.claims.judge`), in reports and pages.
CLAIM_COLUMNS = ("claim", "paper", "ours", "estimate [95% CI]", "p (Holm)", "verdict")


def interval_text(claim: Mapping[str, Any]) -> str:
    """``estimate [low, high]`` of a judged claim, or ``-`` when it is untestable."""
    if claim.get("estimate") is None:
        return "-"
    return f"{claim['estimate']:+.2f} [{claim['ci_low']:+.2f}, {claim['ci_high']:+.2f}]"


def claim_rows(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of :data:`CLAIM_COLUMNS` per judged claim: the interval beside the estimate, Holm's p."""
    return [
        {
            "claim": claim.get("claim"),
            "paper": claim.get("paper"),
            "ours": claim.get("ours"),
            "estimate [95% CI]": interval_text(claim),
            "p (Holm)": "-" if claim.get("p_adjusted") is None else f"{claim['p_adjusted']:.2g}",
            "verdict": claim.get("verdict"),
        }
        for claim in claims
    ]
