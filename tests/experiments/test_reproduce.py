"""``hmcam reproduce`` at smoke scale: every experiment in order, resumed after a kill, one report page."""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from hmcam.cli import main
from hmcam.core.storage import current_umask
from hmcam.core.validate import choose
from hmcam.experiments.at_efficiency import SCALES as TRAINING_SCALES
from hmcam.experiments.claims import FIELDS, VERDICTS
from hmcam.experiments.registry import EXPERIMENTS
from hmcam.experiments.registry import REPRODUCED as ORDER
from hmcam.experiments.reproduce import REPRODUCE_SCALES, run_reproduce
from hmcam.experiments.setup import ATTACK_SCALES
from hmcam.experiments.zoo import ZOOS

SMOKE = REPRODUCE_SCALES["smoke"]
RUN_FILES = ("config.json", "results.json", "results.csv", "report.md", "report.html")


class Killed(Exception):
    """Stands for a kill between two experiments."""


@pytest.fixture(scope="module")
def reproduced(smoke_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A smoke reproduction killed after its third experiment, then resumed to the end."""
    out = tmp_path_factory.mktemp("reproduce") / "run"

    def kill(name: str) -> None:
        if name == ORDER[2]:
            raise Killed

    with pytest.raises(Killed):
        run_reproduce(SMOKE, out, models_dir=smoke_models, progress=False, callback=kill)
    before = {name: (out / name / "results.json").stat().st_mtime_ns for name in ORDER[:3]}
    assert not (out / ORDER[3] / "report.md").exists() and not (out / "report.html").exists()
    result = run_reproduce(SMOKE, out, models_dir=smoke_models, progress=False)
    return {"out": out, "result": result, "before": before}


def test_scales_name_every_experiment_and_the_paper_scale_is_the_papers() -> None:
    assert list(ORDER) == [name for name, entry in EXPERIMENTS.items() if entry.kind != "tour"]
    assert set(REPRODUCE_SCALES) == {"smoke", "small", "paper"}
    assert REPRODUCE_SCALES["paper"].of("transfer") == ATTACK_SCALES["paper"]
    small = REPRODUCE_SCALES["small"]
    # One definition of small: each experiment's own; the attack experiments on three zoos, full training data.
    attack, training = small.of("transfer"), small.of("at-efficiency")
    assert attack == ATTACK_SCALES["small"] and training == TRAINING_SCALES["small"]
    assert attack.zoo_seeds == (0, 1, 2) and attack.budget == 20
    assert len(training.seeds) >= 5
    assert all("train_limit" not in study.train for study in training.studies)
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        choose("scale", "huge", REPRODUCE_SCALES)


def test_a_killed_run_resumes_without_redoing_finished_experiments(reproduced: dict[str, Any]) -> None:
    out = reproduced["out"]
    for name, stamp in reproduced["before"].items():
        assert (out / name / "results.json").stat().st_mtime_ns == stamp, f"{name} was redone"
    progress = json.loads((out / "progress.json").read_text())
    experiments = {name for name in progress if not name.startswith("sensitivity/")}
    assert experiments == set(ORDER) and all(entry["seconds"] >= 0 for entry in progress.values())
    log = (out / "reproduce.log").read_text()
    assert log.count("start transfer") == 1 and log.count(f"start {ORDER[3]}") == 1


def test_every_folder_holds_the_files_people_open_readable_by_the_group(reproduced: dict[str, Any]) -> None:
    out = reproduced["out"]
    # The umask's mode, as for any new file: 0644 (group-readable) under the usual umask 022.
    mode = 0o666 & ~current_umask()
    for folder in [out, *(out / name for name in ORDER)]:
        for name in RUN_FILES:
            path = folder / name
            assert path.is_file(), f"{path} is missing"
            assert stat.S_IMODE(path.stat().st_mode) == mode
        if folder != out:
            assert list(folder.glob("*.png")), f"{folder} has no figure"
            config = json.loads((folder / "config.json").read_text())
            assert config["kind"] == "experiment" and config["experiment"] == folder.name
            run = json.loads((folder / "results.json").read_text())["run"]
            assert run["wall_seconds"] >= 0 and run["environment"]["packages"]["torch"]


def test_the_top_report_gathers_every_claim_and_figure(reproduced: dict[str, Any]) -> None:
    out = reproduced["out"]
    claims = list(csv.DictReader((out / "results.csv").open()))
    per_experiment = [len(json.loads((out / name / "results.json").read_text())["claims"]) for name in ORDER]
    assert len(claims) == sum(per_experiment) and all(count > 0 for count in per_experiment)
    assert {claim["verdict"] for claim in claims} <= set(VERDICTS) and set(FIELDS) <= set(claims[0])
    assert list(csv.DictReader((out / "claims.csv").open())) == claims
    # One Holm family for the whole reproduction: no adjusted p below an experiment's own.
    for name in ORDER:
        own = json.loads((out / name / "results.json").read_text())["claims"]
        together = [claim for claim in claims if claim["experiment"] == name]
        for alone, joint in zip(own, together, strict=True):
            if alone["p_adjusted"] is not None:
                assert float(joint["p_adjusted"]) >= alone["p_adjusted"] - 1e-9
    assert [claim["experiment"] for claim in claims] == sorted(
        (claim["experiment"] for claim in claims), key=ORDER.index
    )
    page = (out / "report.html").read_text()
    folders = [out / name for name in ORDER] + sorted((out / "sensitivity").iterdir())
    figures = sum(len(list(folder.glob("*.png"))) for folder in folders)
    assert len(re.findall(r'src="data:image/png;base64,', page)) == figures
    assert page.count('<section id="run-') == len(folders)
    assert "hmcam reproduce --scale smoke" in page
    markdown = (out / "report.md").read_text()
    assert markdown.count("\n## ") >= len(ORDER) and "](transfer/" in markdown


def test_the_zoo_training_time_is_recorded_beside_the_experiments(reproduced: dict[str, Any]) -> None:
    results = json.loads((reproduced["out"] / "results.json").read_text())
    zoo = results["zoo_training"]
    assert [(row["zoo_seed"], row["model"]) for row in zoo] == [(0, entry.label) for entry in ZOOS["smoke"]]
    assert all(row["seconds"] > 0 for row in zoo)
    assert results["zoo_training_seconds"] == pytest.approx(sum(row["seconds"] for row in zoo), abs=0.2)


def test_transfer_is_rerun_at_the_neighbouring_eps_of_the_calibration(reproduced: dict[str, Any]) -> None:
    out = reproduced["out"]
    calibration = json.loads((out / "transfer" / "results.json").read_text())["scale"]["calibration"]
    grid, chosen = calibration["grid"], calibration["chosen"]
    index = grid.index(chosen)
    neighbours = [grid[i] for i in (index - 1, index + 1) if 0 <= i < len(grid)]
    runs = sorted(path.name for path in (out / "sensitivity").iterdir())
    assert runs == sorted(f"transfer-eps{eps:.4g}" for eps in neighbours)
    for eps in neighbours:
        results = json.loads((out / "sensitivity" / f"transfer-eps{eps:.4g}" / "results.json").read_text())
        assert results["scale"]["eps"] == eps
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    transfer = json.loads((out / "transfer" / "results.json").read_text())["claims"]
    assert [row["claim"] for row in rows] == [claim["claim"] for claim in transfer]
    assert len(rows[0]) == 1 + 1 + len(neighbours) and f"eps {chosen:.4g} (chosen)" in rows[0]


def test_the_page_loads_in_chromium(reproduced: dict[str, Any], check_page) -> None:
    check = check_page(reproduced["out"] / "report.html")
    assert check.images and set(check.images) == {"ok"} and check.console == [] and check.shows_something


def test_the_command_line_finishes_a_finished_run_at_once_and_refuses_another_scale(
    reproduced: dict[str, Any], smoke_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = reproduced["out"]
    progress = (out / "progress.json").read_text()
    argv = ["reproduce", "--scale", "smoke", "--out", str(out), "--models", str(smoke_models), "--no-progress"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(out / "report.html") and list(printed["minutes"]) == list(ORDER)
    assert sum(printed["verdicts"].values()) == len(list(csv.DictReader((out / "results.csv").open())))
    assert (out / "progress.json").read_text() == progress  # nothing was redone
    (out / "progress.json").write_text("{")
    assert main(argv) == 2 and "progress.json is not valid JSON" in capsys.readouterr().err
    (out / "progress.json").write_text(progress)
    assert main(["reproduce", "--scale", "small", "--out", str(out), "--no-progress"]) == 2
    assert "holds a reproduction of another scale" in capsys.readouterr().err
    blocker = out / "results.csv"
    assert main(["reproduce", "--out", str(blocker / "x")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert os.path.exists(out / "report.html")
