"""The equal-cost training comparison: budgets, statistics, the smoke run's files, resume and the command line."""

from __future__ import annotations

import csv
import dataclasses
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from hmcam.cli import experiment as experiment_cli
from hmcam.cli import main
from hmcam.core.validate import choose
from hmcam.experiments.at_efficiency import (
    ATTACKS,
    CLAIMS,
    SCALES,
    arm_epochs,
    compare,
    judge_studies,
    oscillation,
    planned_passes,
    restrict,
    run_efficiency,
    spread_summary,
)
from hmcam.experiments.claims import FIELDS, VERDICTS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole smoke scale (8 methods x 2 seeds), run once for this module."""
    out = tmp_path_factory.mktemp("smoke")
    return run_efficiency(SCALES["smoke"], out, device="cpu", progress=False)


def test_the_command_line_offers_every_scale() -> None:
    assert set(experiment_cli.SCALES) == set(SCALES)


def test_spread_and_comparison_by_hand() -> None:
    summary = spread_summary([0.5, 0.7, 0.6])
    assert summary["mean"] == pytest.approx(0.6) and summary["std"] == pytest.approx(0.1)
    assert (summary["min"], summary["max"]) == (0.5, 0.7)
    assert spread_summary([0.4])["std"] == 0.0
    assert compare([0.8, 0.9], [0.5, 0.7]) == {"difference": pytest.approx(0.25)}


def _runs(
    study: str, autoattack: dict[str, list[float]], clean: dict[str, list[float]], drops: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """Fake finished runs, one per arm and seed: accuracies and the curve's total drop given in points."""
    runs = []
    for arm, values in autoattack.items():
        for seed, value in enumerate(values):
            drop = drops.get(arm, [0.0] * len(values))[seed] / 100
            runs.append(
                {
                    "study": study,
                    "arm": arm,
                    "seed": seed,
                    "clean": clean.get(arm, [80.0] * len(values))[seed] / 100,
                    # The paper's attacks a fixed distance above AutoAttack: every difference is AutoAttack's.
                    **{name: (value + shift) / 100 for name, shift in (("pgd", 5), ("mpgd", 4), ("cwlinf", 6))},
                    "worst": (value + 3) / 100,
                    "autoattack": value / 100,
                    "train_minutes": 1.0,
                    "curve": [{"robust": 0.5}, {"robust": None}, {"robust": 0.5 - drop}],
                }
            )
    return runs


#: CAT beats PGD-AT clearly, Free within the seed spread, loses to YOPO; J_cd against CE within the spread.
AUTOATTACK = {
    "CAT": [45.0, 46.0, 45.5],
    "PGD-AT": [38.0, 39.0, 38.5],
    "Free": [40.0, 47.0, 44.0],
    "YOPO": [55.0, 56.0, 55.5],
    "CAT-CE": [44.0, 47.0, 45.0],
}
#: CAT 2 points under PGD-AT, inside the paper's 3.4; YOPO's curves fall 10 to 11 points, CAT's never.
CLEAN = {"CAT": [80.0, 80.1, 80.2], "PGD-AT": [82.0, 82.1, 82.2]}
DROPS = {"YOPO": [10.0, 10.5, 11.0]}


def test_claims_are_judged_over_seeds_by_hand() -> None:
    scale = SCALES["smoke"]
    study = scale.studies[0].name
    records = judge_studies(_runs(study, AUTOATTACK, CLEAN, DROPS), scale)[study]
    assert all(set(FIELDS) <= set(record) and record["verdict"] in VERDICTS for record in records)
    found = {record["name"]: record for record in records}
    assert list(found) == [
        "cat-vs-pgd-at",
        "cat-vs-free",
        "cat-vs-yopo",
        "clean-vs-pgd-at",
        "jcd-vs-ce",
        "steady-vs-yopo",
    ]
    assert [record["verdict"] for record in records] == [
        "supported",
        "inconclusive",
        "contradicted",
        "supported",
        "inconclusive",
        "supported",
    ]
    assert all(record["unit"] == "seeds" and record["n"] == 3 for record in records)
    pgd = found["cat-vs-pgd-at"]
    assert pgd["estimate"] == pytest.approx(7.0) and pgd["ci_low"] <= 7.0 <= pgd["ci_high"]
    assert pgd["paper"].startswith("+7.8 pgd, +9.1 mpgd, +2.4 cwlinf")
    assert pgd["ours"].startswith("+7.0 autoattack points (judged)") and "+7.0 pgd" in pgd["ours"]
    assert found["clean-vs-pgd-at"]["direction"] == "noninferior" and found["clean-vs-pgd-at"]["margin"] == 3.4
    assert found["clean-vs-pgd-at"]["estimate"] == pytest.approx(-2.0)
    assert found["steady-vs-yopo"]["direction"] == "less"
    assert found["steady-vs-yopo"]["estimate"] == pytest.approx(-10.5)
    # Five points of clean accuracy lost: significantly more than the margin.
    worse = judge_studies(_runs(study, AUTOATTACK, {**CLEAN, "CAT": [77.0, 77.1, 77.2]}, DROPS), scale)[study]
    assert worse[3]["name"] == "clean-vs-pgd-at" and worse[3]["verdict"] == "contradicted"


