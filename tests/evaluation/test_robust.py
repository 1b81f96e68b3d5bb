"""Robust evaluation: the worst case, the cascade, honest per-attack numbers, masking warnings, files, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from hmcam.attacks import ATTACKS, PGD, Ball
from hmcam.evaluation import PER_ATTACK_NOTE, evaluate_robustness, predict
from hmcam.evaluation.masking import restart_warning, tolerance

SETTINGS = dict(eps=0.1, steps=5, batch_size=32, check_examples=0, progress=False)


@pytest.fixture(scope="module")
def data(digits) -> tuple[Tensor, Tensor]:
    return digits["x_test"][:96], digits["y_test"][:96]


def test_the_worst_case_counts_an_example_robust_only_if_it_survives_every_attack(digits_model, data) -> None:
    x, y = data
    result = evaluate_robustness(digits_model, x, y, ["pgd", "fgsm", "cwlinf"], **{**SETTINGS, "standalone": True})
    correct = predict(digits_model, x) == y
    assert result.clean_accuracy == pytest.approx(float(correct.float().mean()))
    assert torch.equal(result.robust, correct & ~result.standalone.any(dim=0))
    assert result.robust_accuracy == pytest.approx(float(result.robust.float().mean()))
    standalone = [report.standalone_robust_accuracy for report in result.attacks]
    cumulative = [report.cumulative_robust_accuracy for report in result.attacks]
    assert all(value is not None and value >= result.robust_accuracy for value in standalone)
    assert cumulative == sorted(cumulative, reverse=True) and cumulative[-1] == result.robust_accuracy
    # An attack's standalone verdict agrees with the cascade wherever the attack reached the example.
    for index in range(len(result.attacks)):
        reached = result.outcomes[index] > 0
        assert torch.equal(result.standalone[index][reached], (result.outcomes[index] == 2)[reached])
    assert 0 < result.robust_accuracy < result.clean_accuracy


def test_attacks_run_cheapest_first_and_only_on_what_is_still_robust(digits_model, data) -> None:
    x, y = data
    result = evaluate_robustness(digits_model, x, y, ["pgd", "mpgd", "fgsm"], **SETTINGS)
    assert result.config.attacks == ("fgsm", "pgd", "mpgd") and result.config.requested == ("pgd", "mpgd", "fgsm")
    correct = predict(digits_model, x) == y
    fgsm, pgd, mpgd = result.attacks
    assert fgsm.reached == int(correct.sum()) and fgsm.gradient_evaluations == fgsm.reached
    assert pgd.reached == fgsm.reached - fgsm.fooled and mpgd.reached == pgd.reached - pgd.fooled
    assert pgd.fooled > 0
    # What FGSM fooled never reached PGD; PGD stops on each example at its first fooling iterate.
    assert not bool(((result.outcomes[0] == 2) & (result.outcomes[1] > 0)).any())
    assert pgd.gradient_evaluations < pgd.reached * 5
    assert result.fooled_by.tolist().count(1) == pgd.fooled


def test_per_attack_numbers_say_what_they_mean(digits_model, data) -> None:
    x, y = data
    result = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **SETTINGS)
    summary = result.to_dict()
    assert summary["per_attack_note"] == PER_ATTACK_NOTE and "among the examples that reached it" in PER_ATTACK_NOTE
    assert summary["mode"] == "cascade"
    assert all(row["standalone_robust_accuracy"] is None for row in summary["attacks"])
    pgd = summary["attacks"][1]
    survived = int((result.outcomes[1] == 1).sum())
    assert pgd["robust_accuracy_among_reached"] == pytest.approx(survived / pgd["reached"])
    assert json.loads(json.dumps(summary)) == summary


def test_more_restarts_never_raise_robust_accuracy(digits_model, data) -> None:
    x, y = data
    one = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **{**SETTINGS, "eps": 0.05, "steps": 2})
    three = evaluate_robustness(
        digits_model, x, y, ["fgsm", "pgd"], **{**SETTINGS, "eps": 0.05, "steps": 2, "restarts": 3}
    )
    assert [report.runs for report in three.attacks] == [1, 3]  # FGSM is deterministic: one run
    assert len(three.attacks[1].fooled_per_run) == 3
    # The first run of each restart schedule is the same run (same seed), so three can only add.
    assert three.attacks[1].fooled_per_run[0] == one.attacks[1].fooled_per_run[0]
    assert bool((three.robust <= one.robust).all())


def test_files_hold_the_summary_the_attack_table_and_every_example(digits_model, data, tmp_path) -> None:
    x, y = data
    result = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **{**SETTINGS, "standalone": True})
    paths = result.save(tmp_path / "out", {"checkpoint": "digits"})
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["checkpoint"] == "digits" and summary["robust_accuracy"] == result.robust_accuracy
    assert summary["run"]["kind"] == "evaluation" and summary["run"]["wall_seconds"] >= 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["kind"] == "evaluation" and config["attacks"] == ["fgsm", "pgd"]
    assert "| pgd |" in (tmp_path / "out" / "report.md").read_text() and Path(paths["page"]).is_file()
    with open(paths["attacks_csv"]) as handle:
        attacks = list(csv.DictReader(handle))
    assert [row["name"] for row in attacks] == ["fgsm", "pgd"]
    with open(paths["examples_csv"]) as handle:
        examples = list(csv.DictReader(handle))
    assert len(examples) == len(x)
    assert sum(int(row["robust"]) for row in examples) == int(result.robust.sum())
    fooled = [row for row in examples if row["fooled_by"]]
    assert fooled and all(float(row["perturbation"]) <= 0.1 + 1e-6 for row in fooled)
    assert all(row["adversarial_prediction"] != row["label"] for row in fooled)
    assert {row["pgd"] for row in examples} <= {"fooled", "survived", "skipped"}
    assert "pgd_standalone" in examples[0]


# ------------------------------------------------------------------------------------------ masking checks
def test_a_one_step_attack_stronger_than_an_iterative_one_is_flagged(digits_model, data) -> None:
    x, y = data
    settings = {**SETTINGS, "eps": 0.2, "check_examples": 64}
    honest = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **settings)
    assert honest.warnings == ()
    # A step of 1e-4 cannot get anywhere: PGD is left with its random start, far weaker than FGSM.
    crippled = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **settings, alpha=1e-4)
    assert any("fgsm (one step) is stronger than pgd (iterative)" in text for text in crippled.warnings)
    checks = crippled.checks["standalone_robust_accuracy"]
    assert checks["fgsm"] < checks["pgd"]


class StrongerWithFewerSteps(PGD):
    """A PGD whose runs of more than 2 steps stay at the clean input: robust accuracy rises with steps."""

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return super().perturb(ball, y, generator) if self.steps <= 2 else ball.center


def test_robust_accuracy_rising_with_more_steps_is_flagged(digits_model, data, monkeypatch) -> None:
    x, y = data
    settings = {**SETTINGS, "eps": 0.2, "steps": 4, "check_examples": 64}
    honest = evaluate_robustness(digits_model, x, y, ["pgd"], **settings)
    assert not any("steps is stronger" in text for text in honest.warnings)
    assert honest.checks["half_steps"]["steps"] == 2
    monkeypatch.setitem(ATTACKS, "pgd", StrongerWithFewerSteps)
    masked = evaluate_robustness(digits_model, x, y, ["pgd"], **settings)
    assert any("pgd with 2 steps is stronger than with 4 steps" in text for text in masked.warnings)


class Quantized(nn.Module):
    """A model fed inputs rounded to 5 grey levels: rounding has a zero gradient, which masks it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * 4) / 4)


