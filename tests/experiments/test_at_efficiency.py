"""The equal-cost training comparison: budgets, sweep, statistics, convergence, the smoke run's files, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image

from hmcam.core.validate import choose
from hmcam.experiments.at_efficiency import CLAIMS, EXPERIMENT, SCALES, Scale, key, plan, restrict, runs
from hmcam.experiments.at_efficiency_claims import (
    CONVERGED_GAIN,
    budget_gains,
    compare,
    converged,
    last_gain,
    mean_curve,
    oscillation,
    run_evidence,
    spread_summary,
    sweep_claims,
)
from hmcam.experiments.at_efficiency_plan import ATTACKS, arm_epochs, at_budget, budgets, planned_passes
from hmcam.experiments.at_efficiency_run import arm_folder
from hmcam.experiments.claims import FIELDS, VERDICTS, judge
from hmcam.experiments.framework import RunOptions

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole smoke scale (8 methods x 2 seeds, 5 of them also at 2 more budgets), run once for this module."""
    return _run(SCALES["smoke"], tmp_path_factory.mktemp("smoke"))


def _run(scale: Scale, out: Path) -> dict[str, Any]:
    return EXPERIMENT.run(scale, RunOptions(out, progress=False))


def judge_studies(runs: list[dict[str, Any]], scale: Scale) -> list[dict[str, Any]]:
    """The judged claim records of ``runs`` (every budget), as the framework judges them."""
    return judge(run_evidence(runs, scale))


def test_spread_and_comparison_by_hand() -> None:
    summary = spread_summary([0.5, 0.7, 0.6])
    assert summary["mean"] == pytest.approx(0.6) and summary["std"] == pytest.approx(0.1)
    assert (summary["min"], summary["max"]) == (0.5, 0.7)
    assert spread_summary([0.4])["std"] == 0.0
    assert compare([0.8, 0.9], [0.5, 0.7]) == {"difference": pytest.approx(0.25)}


