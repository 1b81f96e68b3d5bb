"""An attack experiment on several zoos: one run per zoo seed, the claims judged on all of them together.

A conclusion should be about the method, not about one trained zoo. With two or more
``scale.zoo_seeds``, :func:`run_on_zoos` runs the experiment once per zoo (each zoo trained with
its own seed) into ``OUT/zoo-seed-K``, reads back each run's evidence (``evidence.json``) and
judges every claim on the values of all zoos at once, with a two-stage bootstrap over zoo seeds and
the images within them (:func:`hmcam.experiments.claims.judge`). ``OUT`` then holds the pooled
claims, each claim's estimate per zoo (``results.csv``), the zoos' main tables averaged over the
zoos (``zoo-mean.csv``, the table of the paper the experiment reproduces), the first zoo's figures
and a report that links the per-zoo reports. A finished zoo run is not redone.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hmcam.core.storage import atomic_write
from hmcam.experiments.claims import FIELDS as CLAIM_FIELDS
from hmcam.experiments.claims import judge
from hmcam.experiments.evidence import EVIDENCE_FILE, evidence_from_records, pool
from hmcam.experiments.framework import CLAIMS_TABLE, RunOptions, claim_table
from hmcam.experiments.setup import AttackScale, calibration_text
from hmcam.reporting.results_page import SHOWN_TABLES
from hmcam.reporting.run_folder import CONFIG_FILE, RESULTS_FILE, TABLE_FILE, RunFolder, json_ready
from hmcam.reporting.tables import markdown_table

#: The pooled folder's table: each zoo's main table (``results.csv``) averaged over the zoos, cell by cell.
ZOO_MEAN_TABLE = "zoo-mean.csv"
#: An experiment's function: a one-zoo scale and where to run it -> what its run returns.
Function = Callable[[AttackScale, RunOptions], dict[str, Any]]


def zoo_run_folder(out: Path, seed: int) -> Path:
    """The folder of the run on the zoo of ``seed`` inside the experiment's folder ``out``."""
    return out / f"zoo-seed-{seed}"


def _finished(folder: RunFolder, scale: AttackScale) -> bool:
    """Whether ``folder`` holds a finished run of ``scale`` (same settings, its page written last)."""
    if not folder.finished() or not folder.file(EVIDENCE_FILE).is_file():
        return False
    saved = json.loads(folder.file(CONFIG_FILE).read_text())
    return bool(saved.get("scale") == json_ready(dataclasses.asdict(scale)))


