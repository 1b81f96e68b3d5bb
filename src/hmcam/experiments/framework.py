"""One protocol for every experiment: per-scale settings, jobs, a cached computation per job, a summary.

An :class:`Experiment` is what one of the paper's experiments declares, and nothing else:

- ``settings``: a frozen settings dataclass per scale name (chosen with :func:`~hmcam.core.validate.choose`,
  no silent fallback);
- ``claims``: the paper's claims it tests, declared before any run (:class:`~hmcam.experiments.claims.Claim`);
- ``prepare(scale, settings, options)``: what every job starts from (the trained zoo and the images, a
  trained model, ...), a :class:`Context`;
- ``jobs(context)``: the units of work, each named by ``key(job)``;
- ``compute(job, context)``: one job's outcome, tensors or a JSON-ready dict;
- ``summarize(context, outcomes)``: a :class:`Summary` of rows, figures, further tables and the claims'
  evidence.

:func:`run_experiment` does the rest the same way for every experiment: it caches each job's outcome
in the run folder (``cache/KEY.safetensors`` or ``cache/KEY.outcome.json``) so a killed run resumes where it
stopped, shows progress, draws the figures, judges the claims (:func:`~hmcam.experiments.claims.judge`)
and writes the standard files through :class:`~hmcam.reporting.run_folder.RunFolder`, the page last.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar

from torch import Tensor
from tqdm.auto import tqdm

from hmcam.core.storage import atomic_write_json, load_tensors, save_tensors
from hmcam.core.validate import choose
from hmcam.experiments.claims import FIELDS as CLAIM_FIELDS
from hmcam.experiments.claims import Claim, Evidence, judge
from hmcam.experiments.evidence import EVIDENCE_FILE, evidence_records
from hmcam.reporting.results_page import SHOWN_TABLES
from hmcam.reporting.run_folder import RunFolder
from hmcam.reporting.tables import CLAIM_COLUMNS, claim_rows, markdown_table

#: The folder of a run folder that holds the cached outcome of each job.
CACHE_FOLDER = "cache"
#: Every judged claim of a run, one row each (:data:`hmcam.experiments.claims.FIELDS`).
CLAIMS_TABLE = "claims.csv"

#: A table: its rows and its columns, in order.
Table: TypeAlias = tuple[Sequence[dict[str, Any]], Sequence[str]]
#: One job's outcome: named tensors (cached as safetensors) or a JSON-ready dict (cached as JSON).
Outcome: TypeAlias = Mapping[str, Any]

ScaleT = TypeVar("ScaleT")
SettingsT = TypeVar("SettingsT")
BenchT = TypeVar("BenchT")
JobT = TypeVar("JobT", bound=Hashable)


@dataclass(frozen=True)
class RunOptions:
    """Where and how an experiment runs: its folder, device, data and model folders, progress bars.

    ``models_dir`` holds the attack experiments' trained zoo, shared between experiments given the same
    folder (default: ``out / "models"``); ``started`` is when this invocation began, for the wall time
    in ``results.json``.
    """

    out: Path
    device: str = "cpu"
    data_root: str | None = None
    models_dir: Path | None = None
    progress: bool = True
    started: float = field(default_factory=time.time)

    @property
    def models(self) -> Path:
        """The folder of the trained zoo."""
        return self.models_dir if self.models_dir is not None else self.out / "models"

    def run_folder(self) -> RunFolder:
        """The experiment's run folder ``out``, of kind ``experiment``, with this invocation's start and device."""
        return RunFolder(self.out, "experiment", started=self.started, device=self.device)


@dataclass(frozen=True)
class Context(Generic[ScaleT, SettingsT, BenchT]):
    """What every job of one run starts from: the scale, the experiment's settings at it, the options, the bench."""

    scale: ScaleT
    settings: SettingsT
    options: RunOptions
    bench: BenchT