def linear_digits_model(digits: dict[str, Tensor]) -> nn.Module:
    """Softmax regression on the digits: an honest, weaker source of transfer examples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(digits["x_train"]), digits["y_train"]).backward()
        optimizer.step()
    return model.eval()


def test_transfer_beating_white_box_is_flagged(digits, digits_model, data) -> None:
    x, y = data
    settings = {**SETTINGS, "eps": 0.2, "check_examples": 96}
    masked = evaluate_robustness(Quantized(digits_model), x, y, ["fgsm", "pgd"], **settings, source=digits_model)
    transfer = masked.checks["transfer"]
    assert transfer["robust_accuracy"] < transfer["white_box_robust_accuracy"]
    assert any("transfer attack (pgd on the source model) is stronger" in text for text in masked.warnings)
    honest = evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], **settings, source=linear_digits_model(digits))
    assert not any("transfer" in text for text in honest.warnings)


def test_restart_warning_and_tolerance() -> None:
    assert tolerance(200, 0.01) == 2 and tolerance(10, 0.01) == 1
    assert restart_warning("pgd", 1, 50, 100, 1) is None
    assert restart_warning("pgd", 3, 1, 100, 1) is None
    message = restart_warning("pgd", 3, 5, 100, 1)
    assert message is not None and "last restart of pgd (3 of 3) still fooled 5 of 100" in message


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"restarts": 0}, "restarts must be >= 1, got 0"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"eps": -0.1}, "eps must be a finite number > 0"),
        ({"attacks": ["pgd", "nope"]}, "unknown attack 'nope'"),
        ({"attacks": ["pgd", "PGD"]}, "more than once"),
        ({"attacks": []}, "at least one attack"),
        ({"attacks": ["cw"]}, "cw searches for a minimal perturbation"),
        ({"check_examples": -1}, "check_examples must be an integer >= 0"),
        ({"margin": 1.5}, "margin must be a number in"),
        ({"norm": "l3"}, "unknown norm 'l3'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(digits_model, data, change, message) -> None:
    x, y = data
    arguments = {**SETTINGS, "attacks": ["fgsm", "pgd"], **change}
    attacks = arguments.pop("attacks")
    with pytest.raises((ValueError, TypeError), match=message):
        evaluate_robustness(digits_model, x, y, attacks, **arguments)