def test_claims_need_two_seeds_the_arms_and_one_family_per_run() -> None:
    scale = SCALES["smoke"]
    study = scale.studies[0].name
    one_seed = {arm: values[:1] for arm, values in AUTOATTACK.items()}
    records = judge_studies(_runs(study, one_seed, CLEAN, DROPS), scale)[study]
    assert len(records) == 6 and all(record["verdict"] == "untestable" for record in records)
    assert {record["reason"] for record in records} == {"needs at least 2 seeds per arm"}
    # Claims about arms the study lacks are left out; none at all without CAT.
    partial = {arm: AUTOATTACK[arm] for arm in ("CAT", "Free")}
    assert [r["name"] for r in judge_studies(_runs(study, partial, CLEAN, DROPS), scale)[study]] == ["cat-vs-free"]
    assert judge_studies(_runs(study, {"Free": AUTOATTACK["Free"]}, CLEAN, DROPS), scale)[study] == []
    # Two studies: one Holm family of twelve claims, each named after its study.
    twice = dataclasses.replace(scale, studies=(scale.studies[0], dataclasses.replace(scale.studies[0], name="b")))
    runs = _runs(study, AUTOATTACK, CLEAN, DROPS) + _runs("b", AUTOATTACK, CLEAN, DROPS)
    both = judge_studies(runs, twice)
    assert both["b"][0]["name"] == "b/cat-vs-pgd-at" and both["b"][0]["claim"].endswith("[b]")
    alone = judge_studies(_runs(study, AUTOATTACK, CLEAN, DROPS), scale)[study]
    assert both[study][0]["p_value"] == alone[0]["p_value"]
    assert both[study][0]["p_adjusted"] > alone[0]["p_adjusted"]
    assert set(CLAIMS) == {record["name"] for record in alone}


def test_oscillation_sums_the_drops_of_robust_accuracy() -> None:
    curve = [{"robust": value} for value in (0.1, 0.3, 0.2, 0.25, None, 0.05)]
    assert oscillation(curve) == pytest.approx(0.1 + 0.2)
    assert oscillation([{"robust": 0.1}, {"robust": 0.4}]) == 0.0


def test_small_scale_gives_every_method_the_same_budget_in_passes() -> None:
    study = SCALES["small"].studies[0]
    assert SCALES["small"].seeds == (0, 1) and study.budget == 40 and study.eps == 0.1
    epochs = {arm.label: arm_epochs(study, arm) for arm in study.arms}
    # Passes per minibatch: natural 1, PGD-7 and Free-8 8, fast 2, TRADES-7 7 + 7/3, CAT T4 K1 4 (1 + 1) + 4/3,
    # CAT-CE 8.
    assert {k: v for k, v in epochs.items() if k != "YOPO"} == {
        "natural": 40,
        "PGD-AT": 5,
        "Free": 5,
        "fast": 20,
        "TRADES": 4,
        "CAT": 4,
        "CAT-CE": 5,
    }
    yopo = next(arm for arm in study.arms if arm.label == "YOPO")
    passes = planned_passes(study, yopo)
    # YOPO-5-3: five full passes and five through the first layer, a fraction of LeNet's multiply-adds.
    assert 5 < passes < 7.5
    assert epochs["YOPO"] == round(40 / passes)


def test_paper_scale_has_the_papers_settings() -> None:
    scale = SCALES["paper"]
    assert len(scale.seeds) == 5
    studies = {study.name: study for study in scale.studies}
    cifar = studies["cifar10-preact-resnet18"]
    assert cifar.eps == pytest.approx(8 / 255) and cifar.train["batch_size"] == 256
    arms = {arm.label: arm for arm in cifar.arms}
    assert arms["PGD-AT"].epochs == 105 and arms["PGD-AT"].overrides["milestones"] == (79, 90, 100)
    assert arms["PGD-AT"].kwargs["steps"] == 10 and arms["PGD-AT"].overrides["lr"] == 0.05
    assert arms["Free"].epochs == arms["YOPO"].epochs == 40 and arms["Free"].overrides["lr"] == 0.2
    assert arms["YOPO"].kwargs["full_passes"] == 5 and arms["YOPO"].kwargs["layer_steps"] == 3
    assert studies["cifar10-wrn34-10"].model == "wrn34_10"
    assert studies["mnist-smallcnn"].eps == 0.3 and studies["mnist-smallcnn"].attack_steps == 40