@dataclass(frozen=True)
class Summary:
    """What a run found, before its claims are judged.

    ``rows``/``columns``: the main table (``results.csv``); ``text``: the report's Markdown before the
    claims (what was compared, how, the tables); ``figures``: PNG name -> a function drawing it at a
    path; ``tables``: further CSV name -> table; ``shown``: the further tables the results page shows
    after the main one; ``evidence``: one per declared claim; ``results``: further entries of ``results.json``.
    """

    rows: Sequence[dict[str, Any]]
    columns: Sequence[str]
    text: str
    evidence: Sequence[Evidence]
    figures: Mapping[str, Callable[[Path], Any]] = field(default_factory=dict)
    tables: Mapping[str, Table] = field(default_factory=dict)
    shown: Sequence[str] = ()
    results: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [name for name in self.shown if name not in self.tables]
        if unknown:
            raise ValueError(f"shown tables {unknown} are not among the summary's tables {list(self.tables)}")


@dataclass(frozen=True)
class Experiment(Generic[ScaleT, SettingsT, BenchT, JobT]):
    """An experiment of the paper: its scales, its settings per scale, its claims and its four steps.

    ``scales`` are the sizes it runs at by name (``smoke``, ``small``, ``paper``); ``notes(scale)`` is
    Markdown appended to every report (the attack experiments: how eps was calibrated); ``runner``
    runs it at a scale (default :func:`run_experiment`; the attack experiments first calibrate eps and
    run once per zoo, :mod:`hmcam.experiments.zoo_experiment`).
    """

    name: str
    scales: Mapping[str, ScaleT]
    settings: Mapping[str, SettingsT]
    claims: Mapping[str, Claim]
    prepare: Callable[[ScaleT, SettingsT, RunOptions], BenchT]
    jobs: Callable[[Context[ScaleT, SettingsT, BenchT]], Sequence[JobT]]
    key: Callable[[JobT], str]
    compute: Callable[[JobT, Context[ScaleT, SettingsT, BenchT]], Outcome]
    summarize: Callable[[Context[ScaleT, SettingsT, BenchT], Mapping[JobT, Outcome]], Summary]
    notes: Callable[[ScaleT], str] = field(default=lambda scale: "")
    runner: Callable[[Experiment[ScaleT, SettingsT, BenchT, JobT], ScaleT, RunOptions], dict[str, Any]] | None = None

    def scale(self, name: str) -> ScaleT:
        """The scale named ``name``; a ValueError names an unknown one."""
        return choose("scale", name, self.scales)

    def run(self, scale: ScaleT, options: RunOptions) -> dict[str, Any]:
        """Run at ``scale`` into ``options.out`` (resuming what it holds); returns the run's results."""
        runner = self.runner if self.runner is not None else run_experiment
        return runner(self, scale, options)

    def settings_at(self, scale_name: str) -> SettingsT:
        """The experiment's settings at the scale named ``scale_name``; a ValueError names an unknown one."""
        return choose("scale", scale_name, self.settings)


def cached(folder: RunFolder, key: str, compute: Callable[[], Outcome]) -> Outcome:
    """The outcome cached under ``key`` in ``folder``, or ``compute()``'s, cached first (resume after a kill).

    Tensors go to ``cache/KEY.safetensors`` (with its metadata sidecar), anything else to
    ``cache/KEY.outcome.json``; both are written atomically, so a kill leaves no half-written outcome
    that a resumed run would trust.
    """
    tensors, document = (
        folder.file(f"{CACHE_FOLDER}/{key}.safetensors"),
        folder.file(f"{CACHE_FOLDER}/{key}.outcome.json"),
    )
    if tensors.exists():
        return load_tensors(tensors)[0]
    if document.exists():
        loaded: dict[str, Any] = json.loads(document.read_text())
        return loaded
    outcome = compute()
    if outcome and all(isinstance(value, Tensor) for value in outcome.values()):
        save_tensors(tensors, dict(outcome), {"cached": key})
    else:
        atomic_write_json(document, dict(outcome))
    return outcome


