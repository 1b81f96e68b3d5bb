"""Evaluation suites: AutoAttack's versions as the reference sets them, the paper's attacks, and bad input."""

from __future__ import annotations

import pytest
import torch

from hmcam.evaluation import SUITES, evaluate_robustness, get_suite
from hmcam.evaluation.config import resolve_config

FIXED = dict(alpha=None, batch_size=8, seed=0, standalone=False, check_examples=0, source=None)


def resolve(model, x, y, attacks=None, **settings):
    arguments = {**FIXED, "suite": None, "norm": "linf", "steps": None, "restarts": None, "eps": 0.1, **settings}
    return resolve_config(model, x, y, attacks, **arguments)


def test_the_suites_are_the_reference_versions() -> None:
    standard = SUITES["autoattack"].specs("linf", None, None)
    assert [spec.label for spec in standard] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert dict(standard[0].options) == {"steps": 100, "restarts": 1, "loss": "ce"}
    assert dict(standard[1].options) == {"steps": 100, "n_target_classes": 9}
    assert dict(standard[2].options) == {"steps": 100, "n_target_classes": 9}
    assert dict(standard[3].options) == {"n_queries": 5000, "p_init": 0.8, "rescale_schedule": False}
    # Under L1 the reference gives APGD-CE 5 restarts and APGD-T 5 targets.
    l1 = SUITES["autoattack"].specs("l1", None, None)
    assert l1[0].options["restarts"] == 5 and l1[1].options["n_target_classes"] == 5
    plus = SUITES["autoattack-plus"].specs("l2", None, None)
    assert [spec.label for spec in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert [spec.options.get("restarts") for spec in plus[:3]] == [5, 5, 5]
    rand = SUITES["autoattack-rand"].specs("linf", None, None)
    assert [(spec.label, spec.options["eot_iter"]) for spec in rand] == [("apgd-ce", 20), ("apgd-dlr", 20)]
    assert [spec.label for spec in SUITES["paper"].specs("linf", 7, 2)] == ["fgsm", "pgd", "mpgd", "cwlinf"]
    fast = SUITES["fast"].specs("linf", 7, None)
    assert [spec.label for spec in fast] == ["apgd-ce", "apgd-t"] and fast[1].options["n_target_classes"] == 3


def test_paper_suite_runs_cheapest_first_with_the_evaluation_steps(digits_model, digits_correct) -> None:
    x, y = digits_correct[0][:8], digits_correct[1][:8]
    config = resolve(digits_model, x, y, suite="paper", steps=7, restarts=2)
    assert config.suite == "paper" and config.attacks == ("fgsm", "pgd", "mpgd", "cwlinf")
    assert config.steps == 7 and [spec.options.get("steps") for spec in config.specs] == [None, 7, 7, 7]
    # FGSM is deterministic: one run; the others start at random points.
    assert config.runs == (1, 2, 2, 2)
    assert config.to_dict()["suite"] == "paper" and "suite paper" in config.describe()
    custom = resolve(digits_model, x, y, ["pgd", "fgsm"])
    assert custom.suite == "custom" and custom.attacks == ("fgsm", "pgd") and custom.steps == 20


def test_autoattack_is_the_default_and_fixes_its_settings(digits_model, digits_correct) -> None:
    x, y = digits_correct[0][:8], digits_correct[1][:8]
    config = resolve(digits_model, x, y)
    assert config.suite == "autoattack" and config.attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert config.steps is None and config.restarts is None and config.runs == (1, 1, 1, 1)
    # The masking check halves APGD-CE's 100 steps.
    assert config.half is not None and config.half.label == "apgd-ce" and config.half.options["steps"] == 50


def test_target_counts_are_capped_by_the_classes(tiny_net_factory) -> None:
    model = tiny_net_factory(classes=3)
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    config = resolve(model, x, y, suite="fast")
    assert config.specs[1].options["n_target_classes"] == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"suite": "nope"}, "unknown suite 'nope'; choose one of"),
        ({"suite": 3}, "suite must be a string"),
        ({"suite": "autoattack", "steps": 10}, "suite 'autoattack' fixes its attacks' settings"),
        ({"suite": "autoattack", "restarts": 2}, "restarts applies to the 'paper' and 'fast' suites"),
        ({"suite": "autoattack", "alpha": 0.01}, "alpha applies to the 'paper' and 'fast' suites"),
        ({"suite": "autoattack-plus", "norm": "l1"}, r"defined for norms \[.linf., .l2.\], not .l1."),
        ({"suite": "paper", "attacks": ["pgd"]}, "give a suite or a list of attacks, not both"),
    ],
)
def test_bad_suites_are_one_line_errors(digits_model, digits_correct, settings, message) -> None:
    x, y = digits_correct[0][:4], digits_correct[1][:4]
    settings = dict(settings)
    attacks = settings.pop("attacks", None)
    with pytest.raises((ValueError, TypeError), match=message) as caught:
        evaluate_robustness(digits_model, x, y, attacks, eps=0.1, progress=False, check_examples=0, **settings)
    assert "\n" not in str(caught.value)


def test_get_suite_ignores_case() -> None:
    assert get_suite("AutoAttack") is SUITES["autoattack"]


def test_alpha_goes_to_the_attacks_that_take_it(digits_model, digits_correct) -> None:
    x, y = digits_correct[0][:8], digits_correct[1][:8]
    config = resolve(digits_model, x, y, ["fgsm", "pgd"], steps=7, alpha=0.5)
    assert [dict(spec.options) for spec in config.specs] == [{}, {"steps": 7, "alpha": 0.5}]


@pytest.mark.parametrize("suite", ["autoattack-plus", "autoattack-rand", "fast"])
def test_every_suite_runs_and_names_itself(digits_model, digits_correct, suite) -> None:
    # A large eps: APGD-CE fools every example at once, so later attacks have nothing left to do.
    x, y = digits_correct[0][:6], digits_correct[1][:6]
    result = evaluate_robustness(digits_model, x, y, suite=suite, eps=0.5, check_examples=0, progress=False)
    assert result.config.suite == suite and result.to_dict()["suite"] == suite
    assert result.robust_accuracy == 0.0 and f"The suite {suite} (" in result.markdown()
    assert result.attacks[0].name == "apgd-ce" and result.attacks[0].fooled == 6


class Quantized(torch.nn.Module):
    """Inputs rounded to 5 grey levels: the rounding's zero gradient masks the model's."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


def test_square_beating_the_gradient_attacks_warns_of_masking(digits_model, digits_correct) -> None:
    x, y = digits_correct[0][:12], digits_correct[1][:12]
    masked = Quantized(digits_model)
    result = evaluate_robustness(masked, x, y, eps=0.3, check_examples=0, progress=False)
    square = result.attacks[-1]
    assert square.name == "square" and square.fooled >= 3
    assert any("square, which uses no gradient, fooled" in warning for warning in result.warnings)
    honest = evaluate_robustness(digits_model, x, y, eps=0.3, check_examples=0, progress=False)
    assert not any("uses no gradient" in warning for warning in honest.warnings)