def test_restrict_checks_what_it_is_given() -> None:
    scale = SCALES["smoke"]
    narrowed = restrict(scale, seeds=[3], methods=["natural", "cat"], budget=2.0, train_limit=64)
    study = narrowed.studies[0]
    assert narrowed.seeds == (3,) and [arm.label for arm in study.arms] == ["natural", "CAT"]
    assert study.budget == 2.0 and study.train["train_limit"] == 64
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['catt'\].*choose from \['natural', 'PGD-AT'"):
        restrict(scale, methods=["catt"])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        restrict(scale, seeds=[1, 1])
    with pytest.raises(ValueError, match="budget must be a positive"):
        restrict(scale, budget=float("nan"))
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        choose("scale", "huge", SCALES)


def test_smoke_run_writes_every_table_figure_and_claim(smoke: dict[str, Any]) -> None:
    out = Path(smoke["out"])
    study = SCALES["smoke"].studies[0]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(study.arms) * 2
    for row in rows:
        arm = next(arm for arm in study.arms if arm.label == row["arm"])
        # Passes per example are the epochs times the method's own passes per minibatch.
        assert float(row["passes"]) == pytest.approx(int(row["epochs"]) * planned_passes(study, arm), rel=1e-6)
        accuracies = {name: float(row[name]) for name in ("clean", *ATTACKS, "worst")}
        assert all(0 <= value <= 1 for value in accuracies.values())
        # The worst case counts an example robust only if it survives every attack.
        assert accuracies["worst"] <= min(accuracies[name] for name in ATTACKS) + 1e-9
        assert float(row["train_minutes"]) > 0
    summary = json.loads((out / "results.json").read_text())["studies"][study.name]
    assert set(summary["arms"]) == {arm.label for arm in study.arms}
    natural = [float(r["clean"]) for r in rows if r["arm"] == "natural"]
    assert summary["arms"]["natural"]["clean"]["mean"] == pytest.approx(sum(natural) / 2)
    assert len(summary["differences"]) == len(study.arms) * (len(study.arms) - 1)
    assert (out / f"{study.name}-curves.png").read_bytes().startswith(PNG)
    report = (out / "report.md").read_text()
    for text in ("CAT is more robust than PGD-AT", "than Free", "than YOPO", "J_cd", "Fig. 5", "| CAT-CE |"):
        assert text in report
    claims = json.loads((out / "results.json").read_text())["claims"]
    assert len(claims) == 6 and all(claim["verdict"] in VERDICTS and claim["paper"] for claim in claims)
    assert all(set(FIELDS) <= set(claim) and claim["unit"] == "seeds" and claim["n"] == 2 for claim in claims)
    table = list(csv.DictReader((out / "claims.csv").open()))
    assert [row["name"] for row in table] == [claim["name"] for claim in claims] and list(table[0]) == list(FIELDS)
    assert smoke["claims"] == claims
    assert "estimate [95% CI]" in report
    assert json.loads((out / "config.json").read_text())["experiment"] == "at-efficiency"
    assert (out / "report.html").is_file()
    curve = json.loads((out / study.name / "natural-seed0" / "result.json").read_text())["curve"]
    assert [point["epoch"] for point in curve] == list(range(1, 7))  # a budget of 6 passes
    assert all(b["passes"] > a["passes"] and b["minutes"] > a["minutes"] for a, b in pairwise(curve))


def test_an_interrupted_run_resumes_to_the_same_results(tmp_path: Path) -> None:
    scale = restrict(SCALES["smoke"], seeds=[0], methods=["natural", "cat"], budget=3)
    whole = run_efficiency(scale, tmp_path / "whole", device="cpu", progress=False)

    class Stop(Exception):
        pass

    def stop(result: dict[str, Any]) -> None:
        raise Stop

    with pytest.raises(Stop):
        run_efficiency(scale, tmp_path / "cut", device="cpu", progress=False, callback=stop)
    assert not (tmp_path / "cut" / "report.md").exists()
    done = tmp_path / "cut" / "fashion-mnist-lenet" / "natural-seed0" / "result.json"
    first = done.stat().st_mtime_ns
    resumed = run_efficiency(scale, tmp_path / "cut", device="cpu", progress=False)
    assert done.stat().st_mtime_ns == first  # the finished run is read back, not run again
    for label, metrics in whole["summary"]["fashion-mnist-lenet"]["arms"].items():
        again = resumed["summary"]["fashion-mnist-lenet"]["arms"][label]
        for name in ("clean", *ATTACKS, "worst", "passes"):
            assert again[name]["mean"] == pytest.approx(metrics[name]["mean"], abs=1e-6), (label, name)
    with pytest.raises(ValueError, match="holds a run of another plan"):
        run_efficiency(restrict(scale, budget=4), tmp_path / "cut", device="cpu", progress=False)


def test_command_line_runs_a_scale_and_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    arguments = ["experiment", "at-efficiency", "--scale", "smoke", "--out", str(out), "--no-progress"]
    assert main([*arguments, "--methods", "natural", "--seeds", "4", "--budget", "1", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["means"]["fashion-mnist-lenet"]) == {"natural"}
    assert (out / "report.md").exists()
    assert main([*arguments, "--methods", "natural,nope"]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["experiment", "at-efficiency", "--out", str(blocker / "x"), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
