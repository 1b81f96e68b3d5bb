"""The attack experiments at smoke scale: their files, their numbers against direct computation, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from hmcam.cli import main
from hmcam.evaluation import predict
from hmcam.experiments.calibration import calibrated
from hmcam.experiments.claims import FIELDS, VERDICTS
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.pooled import zoo_mean_rows
from hmcam.experiments.registry import EXPERIMENTS, SCALE_NAMES
from hmcam.experiments.setup import ATTACK_SCALES, attack_images
from hmcam.experiments.zoo import ZOOS, trained_zoo

SMOKE = ATTACK_SCALES["smoke"]
#: Every attack experiment of the registry, loaded.
ATTACK_EXPERIMENTS = {name: entry.load() for name, entry in EXPERIMENTS.items() if entry.kind == "attack"}
PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = {"transfer": "transfer.png", "iterations": "iterations.png", "step-size": "step_size.png"}
FIGURES |= {"diversity": "diversity.png", "few-sample": "few_sample.png"}


def test_every_attack_experiment_declares_settings_for_every_scale() -> None:
    assert set(SCALE_NAMES) == set(ATTACK_SCALES) == set(ZOOS)
    for name, experiment in ATTACK_EXPERIMENTS.items():
        assert experiment.name == name and set(experiment.settings) == set(SCALE_NAMES)
        assert all(dataclasses.is_dataclass(settings) for settings in experiment.settings.values())
        with pytest.raises(ValueError, match="unknown scale 'huge'"):
            experiment.settings_at("huge")


def test_paper_scale_is_the_papers_section_5_2_setting() -> None:
    paper = ATTACK_SCALES["paper"]
    assert paper.dataset == "cifar10" and paper.eps == pytest.approx(2 / 255) and paper.budget == 100
    assert paper.settings("hmcam", 0).steps == 50 and paper.settings("hmcam", 0).samples == 2  # T = 50, S = 2
    assert paper.settings("fgsm", 0).steps == 1 and paper.settings("mpgd", 0).steps == 100
    assert [entry.label for entry in ZOOS["paper"]] == ["ResNet32", "VGG16", "ResNeXt29", "DenseNet121", "ResNet32_A"]
    with pytest.raises(ValueError, match="multiple of HMCAM's S"):
        type(paper)("odd", "smoke", "fashion-mnist", 0.1, budget=5, samples=2, images=8, seeds=(0,))


@pytest.fixture(scope="module")
def runs(smoke_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every attack experiment at smoke scale, on the session's smoke zoo."""
    out = tmp_path_factory.mktemp("attack-experiments")
    return {
        name: experiment.run(SMOKE, RunOptions(out / name, models_dir=smoke_models, progress=False))
        for name, experiment in ATTACK_EXPERIMENTS.items()
    }