def run_on_zoos(function: Function, scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run ``function`` once per zoo seed of ``scale`` and judge its claims on all zoos; returns the pooled run."""
    seeds = scale.zoo_seeds
    runs: dict[int, dict[str, Any]] = {}
    evidence = {}
    for seed in seeds:
        one = dataclasses.replace(scale, zoo_seeds=(seed,))
        folder = RunFolder(zoo_run_folder(options.out, seed), "experiment")
        if not _finished(folder, one):
            function(one, dataclasses.replace(options, out=folder.path))
        runs[seed] = json.loads(folder.file(RESULTS_FILE).read_text())
        evidence[seed] = evidence_from_records(json.loads(folder.file(EVIDENCE_FILE).read_text()))
    experiment = runs[seeds[0]]["experiment"]
    claims = judge(pool(evidence))
    rows = _per_zoo_rows(claims, runs)
    tables = [_read_table(zoo_run_folder(options.out, seed) / TABLE_FILE) for seed in seeds]
    mean_rows = zoo_mean_rows(tables)
    top = options.run_folder()
    settings = dataclasses.asdict(scale)
    top.write_config({"experiment": experiment, "scale": settings, "device": options.device, "zoo_seeds": seeds})
    results = {
        "experiment": experiment,
        "scale": settings,
        "zoos": [{"seed": seed, "folder": zoo_run_folder(Path("."), seed).name} for seed in seeds],
        "claims": claims,
        SHOWN_TABLES: [ZOO_MEAN_TABLE] if mean_rows else [],
    }
    top.write_results(results)
    top.write_table(rows, list(rows[0]) if rows else ["claim"])
    top.write_table(claims, CLAIM_FIELDS, CLAIMS_TABLE)
    if mean_rows:
        top.write_table(mean_rows, list(mean_rows[0]), ZOO_MEAN_TABLE)
    figures = _copy_figures(zoo_run_folder(options.out, seeds[0]), top)
    report = _report(experiment, scale, claims, rows, figures, mean_rows)
    top.write_report(report)
    return {"out": str(top.path), **results, "report": report}


def _read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _mean_cell(cells: Sequence[str]) -> str | float:
    """One cell of :data:`ZOO_MEAN_TABLE`: the zoos' common value, their mean, or (text) each zoo's value."""
    if len(set(cells)) == 1:
        return cells[0]
    numbers = [_number(cell) for cell in cells]
    if all(number is not None for number in numbers):
        return round(statistics.fmean(number for number in numbers if number is not None), 4)
    return " / ".join(cells)


def zoo_mean_rows(tables: Sequence[Sequence[dict[str, str]]]) -> list[dict[str, Any]]:
    """The zoos' main tables averaged over the zoos, cell by cell: the paper's table at the scale's zoo seeds.

    Every zoo runs the same jobs in the same order, so rows are matched by position; a cell equal on
    every zoo (a model, an attack, N) is kept, numbers are replaced by their mean over the zoos, and
    differing text shows each zoo's value (``a / b``). Tables of different shapes give no rows.
    """
    shapes = {(len(table), tuple(table[0]) if table else ()) for table in tables}
    if len(shapes) != 1 or not tables[0]:
        return []
    columns = list(tables[0][0])
    return [
        {column: _mean_cell([row[column] or "" for row in rows]) for column in columns}
        for rows in zip(*tables, strict=True)
    ]


def _copy_figures(source: Path, top: RunFolder) -> list[str]:
    """Copy the PNG figures of one zoo's run into the experiment's folder (the page shows a folder's own)."""
    names = []
    for figure in sorted(source.glob("*.png")):
        atomic_write(top.file(figure.name), figure.read_bytes())
        names.append(figure.name)
    return names


def _per_zoo_rows(claims: list[dict[str, Any]], runs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim: its estimate on each zoo alone (that zoo's own test) and pooled, with the verdict."""
    rows = []
    for claim in claims:
        row: dict[str, Any] = {"claim": claim["claim"]}
        for seed, run in runs.items():
            alone = next(record for record in run["claims"] if record["name"] == claim["name"])
            row[f"zoo seed {seed}"] = alone["estimate"]
        row["pooled"] = claim["estimate"]
        row["verdict"] = claim["verdict"]
        rows.append(row)
    return rows


def _report(
    experiment: str,
    scale: AttackScale,
    claims: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    figures: list[str],
    mean_rows: list[dict[str, Any]],
) -> str:
    folders = {seed: zoo_run_folder(Path("."), seed).name for seed in scale.zoo_seeds}
    links = ", ".join(f"[zoo seed {seed}]({folder}/report.md)" for seed, folder in folders.items())
    lines = [
        f"## {experiment}: {len(scale.zoo_seeds)} zoos",
        "",
        f"The experiment ran once on each of {len(scale.zoo_seeds)} zoos, each trained with its own seed "
        f"({links}: tables and figures per zoo). Every claim below is judged on the images of all zoos "
        "together: the estimate is the mean of the per-zoo means, its 95% interval and p-values come from "
        "a two-stage bootstrap (zoo seeds drawn with replacement, then the images within each), and Holm's "
        "adjustment runs over the claims of this experiment.",
        "",
        claim_table(claims),
        "",
        "### Each claim per zoo",
        "",
        "The estimate of each zoo's run alone, beside the pooled one.",
        "",
    ]
    if rows:
        lines.append(markdown_table(rows, list(rows[0])))
    if mean_rows:
        lines += [
            "",
            "### The main table, mean over the zoos",
            "",
            f"Each zoo's `results.csv`, averaged over the {len(scale.zoo_seeds)} zoos cell by cell "
            f"(`{ZOO_MEAN_TABLE}`).",
            "",
            markdown_table(mean_rows, list(mean_rows[0])),
        ]
    if figures:
        lines += ["", f"### Figures of zoo seed {scale.zoo_seeds[0]}", ""]
        lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n\n" + calibration_text(scale)
