"""The embedded demo: two networks, white-box and black-box columns, the HMCAM sequence and its page."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hmcam.experiments.claims import FIELDS, VERDICTS
from hmcam.experiments.demo import CLAIMS, DESIGN, EXPERIMENT, main_summary
from hmcam.experiments.demo_report import COLUMNS, SEQUENCE_COLUMNS, SOURCE, TARGET
from hmcam.experiments.framework import RunOptions


def run_smoke(out: Path) -> dict[str, Any]:
    """The demo's smoke scale: 32 test images, both networks trained one epoch on 1000 images."""
    return EXPERIMENT.run(EXPERIMENT.scale("smoke"), RunOptions(out, progress=False))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo at its smoke scale."""
    return run_smoke(tmp_path_factory.mktemp("demo"))


def test_the_demo_writes_its_run_folder(demo: dict[str, Any]) -> None:
    out = Path(demo["out"])
    for name in (
        "config.json",
        "results.json",
        "results.csv",
        "sequence.csv",
        "claims.csv",
        "report.md",
        "report.html",
    ):
        assert (out / name).is_file(), name
    for name in ("success.png", "grid.png", "chain.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "experiment" and config["experiment"] == "demo"
    assert config["scale"]["examples"] == 32 and config["settings"]["budget"] == DESIGN.budget
    assert SOURCE != TARGET  # the black-box column is a network of another design
    for role in ("source", "target"):
        assert (out / role / "report.html").is_file()  # each model's training run has its own page
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["attack"] for row in rows] == ["fgsm", "pgd", "mpgd", "aifgsm", "hmcam"]
    assert list(rows[0]) == list(COLUMNS)
    for row in rows:
        assert 0 <= float(row["white_box_success"]) <= 1 and 0 <= float(row["black_box_success"]) <= 1
    assert rows[-1]["any_sample_black_box"] and float(rows[-1]["any_sample_black_box"]) >= float(
        rows[-1]["black_box_success"]
    )  # any of the samples includes the last one


def test_eps_is_calibrated_on_held_out_images(demo: dict[str, Any]) -> None:
    out = Path(demo["out"])
    results = json.loads((out / "results.json").read_text())
    calibration = results["calibration"]
    assert calibration["grid"] == list(DESIGN.grid) and calibration["held_out"] == [32, 32 + 64]
    assert results["eps"] == demo["eps"] == calibration["chosen"]
    # The chosen eps is the grid's closest to the paper's white-box 92.7%.
    gaps = [abs(rate - 92.7) for rate in calibration["white_box"]]
    assert calibration["white_box"][DESIGN.grid.index(calibration["chosen"])] - 92.7 in (min(gaps), -min(gaps))
    assert "### Calibration of eps" in (out / "report.md").read_text()
    assert f"eps {demo['eps']:.4g}, calibrated" in main_summary(demo)


def test_the_claims_are_judged_per_image(demo: dict[str, Any]) -> None:
    out = Path(demo["out"])
    claims = json.loads((out / "results.json").read_text())["claims"]
    assert [claim["name"] for claim in claims] == list(CLAIMS) == ["hmcam-vs-mpgd-white", "hmcam-vs-mpgd-black"]
    rows = {row["attack"]: row for row in csv.DictReader((out / "results.csv").open())}
    for claim, column in zip(claims, ("white_box_success", "black_box_success"), strict=True):
        assert set(FIELDS) <= set(claim) and claim["verdict"] in VERDICTS
        assert claim["unit"] == "images" and claim["direction"] == "greater" and 0 < claim["n"] <= 32
        # The tested statistic is the table's difference: HMCAM minus M-PGD, in points.
        difference = 100 * (float(rows["hmcam"][column]) - float(rows["mpgd"][column]))
        # 32 images may leave too few informative ones to test (the engine then gives no estimate).
        assert claim["estimate"] is None or claim["estimate"] == pytest.approx(difference, abs=1e-3)
    table = list(csv.DictReader((out / "claims.csv").open()))
    assert list(table[0]) == list(FIELDS) and [row["name"] for row in table] == list(CLAIMS)
    report = (out / "report.md").read_text()
    assert report.count("### Claims") == 1 and "compare HMCAM with M-PGD per image" in report
    assert "estimate [95% CI]" in report


def test_the_sequence_has_its_diagnostics(demo: dict[str, Any]) -> None:
    paper, refreshed = demo["sequence"]
    assert list(paper) == list(SEQUENCE_COLUMNS)
    for row in (paper, refreshed):
        assert 0 <= row["acceptance_rate"] <= 1 and 1 <= row["distinct_labels"] <= 10
        assert row["loss_ess_median"] > 0 and row["loss_rhat_median"] >= 0.9
        assert row["any_sample_white_box"] >= row["white_box_success"]
    assert (paper["momentum_refresh"], refreshed["momentum_refresh"]) == (0.0, 1.0)


def test_the_summary_names_the_page_and_a_second_run_reuses_the_models(demo: dict[str, Any]) -> None:
    out = Path(demo["out"])
    printed = main_summary(demo)
    assert f"report page: {out / 'report.html'}" in printed and "| hmcam |" in printed
    stamp = (out / "source" / "state.safetensors").stat().st_mtime_ns
    shutil.rmtree(out / "cache")  # the jobs' outcomes: attacked again, not read back
    again = run_smoke(out)
    assert (out / "source" / "state.safetensors").stat().st_mtime_ns == stamp
    # Seeded attacks on the same reloaded models: the same outcomes, and the same outcomes read from the cache.
    assert again["attacks"] == [
        {**row, "seconds": again["attacks"][i]["seconds"]} for i, row in enumerate(demo["attacks"])
    ]
    cached = run_smoke(out)
    assert cached["attacks"] == again["attacks"] and cached["sequence"] == again["sequence"]
    assert cached["claims"] == again["claims"]