def scale_name(scale: Any) -> str:
    """A scale's name (every scale dataclass has one)."""
    name: str = scale.name
    return name


def run_experiment(
    experiment: Experiment[ScaleT, SettingsT, BenchT, JobT], scale: ScaleT, options: RunOptions
) -> dict[str, Any]:
    """Run ``experiment`` at ``scale`` into ``options.out``: every job (cached), the summary, the claims, the files.

    Returns what ``results.json`` holds, with ``out`` (the folder) and ``report`` (the Markdown).
    """
    folder = options.run_folder()
    settings = experiment.settings_at(scale_name(scale))
    context = Context(scale, settings, options, experiment.prepare(scale, settings, options))
    jobs = experiment.jobs(context)
    outcomes: dict[JobT, Outcome] = {}
    for job in tqdm(jobs, desc=experiment.name, unit="job", disable=not options.progress):
        outcomes[job] = cached(folder, experiment.key(job), partial(experiment.compute, job, context))
    summary = experiment.summarize(context, outcomes)
    for name, draw in summary.figures.items():
        draw(folder.file(name))
    claims = judge(summary.evidence)
    # A claim judged once per study of the scale is named "STUDY/name".
    judged = {record["name"].rsplit("/", 1)[-1] for record in claims}
    missing = set(experiment.claims) - judged
    if missing:
        raise RuntimeError(f"{experiment.name} gave no evidence for its declared claims {sorted(missing)}")
    return finish(folder, experiment, context, summary, claims)


def finish(
    folder: RunFolder,
    experiment: Experiment[Any, Any, Any, Any],
    context: Context[Any, Any, Any],
    summary: Summary,
    claims: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write the run's standard files through ``folder``; the report and page last, so they mark a finished run.

    ``config.json`` (the experiment, its scale and settings, device, data and model folders),
    ``results.json`` (experiment, scale, settings, the summary's results and rows, the judged claims and
    the ``run`` record), ``results.csv``, the further tables, ``claims.csv``, ``evidence.json`` (the
    values the claims were judged on, for pooling over zoos), then ``report.md`` and ``report.html``.
    """
    options = context.options
    scale = dataclasses.asdict(context.scale)
    settings = dataclasses.asdict(context.settings)
    folder.write_config(
        {
            "experiment": experiment.name,
            "scale": scale,
            "settings": settings,
            "device": options.device,
            "data_root": options.data_root,
            "models": str(options.models),
        }
    )
    results = {"rows": list(summary.rows), **summary.results, "claims": claims}
    if summary.shown:
        results[SHOWN_TABLES] = list(summary.shown)
    folder.write_results({"experiment": experiment.name, "scale": scale, "settings": settings, **results})
    folder.write_table(summary.rows, summary.columns)
    for name, (rows, columns) in summary.tables.items():
        folder.write_table(rows, columns, name)
    folder.write_table(claims, CLAIM_FIELDS, CLAIMS_TABLE)
    folder.write_json(EVIDENCE_FILE, evidence_records(summary.evidence))
    report = report_markdown(experiment, context.scale, summary, claims)
    folder.write_report(report)
    return {"out": str(folder.path), "experiment": experiment.name, **results, "report": report}


def claim_table(claims: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of judged claims: paper, ours, estimate with its interval, Holm's p, verdict."""
    return markdown_table(claim_rows(claims), CLAIM_COLUMNS)


def report_markdown(
    experiment: Experiment[Any, Any, Any, Any], scale: Any, summary: Summary, claims: Sequence[Mapping[str, Any]]
) -> str:
    """The report of one run: the summary's text, the claims with their verdicts, the figures, the notes."""
    parts = [summary.text.rstrip(), "", "### Claims", "", claim_table(claims), ""]
    parts += [f"![{Path(name).stem}]({name})" for name in summary.figures]
    notes = experiment.notes(scale)
    if notes:
        parts += ["", notes.rstrip()]
    return "\n".join(parts) + "\n"
