"""Adversarial training at equal cost (paper Tables 4, 5, 7 and Fig. 5): every method, its robustness and its time.

Every arm of a study trains with every seed at the study's budget of gradient passes per example (the
main comparison), and its sweep arms (CAT, PGD-AT, TRADES) also at the sweep's other budgets; each
final model is scored under the paper's attacks and AutoAttack. A job is one run, ``(budget, study,
arm, seed)``: the main comparison's budget is one of the sweep's, so a main run and a sweep run at
that budget are the same job. The claims (CAT against each rival over the training seeds; the sweep's
at its other budgets) are judged by :mod:`hmcam.experiments.claims` as one Holm family.

The plan (:data:`SCALES`) lives in :mod:`hmcam.experiments.at_efficiency_plan`, one run in
:mod:`~hmcam.experiments.at_efficiency_run`, the statistics and the declared claims in
:mod:`~hmcam.experiments.at_efficiency_claims` and the report in
:mod:`~hmcam.experiments.at_efficiency_report`. What it measures and how: ``docs/experiments.md``
(Adversarial training at equal cost); its files: ``docs/outputs.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from hmcam.core.storage import atomic_write_json
from hmcam.experiments.at_efficiency_claims import CLAIMS, run_evidence, study_summaries
from hmcam.experiments.at_efficiency_plan import SCALES, Arm, Scale, Study, at_budget, budgets, plan, restrict
from hmcam.experiments.at_efficiency_report import (
    CONVERGENCE_COLUMNS,
    CONVERGENCE_TABLE,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    SUMMARY_TABLE,
    SWEEP_TABLE,
    convergence_rows,
    curve_figures,
    report_text,
    summary_rows,
)
from hmcam.experiments.at_efficiency_run import run_key, run_one, run_settings
from hmcam.experiments.framework import Context, Experiment, RunOptions, Summary

__all__ = [
    "CLAIMS",
    "EXPERIMENT",
    "SCALES",
    "Job",
    "Scale",
    "compute",
    "jobs",
    "key",
    "plan",
    "prepare",
    "restrict",
    "runs",
    "summarize",
]

#: One run: its budget (passes per example; None: the arms' own epochs), study name, arm label and seed.
Job: TypeAlias = tuple[float | None, str, str, int]
#: What every cached run of a folder computes, by key: a rerun whose run of the same key differs is refused.
RUNS_FILE = "runs.json"


def _resolve(job: Job, scale: Scale) -> tuple[Study, Arm, int]:
    """The study at the job's budget, its arm and its seed."""
    budget, study_name, label, seed = job
    study = at_budget(next(study for study in scale.studies if study.name == study_name), budget)
    return study, next(arm for arm in study.arms if arm.label == label), seed


def runs(scale: Scale) -> list[Job]:
    """Every run of ``scale``: per study, each budget (its own first), each arm trained there, each seed."""
    return [
        (budget, study.name, arm.label, seed)
        for study in scale.studies
        for budget in budgets(study)
        for arm in at_budget(study, budget).arms
        for seed in scale.seeds
    ]


def prepare(scale: Scale, settings: Scale, options: RunOptions) -> None:
    """Refuse a folder whose cached run of some key computed something else (another subset, schedule, ...).

    The keys name budget, study, arm and seed only; :data:`RUNS_FILE` records what each run computes
    (:func:`~hmcam.experiments.at_efficiency_run.run_settings`), so that a scale restricted otherwise
    never reuses a run it does not plan. Runs of other keys (more seeds, arms or budgets) may join.
    """
    folder = options.run_folder()
    path = folder.file(RUNS_FILE)
    recorded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    planned = {key(job): run_settings(*_resolve(job, scale)) for job in runs(scale)}
    differing = sorted(key for key, value in planned.items() if key in recorded and recorded[key] != value)
    if differing:
        raise ValueError(f"{folder.path} holds a run of another plan for {differing[0]} ({path}); choose another --out")
    atomic_write_json(path, {**recorded, **planned})


def jobs(context: Context[Scale, Scale, None]) -> list[Job]:
    """Every run of the scale (:func:`runs`)."""
    return runs(context.scale)


def key(job: Job) -> str:
    """A run's cache key, ``budget-B-STUDY-ARM-seedS`` (``own-epochs-...`` for arms with their own epochs)."""
    return run_key(*job)


def compute(job: Job, context: Context[Scale, Scale, None]) -> dict[str, Any]:
    """Train and score one run in ``OUT/budget-B/STUDY/ARM-seedS`` (resuming its state); its result."""
    study, arm, seed = _resolve(job, context.scale)
    options = context.options
    return run_one(
        options.out, study, arm, seed, device=options.device, data_root=options.data_root, progress=options.progress
    )


def summarize(context: Context[Scale, Scale, None], outcomes: Mapping[Job, Mapping[str, Any]]) -> Summary:
    """The main runs' table, the per-arm summary, the sweep, the curves, convergence and the claims' evidence."""
    scale = context.scale
    results = [dict(outcome) for outcome in outcomes.values()]
    own = {study.name: study.budget for study in scale.studies}
    main = [run for run in results if run["budget"] == own[run["study"]]]
    swept = [run for run in results if run["budget"] != own[run["study"]]]
    summaries = study_summaries(results, scale)
    return Summary(
        rows=[{name: run[name] for name in RUN_COLUMNS} for run in main],
        columns=RUN_COLUMNS,
        text=report_text(scale, summaries),
        evidence=run_evidence(results, scale),
        figures=curve_figures(scale, summaries),
        tables={
            SWEEP_TABLE: ([{name: run[name] for name in RUN_COLUMNS} for run in swept], RUN_COLUMNS),
            SUMMARY_TABLE: (summary_rows(scale, summaries), SUMMARY_COLUMNS),
            CONVERGENCE_TABLE: (convergence_rows(scale, summaries), CONVERGENCE_COLUMNS),
        },
        shown=(CONVERGENCE_TABLE,),
        results={"plan": plan(scale), "studies": summaries},
    )


#: The comparison. A training :class:`Scale` already is its per-scale settings (studies, arms, seeds), so
#: ``settings`` is the same mapping as ``scales``: ``context.settings`` is the scale as declared, and
#: ``context.scale`` the one that runs (which :func:`restrict` may have narrowed).
EXPERIMENT: Experiment[Scale, Scale, None, Job] = Experiment(
    name="at-efficiency",
    scales=SCALES,
    settings=SCALES,
    claims=CLAIMS,
    prepare=prepare,
    jobs=jobs,
    key=key,
    compute=compute,
    summarize=summarize,
)
