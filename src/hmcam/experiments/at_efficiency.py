"""Adversarial training at equal cost (paper Tables 4, 5, 7 and Fig. 5): every method, its robustness and its time.

:func:`run_efficiency` trains every arm of a scale's studies with every seed, scores each final
model, and writes the run folder's tables, curves and report. The plan (:data:`SCALES`) lives in
:mod:`hmcam.experiments.at_efficiency_plan`, one run in :mod:`~hmcam.experiments.at_efficiency_run`,
the statistics and the declared claims (judged over seeds by :mod:`hmcam.experiments.claims`) in
:mod:`~hmcam.experiments.at_efficiency_claims` and the report in
:mod:`~hmcam.experiments.at_efficiency_report`. What it measures and how:
``docs/experiments.md`` (Adversarial training at equal cost); its files: ``docs/outputs.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hmcam.experiments.at_efficiency_claims import (
    CLAIMS,
    compare,
    judge_studies,
    oscillation,
    spread_summary,
    study_evidence,
    summarize,
    sweep_claims,
)
from hmcam.experiments.at_efficiency_plan import (
    ATTACKS,
    METRICS,
    SCALES,
    Arm,
    Scale,
    Study,
    arm_epochs,
    plan,
    planned_passes,
    restrict,
    sweep_studies,
)
from hmcam.experiments.at_efficiency_report import write_report
from hmcam.experiments.at_efficiency_run import run_one
from hmcam.reporting.run_folder import RunFolder

__all__ = [
    "ATTACKS",
    "CLAIMS",
    "METRICS",
    "SCALES",
    "Arm",
    "Scale",
    "Study",
    "arm_epochs",
    "compare",
    "judge_studies",
    "oscillation",
    "plan",
    "planned_passes",
    "restrict",
    "run_efficiency",
    "spread_summary",
    "study_evidence",
    "sweep_claims",
    "sweep_folder",
    "sweep_studies",
]


def sweep_folder(out: Path, study: Study) -> Path:
    """Where the runs of a study at one budget of its sweep live: ``OUT/budget-B`` (then ``STUDY/ARM-seedS``)."""
    return out / f"budget-{study.budget:g}"


def run_efficiency(
    scale: Scale,
    out: str | Path,
    *,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every study, arm and seed of ``scale`` into ``out`` (resuming what is there) and write the report.

    Each study's arms run at its budget, then its sweep arms at the sweep's other budgets (in
    :func:`sweep_folder`). Returns ``{"out", "plan", "summary", "claims", "report"}``; ``claims`` holds
    every judged claim record (all studies' claims, the sweep's included, are one Holm family).
    ``callback(result)`` is called after each run.
    A configuration left in ``out`` by another scale or other settings is an error: results of two
    plans are never mixed.
    """
    folder = RunFolder(out, "experiment", started=time.time(), device=device)
    planned = plan(scale)
    folder.start(planned, "a run of another plan")
    jobs = [(folder.path, study, arm, seed) for study in scale.studies for arm in study.arms for seed in scale.seeds]
    jobs += [
        (sweep_folder(folder.path, swept), swept, arm, seed)
        for study in scale.studies
        for swept in sweep_studies(study)
        for arm in swept.arms
        for seed in scale.seeds
    ]
    results: list[dict[str, Any]] = []
    swept_results: list[dict[str, Any]] = []
    for where, study, arm, seed in tqdm(jobs, desc=f"at-efficiency {scale.name}", unit="run", disable=not progress):
        result = run_one(where, study, arm, seed, device=device, data_root=data_root, progress=progress)
        (results if where == folder.path else swept_results).append(result)
        if callback is not None:
            callback(result)
    summary = summarize(results, scale, swept_results)
    claims = judge_studies(results, scale, swept_results)
    report = write_report(folder, scale, results, summary, claims, swept_results)
    records = [record for study in scale.studies for record in claims[study.name]]
    return {"out": str(folder.path), "plan": planned, "summary": summary, "claims": records, "report": report}