@pytest.mark.parametrize("name", list(ATTACK_EXPERIMENTS))
def test_each_experiment_writes_its_results_tables_report_and_verdicts(name: str, runs) -> None:
    out = Path(runs[name]["out"])
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == name and results["scale"]["name"] == "smoke"
    report = (out / "report.md").read_text()
    assert report.startswith("## ") and "| claim | paper | ours | estimate [95% CI] | p (Holm) | verdict |" in report
    assert results["claims"] and all(claim["verdict"] in VERDICTS for claim in results["claims"])
    assert all(set(FIELDS) <= set(claim) for claim in results["claims"])
    with (out / "claims.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [row["name"] for row in rows] == [claim["name"] for claim in results["claims"]]
    assert list(out.glob("*.csv")), "every experiment writes a CSV table"
    if name in FIGURES:
        assert (out / FIGURES[name]).read_bytes().startswith(PNG)


def test_transfer_matrix_matches_a_direct_attack(runs, smoke_models: Path) -> None:
    out = Path(runs["transfer"]["out"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    sources = [entry.label for entry in ZOOS["smoke"] if not entry.adversarial]
    assert len(rows) == len(sources) * 5 * len(ZOOS["smoke"])
    assert all(0 <= float(row["success_rate"]) <= 1 for row in rows)
    # One cell recomputed by hand: HMCAM crafted on LeNet, tested on the MLP.
    models = trained_zoo("smoke", smoke_models)
    images, labels = attack_images(SMOKE, None, torch.device("cpu"))
    # The experiments run at the calibrated eps (cached beside the zoo by the runs above).
    scale = calibrated(SMOKE, RunOptions(out, models_dir=smoke_models, progress=False))
    assert json.loads((out / "results.json").read_text())["scale"]["eps"] == scale.eps
    crafted = scale.settings("hmcam", 0).build(models["LeNet"])(images, labels)
    correct = predict(models["MLP"], images) == labels
    expected = float((predict(models["MLP"], crafted)[correct] != labels[correct]).float().mean())
    cell = next(r for r in rows if (r["source"], r["attack"], r["target"]) == ("LeNet", "hmcam", "MLP"))
    assert float(cell["success_rate"]) == pytest.approx(expected, abs=1e-4)
    intervals = list(csv.DictReader((out / "intervals.csv").open()))
    assert all(
        float(r["ci_low_points"]) <= float(r["difference_points"]) <= float(r["ci_high_points"]) for r in intervals
    )


@pytest.mark.parametrize("name", list(ATTACK_EXPERIMENTS))
def test_each_experiment_judges_the_claims_its_module_declares(name: str, runs) -> None:
    declared = ATTACK_EXPERIMENTS[name].claims
    records = runs[name]["claims"]
    assert [record["name"] for record in records] == list(declared)
    for record in records:
        assert set(FIELDS) <= set(record) and record["verdict"] in VERDICTS
        assert record["experiment"] == name and record["unit"] == "images"
        assert record["direction"] == declared[record["name"]].direction
        if record["verdict"] == "untestable":
            assert record["reason"] and record["estimate"] is None
        else:
            assert record["n"] > 0 and record["ci_low"] <= record["estimate"] <= record["ci_high"]
    written = list(csv.DictReader((Path(runs[name]["out"]) / "claims.csv").open()))
    assert [row["name"] for row in written] == list(declared)


def test_iterations_and_step_size_tables_cover_their_sweeps(runs) -> None:
    iterations = json.loads((Path(runs["iterations"]["out"]) / "results.json").read_text())
    assert [row["N"] for row in iterations["rows"]] == [1, 2, 3] * 2
    step = json.loads((Path(runs["step-size"]["out"]) / "results.json").read_text())
    assert [row["alpha / eps"] for row in step["rows"]] == [0.001, 0.01, 0.03, 0.1] * 2
    for fractions in step["capped_per_step"].values():
        assert len(fractions) == SMOKE.budget and all(0 <= f <= 1 for f in fractions)


def test_step_size_insensitivity_is_untestable_exactly_when_the_cap_binds(runs) -> None:
    from hmcam.experiments.step_size import CAPPED_UNTESTABLE, capped_share

    results = json.loads((Path(runs["step-size"]["out"]) / "results.json").read_text())
    capped = {float(factor): fractions for factor, fractions in results["capped_per_step"].items()}
    share, _ = capped_share(capped)
    record = next(r for r in results["claims"] if r["name"] == "hmcam-insensitive-white")
    assert record["direction"] == "equivalent" and record["margin"] > 0
    assert (record["verdict"] == "untestable") == (share >= CAPPED_UNTESTABLE)
    assert f"{100 * share:.1f}%" in record["ours"]  # the measured fraction is stated either way


def test_diversity_compares_four_generators_with_chain_diagnostics(runs) -> None:
    rows = {
        row["generator"]: row
        for row in json.loads((Path(runs["diversity"]["out"]) / "results.json").read_text())["rows"]
    }
    assert set(rows) == {"HMCAM", "HMCAM + refresh", "PGD restarts", "MI-FGSM iterates"}
    assert all(row["samples"] == 8 for row in rows.values())
    assert rows["PGD restarts"]["distinct_samples"] == 1.0  # independent random starts never coincide
    assert 0 <= rows["HMCAM"]["acceptance_rate"] <= 1 and "loss_ess_median" in rows["HMCAM + refresh"]
    assert rows["HMCAM + refresh"]["distinct_samples"] >= rows["HMCAM"]["distinct_samples"]


def test_a_second_run_reuses_the_cached_attacks(runs, smoke_models: Path) -> None:
    out = Path(runs["iterations"]["out"])
    cache = sorted((out / "cache").iterdir())
    stamps = [path.stat().st_mtime_ns for path in cache]
    again = ATTACK_EXPERIMENTS["iterations"].run(SMOKE, RunOptions(out, models_dir=smoke_models, progress=False))
    assert [path.stat().st_mtime_ns for path in cache] == stamps
    assert again["rows"] == runs["iterations"]["rows"]


def test_several_zoos_run_one_by_one_and_their_claims_are_judged_together(smoke_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(smoke_models, models)  # zoo seed 1 is trained beside the session's zoo, not into it
    scale = dataclasses.replace(SMOKE, zoo_seeds=(0, 1), images=24)
    options = RunOptions(tmp_path / "transfer", models_dir=models, progress=False)
    result = ATTACK_EXPERIMENTS["transfer"].run(scale, options)
    out = Path(result["out"])
    assert (models / "seed-1" / "LeNet_A").is_dir()
    alone = {seed: json.loads((out / f"zoo-seed-{seed}" / "results.json").read_text()) for seed in (0, 1)}
    assert all(run["scale"]["zoo_seeds"] == [seed] for seed, run in alone.items())
    pooled = json.loads((out / "results.json").read_text())
    assert [claim["name"] for claim in pooled["claims"]] == [claim["name"] for claim in alone[0]["claims"]]
    testable = [claim for claim in pooled["claims"] if claim["verdict"] != "untestable"]
    assert testable and all(claim["unit"] == "2 zoo seeds x images" for claim in testable)
    with (out / "results.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert list(rows[0]) == ["claim", "zoo seed 0", "zoo seed 1", "pooled", "verdict"]
    assert "zoo-seed-1/report.md" in (out / "report.md").read_text()
    # Table 2 itself, each zoo's results.csv averaged over the zoos cell by cell; the results page shows it.
    assert pooled["shown_tables"] == ["zoo-mean.csv"]
    tables = [list(csv.DictReader((out / f"zoo-seed-{seed}" / "results.csv").open())) for seed in (0, 1)]
    mean = list(csv.DictReader((out / "zoo-mean.csv").open()))
    assert len(mean) == len(tables[0]) and list(mean[0]) == list(tables[0][0])
    for row, first, second in zip(mean, *tables, strict=True):
        assert [row[key] for key in ("source", "attack", "target")] == [
            first[key] for key in ("source", "attack", "target")
        ]
        assert float(row["success_rate"]) == pytest.approx(
            (float(first["success_rate"]) + float(second["success_rate"])) / 2, abs=1e-4
        )
    assert "### The main table, mean over the zoos" in (out / "report.md").read_text()
    assert (out / "transfer.png").read_bytes() == (out / "zoo-seed-0" / "transfer.png").read_bytes()
    # A second run redoes no zoo: their folders are finished.
    stamps = [(out / f"zoo-seed-{seed}" / "results.json").stat().st_mtime_ns for seed in (0, 1)]
    ATTACK_EXPERIMENTS["transfer"].run(scale, options)
    assert [(out / f"zoo-seed-{seed}" / "results.json").stat().st_mtime_ns for seed in (0, 1)] == stamps


def test_command_line_runs_an_experiment_and_rejects_bad_seeds(smoke_models: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "targeted"
    arguments = ["experiment", "targeted", "--scale", "smoke", "--out", str(out), "--models", str(smoke_models)]
    assert main([*arguments, "--no-progress", "--images", "16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"].endswith("report.md") and all(c["verdict"] in VERDICTS for c in printed["claims"])
    assert main([*arguments, "--seeds", "1", "1"]) == 2
    assert "--seeds must be distinct" in capsys.readouterr().err
    assert main([*arguments, "--zoo-seeds", "0", "0"]) == 2
    assert "--zoo-seeds must be distinct" in capsys.readouterr().err


def test_random_targets_never_pick_the_label_and_cover_the_others() -> None:
    from hmcam.experiments.targeted import random_targets

    labels = torch.arange(10).repeat(200)
    targets = random_targets(labels, 10, seed=0)
    assert not bool((targets == labels).any())
    assert torch.equal(targets, random_targets(labels, 10, seed=0))
    assert set(targets[labels == 3].tolist()) == set(range(10)) - {3}


def test_prototype_recogniser_picks_the_nearest_class_mean() -> None:
    from hmcam.experiments.all_or_nothing import recogniser

    # Features are the input of the last linear layer: here the images themselves, flattened.
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))
    images = torch.tensor([[0.0, 0.0], [0.2, 0.0], [1.0, 1.0], [0.8, 1.0], [0.0, 1.0], [0.0, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    system = recogniser(network, images, labels, 3)
    torch.testing.assert_close(system.prototypes, torch.tensor([[0.1, 0.0], [0.9, 1.0], [0.0, 0.9]]))
    queries = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9]])
    assert system(queries).argmax(dim=1).tolist() == [0, 1, 2]
    # logits are minus the squared distances: for the first query to prototype 0, 0^2 + 0.1^2.
    assert float(system(queries)[0, 0]) == pytest.approx(-0.01, abs=1e-6)


def test_few_sample_sets_and_fine_tuning(smoke_models: Path) -> None:
    from hmcam.experiments.few_sample import IMAGES, adversarial_set, fine_tune

    model = trained_zoo("smoke", smoke_models, labels=("LeNet",))["LeNet"]
    images, labels = torch.rand(2 * IMAGES, 1, 28, 28), torch.randint(0, 10, (2 * IMAGES,))
    drawn, drawn_labels = adversarial_set(model, SMOKE, "hmcam", 2, images, labels, seed=0)
    assert drawn.shape == (2 * IMAGES, 1, 28, 28) and torch.equal(drawn_labels, labels[:IMAGES].repeat(2))
    crafted, crafted_labels = adversarial_set(model, SMOKE, "pgd", 2, images, labels, seed=0)
    assert crafted.shape == (2 * IMAGES, 1, 28, 28) and torch.equal(crafted_labels, labels)
    assert float((crafted - images).abs().max()) <= SMOKE.eps + 1e-6
    before = [parameter.detach().clone() for parameter in model.parameters()]
    first, second = (fine_tune(model, images, labels, epochs=1, seed=3) for _ in range(2))
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)  # seeded order: the same weights twice
    assert not torch.equal(next(first.parameters()), before[0])  # the copy was trained
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))  # the source was not


def test_zoo_mean_keeps_common_cells_averages_numbers_and_shows_differing_text() -> None:
    first = [{"attack": "PGD", "N": "10", "success": "0.5", "note": "a"}]
    second = [{"attack": "PGD", "N": "10", "success": "0.7", "note": "b"}]
    assert zoo_mean_rows([first, second]) == [{"attack": "PGD", "N": "10", "success": 0.6, "note": "a / b"}]
    assert zoo_mean_rows([first, [*second, *second]]) == []  # tables of different shapes are not averaged
