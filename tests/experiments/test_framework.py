"""The experiment protocol: settings per scale, cached jobs that resume, the summary, the judged claims, the files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hmcam.experiments.claims import Claim
from hmcam.experiments.framework import Context, Experiment, RunOptions, Summary, cached, run_experiment

CLAIM = Claim("toy", "doubles", "doubling beats the input", "x2", "doubled minus input", "images", "greater")


@dataclass(frozen=True)
class ToyScale:
    name: str
    values: int


@dataclass(frozen=True)
class ToySettings:
    factor: float


calls: list[int] = []


def _compute(job: int, context: Context[ToyScale, ToySettings, float]) -> dict[str, Any]:
    calls.append(job)
    if job == 0:
        return {"doubled": torch.tensor([job * context.settings.factor + context.bench])}
    return {"value": job * context.settings.factor + context.bench}


def _summarize(context: Context[ToyScale, ToySettings, float], outcomes: Mapping[int, Any]) -> Summary:
    values = [float(outcome.get("value", 0.0)) for outcome in outcomes.values()]
    rows = [{"job": job, "value": value} for job, value in zip(outcomes, values, strict=True)]
    differences = np.asarray(values) - np.asarray(list(outcomes))
    return Summary(
        rows=rows,
        columns=["job", "value"],
        text="## Toy\n\nDoubling.",
        evidence=[CLAIM.evidence(differences, ours=f"{differences.mean():+.1f}")],
        figures={"toy.png": lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n")},
        tables={"extra.csv": (rows, ["job"]), "hidden.csv": (rows, ["value"])},
        shown=["extra.csv"],
        results={"total": sum(values)},
    )


TOY = Experiment(
    name="toy",
    scales={"smoke": ToyScale("smoke", 30)},
    settings={"smoke": ToySettings(2.0)},
    claims={CLAIM.name: CLAIM},
    prepare=lambda scale, settings, options: 1.0,
    jobs=lambda context: list(range(context.scale.values)),
    key=lambda job: f"job-{job}",
    compute=_compute,
    summarize=_summarize,
    notes=lambda scale: f"notes of {scale.name}",
)


def test_a_run_computes_each_job_once_and_writes_every_file(tmp_path: Path) -> None:
    calls.clear()
    options = RunOptions(tmp_path / "toy", progress=False)
    result = TOY.run(TOY.scale("smoke"), options)
    assert calls == list(range(30))
    out = Path(result["out"])
    for name in ("config.json", "results.json", "results.csv", "extra.csv", "claims.csv", "evidence.json", "toy.png"):
        assert (out / name).is_file(), name
    assert (out / "cache" / "job-0.safetensors").is_file() and (out / "cache" / "job-1.outcome.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["settings"] == {"factor": 2.0} and results["total"] == pytest.approx(
        sum(2 * j + 1 for j in range(1, 30))
    )
    assert [claim["verdict"] for claim in results["claims"]] == ["supported"]
    assert results["shown_tables"] == ["extra.csv"]  # the results page shows it after results.csv
    report = (out / "report.md").read_text()
    assert (
        report.index("## Toy")
        < report.index("### Claims")
        < report.index("![toy](toy.png)")
        < report.index("notes of smoke")
    )
    # A second run (a resumed one) computes nothing again and finds the same results.
    calls.clear()
    again = TOY.run(TOY.scale("smoke"), options)
    assert calls == [] and again["rows"] == result["rows"]


def test_a_run_without_evidence_for_a_declared_claim_fails(tmp_path: Path) -> None:
    silent = Experiment(**{**TOY.__dict__, "summarize": lambda context, outcomes: Summary([], ["job"], "", [])})
    with pytest.raises(RuntimeError, match="no evidence for its declared claims"):
        run_experiment(silent, TOY.scale("smoke"), RunOptions(tmp_path, progress=False))


def test_a_summary_shows_only_tables_it_has() -> None:
    with pytest.raises(ValueError, match=r"shown tables \['missing.csv'\] are not among the summary's tables"):
        Summary([], ["job"], "", [], tables={"extra.csv": ([], ["job"])}, shown=["missing.csv"])


def test_unknown_scales_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        TOY.scale("huge")
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        TOY.settings_at("huge")


def test_the_cache_returns_what_was_saved_and_never_recomputes(tmp_path: Path) -> None:
    folder = RunOptions(tmp_path, progress=False).run_folder()
    first = cached(folder, "a", lambda: {"x": torch.arange(3)})
    assert torch.equal(cached(folder, "a", lambda: pytest.fail("recomputed"))["x"], first["x"])
    assert cached(folder, "b", lambda: {"n": 1, "name": "b"}) == {"n": 1, "name": "b"}
    assert cached(folder, "b", lambda: pytest.fail("recomputed")) == {"n": 1, "name": "b"}