def _runs(
    study: str,
    autoattack: dict[str, list[float]],
    clean: dict[str, list[float]],
    drops: dict[str, list[float]],
    budget: float = 6,
) -> list[dict[str, Any]]:
    """Fake finished runs at ``budget``, one per arm and seed: accuracies and the curve's total drop in points."""
    runs = []
    for arm, values in autoattack.items():
        for seed, value in enumerate(values):
            drop = drops.get(arm, [0.0] * len(values))[seed] / 100
            runs.append(
                {
                    "study": study,
                    "arm": arm,
                    "seed": seed,
                    "budget": budget,
                    "updates": 4.0 if arm.startswith("CAT") else 2.0,
                    "clean": clean.get(arm, [80.0] * len(values))[seed] / 100,
                    # The paper's attacks a fixed distance above AutoAttack: every difference is AutoAttack's.
                    **{name: (value + shift) / 100 for name, shift in (("pgd", 5), ("mpgd", 4), ("cwlinf", 6))},
                    "worst": (value + 3) / 100,
                    "autoattack": value / 100,
                    "train_minutes": 1.0,
                    "passes": 10.0 if arm == "CAT" else 8.0,
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
    scale = restrict(SCALES["smoke"], sweep=())
    study = scale.studies[0].name
    records = judge_studies(_runs(study, AUTOATTACK, CLEAN, DROPS), scale)
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
    assert "1.25x the gradient passes" in pgd["ours"]  # the passes each arm made, not the planned budget
    assert found["clean-vs-pgd-at"]["direction"] == "noninferior" and found["clean-vs-pgd-at"]["margin"] == 3.4
    assert found["clean-vs-pgd-at"]["estimate"] == pytest.approx(-2.0)
    assert found["steady-vs-yopo"]["direction"] == "less"
    assert found["steady-vs-yopo"]["estimate"] == pytest.approx(-10.5)
    # Five points of clean accuracy lost: significantly more than the margin.
    worse = judge_studies(_runs(study, AUTOATTACK, {**CLEAN, "CAT": [77.0, 77.1, 77.2]}, DROPS), scale)
    assert worse[3]["name"] == "clean-vs-pgd-at" and worse[3]["verdict"] == "contradicted"


def test_claims_need_two_seeds_the_arms_and_one_family_per_run() -> None:
    scale = restrict(SCALES["smoke"], sweep=())
    study = scale.studies[0].name
    one_seed = {arm: values[:1] for arm, values in AUTOATTACK.items()}
    records = judge_studies(_runs(study, one_seed, CLEAN, DROPS), scale)
    assert len(records) == 6 and all(record["verdict"] == "untestable" for record in records)
    assert {record["reason"] for record in records} == {"needs at least 2 seeds per arm"}
    # Claims about arms the study lacks are untestable; all of them without CAT.
    partial = {arm: AUTOATTACK[arm] for arm in ("CAT", "Free")}
    judged = judge_studies(_runs(study, partial, CLEAN, DROPS), scale)
    assert [r["name"] for r in judged] == list(CLAIMS)
    assert [r["name"] for r in judged if r["verdict"] != "untestable"] == ["cat-vs-free"]
    assert next(r for r in judged if r["name"] == "jcd-vs-ce")["reason"] == "no runs of CAT and CAT-CE"
    alone = judge_studies(_runs(study, {"Free": AUTOATTACK["Free"]}, CLEAN, DROPS), scale)
    assert {r["verdict"] for r in alone} == {"untestable"} and len(alone) == len(CLAIMS)
    # Two studies: one Holm family of twelve claims, each named after its study.
    twice = dataclasses.replace(scale, studies=(scale.studies[0], dataclasses.replace(scale.studies[0], name="b")))
    runs = _runs(study, AUTOATTACK, CLEAN, DROPS) + _runs("b", AUTOATTACK, CLEAN, DROPS)
    both = judge_studies(runs, twice)
    assert len(both) == 12 and both[6]["name"] == "b/cat-vs-pgd-at" and both[6]["claim"].endswith("[b]")
    alone = judge_studies(_runs(study, AUTOATTACK, CLEAN, DROPS), scale)
    assert both[0]["name"] == f"{study}/cat-vs-pgd-at" and both[0]["p_value"] == alone[0]["p_value"]
    assert both[0]["p_adjusted"] > alone[0]["p_adjusted"]
    assert set(CLAIMS) == {record["name"] for record in alone}


def test_oscillation_sums_the_drops_of_robust_accuracy() -> None:
    curve = [{"robust": value} for value in (0.1, 0.3, 0.2, 0.25, None, 0.05)]
    assert oscillation(curve) == pytest.approx(0.1 + 0.2)
    assert oscillation([{"robust": 0.1}, {"robust": 0.4}]) == 0.0


def test_sweep_claims_are_declared_per_budget_but_the_main_one_and_judged_by_hand() -> None:
    scale = SCALES["smoke"]
    study = scale.studies[0]
    declared = [claim.name for claim in sweep_claims(study)]
    # The main budget (6) is one of the sweep's: the main claims judge it, the sweep only the others.
    assert study.budget == 6 and declared == [f"sweep-{b}/cat-vs-{r}" for b in (3, 9) for r in ("pgd-at", "trades")]
    # CAT clearly ahead at 3 passes, level with both rivals at 9.
    main = _runs(study.name, {**AUTOATTACK, "TRADES": [38.0, 38.5, 39.0]}, CLEAN, DROPS)
    swept = _runs(study.name, {a: AUTOATTACK[a] for a in ("CAT", "PGD-AT")} | {"TRADES": [40, 39, 41]}, {}, {}, 3)
    level = {"CAT": [45.0, 46.0, 45.5], "PGD-AT": [46.0, 45.0, 45.5], "TRADES": [45.5, 45.0, 46.0]}
    swept += _runs(study.name, level, {}, {}, 9)
    records = judge_studies(main + swept, scale)
    assert all(set(FIELDS) <= set(record) and record["verdict"] in VERDICTS for record in records)
    found = {record["name"]: record for record in records if record["name"].startswith("sweep-")}
    assert list(found) == declared and [r["name"] for r in records][: len(CLAIMS)] == list(CLAIMS)
    assert [found[name]["verdict"] for name in declared] == ["supported"] * 2 + ["inconclusive"] * 2
    assert all(record["unit"] == "seeds" and record["n"] == 3 for record in found.values())
    assert found["sweep-3/cat-vs-pgd-at"]["estimate"] == pytest.approx(7.0)
    assert "weight updates per example: CAT 4, PGD-AT 2" in found["sweep-3/cat-vs-pgd-at"]["ours"]
    # The sweep's runs do not enter the main claims' estimates; they measure convergence. PGD-AT is 7 points
    # more robust at 9 passes than at 6, so the main claim against it is untestable; the others are unchanged.
    everything = {r["name"]: r for r in records}
    assert everything["cat-vs-pgd-at"]["verdict"] == "untestable"
    assert everything["cat-vs-pgd-at"]["reason"] == (
        "PGD-AT had not converged at 6 passes per example: +7.0 AutoAttack points at 9"
    )
    others = [name for name in CLAIMS if name != "cat-vs-pgd-at"]
    alone = {r["name"]: r for r in judge_studies(main, scale)}
    assert {n: alone[n]["estimate"] for n in others} == {n: everything[n]["estimate"] for n in others}
    assert alone["cat-vs-pgd-at"]["verdict"] == "supported"  # without a larger budget, convergence is not measured
    # Without the other budgets' runs those claims are untestable, and one seed is too few.
    missing = {r["name"]: r for r in judge_studies(main, scale)}
    assert missing["sweep-9/cat-vs-trades"]["verdict"] == "untestable"
    one = judge_studies([r for r in main + swept if r["seed"] == 0], scale)
    assert {r["reason"] for r in one if r["name"] == "sweep-3/cat-vs-pgd-at"} == {"needs at least 2 seeds per arm"}


def test_mean_curve_and_last_epoch_gain() -> None:
    first = [{"epoch": 1, "passes": 1, "minutes": 1, "clean": 0.5, "robust": 0.2}]
    first.append({"epoch": 2, "passes": 2, "minutes": 3, "clean": 0.7, "robust": None})
    second = [{**point, "minutes": 2 * point["minutes"], "clean": point["clean"] - 0.1} for point in first]
    second[1]["robust"] = 0.3
    mean = mean_curve([first, second])
    assert [p["minutes"] for p in mean] == [1.5, 4.5] and mean[1]["clean"] == pytest.approx(0.65)
    assert mean[0]["robust"] == pytest.approx(0.2) and mean[1]["robust"] is None
    assert last_gain(mean) == {"clean": pytest.approx(0.2), "robust": None}
    assert last_gain(mean[:1]) == {"clean": None, "robust": None}


def test_an_arm_converged_when_the_next_budget_gained_under_the_threshold() -> None:
    assert CONVERGED_GAIN == 0.01
    assert converged(0.009) is True and converged(-0.02) is True
    assert converged(0.01) is False and converged(0.03) is False
    assert converged(None) is None
    scale = SCALES["smoke"]
    study = scale.studies[0]
    main = _runs(study.name, AUTOATTACK, CLEAN, DROPS)
    # At 9 passes CAT gains half a point, PGD-AT two; a smaller budget says nothing of convergence.
    runs = main + _runs(study.name, {"CAT": [45.5, 46.5, 46.0], "PGD-AT": [40.0, 41.0, 40.5]}, {}, {}, 9)
    runs += _runs(study.name, {"CAT": [10.0, 11.0, 12.0], "Free": [10.0, 11.0, 12.0]}, {}, {}, 3)
    gains = budget_gains(study, runs)
    assert gains["CAT"] == {"budget": 9, "gain": pytest.approx(0.005)}
    assert gains["PGD-AT"] == {"budget": 9, "gain": pytest.approx(0.02)}
    assert gains["Free"] is None and gains["natural"] is None
    found = {r["name"]: r for r in judge_studies(runs, scale)}
    assert found["cat-vs-pgd-at"]["verdict"] == "untestable"
    assert (
        found["cat-vs-pgd-at"]["reason"]
        == "PGD-AT had not converged at 6 passes per example: +2.0 AutoAttack points at 9"
    )
    # Free's convergence was not measured: its claim is judged, and says what was measured.
    assert found["cat-vs-free"]["verdict"] == "inconclusive"
    assert found["cat-vs-free"]["ours"].endswith("; AutoAttack gain at the next budget: CAT +0.5 at 9 points")
    assert found["jcd-vs-ce"]["verdict"] == "inconclusive"  # only the robustness claims wait for convergence
    # CAT itself still rising makes every robustness claim untestable.
    rising = main + _runs(study.name, {"CAT": [48.0, 49.0, 48.5]}, {}, {}, 9)
    reasons = {r["name"]: r["reason"] for r in judge_studies(rising, scale)}
    for rival in ("pgd-at", "free", "yopo"):
        assert (
            reasons[f"cat-vs-{rival}"] == "CAT had not converged at 6 passes per example: +3.0 AutoAttack points at 9"
        )


def test_small_scale_gives_every_method_the_same_budget_in_passes() -> None:
    scale = SCALES["small"]
    study = scale.studies[0]
    assert scale.seeds == (0, 1, 2, 3, 4) and study.budget == 40 and study.eps == 0.1
    assert study.model == "mlp" and "train_limit" not in study.train and study.test_limit is None
    assert study.train["schedule"] == "cosine" and study.robust_examples == study.eval_batch_size == 200
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
    # YOPO-5-3: five full passes and five through the first layer, a large share of the MLP's multiply-adds.
    assert 5 < passes < 10
    assert epochs["YOPO"] == round(40 / passes)
    # The sweep: CAT and its rivals at three budgets bracketing the main one, shown in the plan; the largest
    # measures every rival's convergence at the main budget.
    assert len(study.sweep) >= 3 and study.budget in study.sweep
    assert set(study.sweep_arms) == {"CAT", "PGD-AT", "TRADES", "Free", "YOPO"}
    shown = plan(scale)["studies"][0]["sweep"]
    assert [row["budget"] for row in shown] == sorted(study.sweep)
    assert all(set(row["arms"]) == set(study.sweep_arms) for row in shown)
    assert list(study.sweep) == [20, 40, 80] and [row["arms"]["CAT"] for row in shown] == [2, 4, 9]
    assert list(budgets(study)) == [40, 20, 80]
    assert [arm.label for arm in at_budget(study, 80).arms] == ["PGD-AT", "Free", "YOPO", "TRADES", "CAT"]
    # 8 arms at 40 passes, 5 at 20 and 80, 5 seeds each: 90 runs, none twice.
    assert len(runs(scale)) == 90 == len({key(job) for job in runs(scale)})


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


def json_runs(out: Path) -> list[dict[str, Any]]:
    """Every run's cached result in the run folder ``out``, at every budget."""
    return [json.loads(path.read_text()) for path in sorted((out / "cache").glob("*.outcome.json"))]


def _cached(out: Path, budget: float, arm: str, seed: int) -> Path:
    return out / "cache" / f"{key((budget, 'fashion-mnist-mlp', arm, seed))}.outcome.json"


def test_smoke_run_writes_every_table_figure_and_claim(smoke: dict[str, Any]) -> None:
    out = Path(smoke["out"])
    study = SCALES["smoke"].studies[0]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {row["budget"] for row in rows} == {"6"}
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
    results = json.loads((out / "results.json").read_text())
    summary = results["studies"][study.name]
    assert set(summary["arms"]) == {arm.label for arm in study.arms}
    natural = [float(r["clean"]) for r in rows if r["arm"] == "natural"]
    assert summary["arms"]["natural"]["clean"]["mean"] == pytest.approx(sum(natural) / 2)
    assert len(summary["differences"]) == len(study.arms) * (len(study.arms) - 1)
    figure = out / f"{study.name}-curves.png"
    assert figure.read_bytes().startswith(PNG)
    assert image.imread(figure).shape[2] in (3, 4)  # it decodes to an RGB(A) image
    report = (out / "report.md").read_text()
    for text in ("CAT is more robust than PGD-AT", "than Free", "than YOPO", "J_cd", "Fig. 5", "| CAT-CE |"):
        assert text in report
    assert f"![{figure.stem}]({figure.name})" in report and "last-epoch gain" in report
    assert "### Budget sweep" in report and "### Convergence" in report and "### Claims" in report
    # The figure's curves are the means over seeds of what the trainer recorded per epoch.
    per_seed = [json.loads(_cached(out, 6, "CAT", s).read_text())["curve"] for s in (0, 1)]
    assert summary["curves"]["CAT"] == mean_curve(per_seed)
    gains = summary["last_gain"]
    assert gains["natural"]["clean"] == pytest.approx(
        summary["curves"]["natural"][-1]["clean"] - summary["curves"]["natural"][-2]["clean"]
    )
    # Convergence per arm at the main budget: the AutoAttack gain at the sweep's next budget against the threshold.
    assert summary["converged_gain"] == CONVERGED_GAIN
    assert summary["budget_gain"] == budget_gains(study, json_runs(out))
    further = summary["budget_gain"]
    assert {label for label, gain in further.items() if gain is not None} == set(study.sweep_arms)
    assert summary["converged"] == {label: converged(None if g is None else g["gain"]) for label, g in further.items()}
    late = [arm.label for arm in study.arms if summary["converged"][arm.label] is False]
    listed = f"next budget, mean over seeds): {', '.join(late)}; a robustness claim against them is untestable."
    assert (listed in report) == bool(late)
    assert ("Every arm with a measured convergence converged" in report) != bool(late)
    assert "Not measured (no run at a larger budget): natural, fast, CAT-CE." in report
    # The same, per arm in points, in convergence.csv: the table the results page shows.
    assert results["shown_tables"] == ["convergence.csv"]
    table = {row["arm"]: row for row in csv.DictReader((out / "convergence.csv").open())}
    assert list(table) == [arm.label for arm in study.arms]  # in the study's order, however results.json sorts keys
    assert table["natural"]["next_budget"] == "n/a" and table["natural"]["converged"] == "n/a"
    cat = summary["budget_gain"]["CAT"]
    assert float(table["CAT"]["next_budget"]) == cat["budget"] == 9
    assert float(table["CAT"]["autoattack_gain"]) == pytest.approx(100 * cat["gain"], abs=0.01)
    assert table["CAT"]["converged"] == ("yes" if summary["converged"]["CAT"] else "no")
    claims = results["claims"]
    assert [claim["name"] for claim in claims] == [*CLAIMS, *(claim.name for claim in sweep_claims(study))]
    assert len(claims) == 10 and all(claim["verdict"] in VERDICTS and claim["paper"] for claim in claims)
    assert all(set(FIELDS) <= set(claim) and claim["unit"] == "seeds" for claim in claims)
    # Every claim judged on both seeds, but a robustness claim against an arm still rising at the next budget.
    for claim in claims:
        gated = claim["verdict"] == "untestable" and "had not converged" in claim["reason"]
        assert claim["n"] == 2 or (gated and claim["name"].startswith("cat-vs-")), claim
    table = list(csv.DictReader((out / "claims.csv").open()))
    assert [row["name"] for row in table] == [claim["name"] for claim in claims] and list(table[0]) == list(FIELDS)
    assert smoke["claims"] == claims
    assert "estimate [95% CI]" in report
    assert json.loads((out / "config.json").read_text())["experiment"] == "at-efficiency"
    assert (out / "report.html").is_file() and (out / "summary.csv").is_file()
    curve = json.loads(_cached(out, 6, "natural", 0).read_text())["curve"]
    assert [point["epoch"] for point in curve] == list(range(1, 7))  # a budget of 6 passes
    assert all(b["passes"] > a["passes"] and b["minutes"] > a["minutes"] for a, b in pairwise(curve))
    assert (arm_folder(out, study, study.arms[0], 0) / "train").is_dir()


def test_smoke_run_sweeps_the_budget_and_counts_weight_updates(smoke: dict[str, Any]) -> None:
    out = Path(smoke["out"])
    study = SCALES["smoke"].studies[0]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert sorted({(float(r["budget"]), r["arm"]) for r in rows}) == sorted(
        (b, a) for b in (3.0, 9.0) for a in study.sweep_arms
    )
    assert len(rows) == len(study.sweep_arms) * 2 * 2
    for row in rows:
        swept = at_budget(study, float(row["budget"]))
        arm = next(arm for arm in swept.arms if arm.label == row["arm"])
        assert int(row["epochs"]) == arm_epochs(swept, arm)
        run = _cached(out, float(row["budget"]), arm.label, int(row["seed"]))
        assert json.loads(run.read_text())["budget"] == float(row["budget"])
        assert (arm_folder(out, swept, arm, int(row["seed"])) / "train").is_dir()
    # Weight updates per example: one per minibatch and epoch, T per minibatch for Free, CAT and CAT-CE.
    main = {(r["arm"], r["seed"]): r for r in csv.DictReader((out / "results.csv").open())}
    replays = {"natural": 1, "PGD-AT": 1, "TRADES": 1, "fast": 1, "Free": 2, "CAT": 2, "CAT-CE": 2}
    for (label, _), row in main.items():
        if label in replays:
            assert float(row["updates"]) == pytest.approx(int(row["epochs"]) * replays[label]), label
    results = json.loads((out / "results.json").read_text())
    sweep = results["studies"][study.name]["sweep"]
    assert [row["budget"] for row in sweep] == [3, 6, 9]
    assert all(set(row["arms"]) == set(study.sweep_arms) for row in sweep)
    assert all(row["arms"]["CAT"]["autoattack"]["std"] >= 0 for row in sweep)
    # The main runs at 6 passes are the sweep's at 6: one run each, one cached result.
    assert sweep[1]["arms"]["CAT"] == results["studies"][study.name]["arms"]["CAT"]
    assert (
        len(list((out / "cache").glob("*.outcome.json")))
        == len(runs(SCALES["smoke"]))
        == 8 * 2 + len(study.sweep_arms) * 2 * 2
    )
    assert [row["budget"] for row in results["plan"]["studies"][0]["sweep"]] == [3, 6, 9]


def test_a_second_run_reuses_the_cache_and_refuses_another_plan(tmp_path: Path) -> None:
    scale = restrict(SCALES["smoke"], seeds=[0], methods=["natural", "cat"], budget=3, sweep=())
    first = _run(scale, tmp_path)
    done = {arm: _cached(tmp_path, 3, arm, 0) for arm in ("natural", "CAT")}
    stamps = {arm: path.stat().st_mtime_ns for arm, path in done.items()}
    # A run killed after its first job: the finished job is read back, the other one is computed again.
    done["CAT"].unlink()
    (tmp_path / "report.md").unlink()
    again = _run(scale, tmp_path)
    assert done["natural"].stat().st_mtime_ns == stamps["natural"] and done["CAT"].exists()
    assert again["studies"] == first["studies"] and again["rows"] == first["rows"]
    assert [c["estimate"] for c in again["claims"]] == [c["estimate"] for c in first["claims"]]
    stamps = {arm: path.stat().st_mtime_ns for arm, path in done.items()}
    _run(scale, tmp_path)
    assert {arm: path.stat().st_mtime_ns for arm, path in done.items()} == stamps
    # The same keys computing something else (another training subset) are refused.
    with pytest.raises(ValueError, match="holds a run of another plan for budget-3-fashion-mnist-mlp-CAT-seed0"):
        _run(restrict(scale, train_limit=64), tmp_path)
