"""robustbench.json: RobustBench's model_info layout, eps as RobustBench writes it, AutoAttack never mislabelled."""

from __future__ import annotations

import json

import pytest
from torch import Tensor

from hmcam.evaluation import evaluate_robustness
from hmcam.evaluation.robustbench import (
    MODEL_INFO_KEYS,
    ROBUSTBENCH_FILE,
    format_accuracy,
    format_eps,
    robustbench_info,
    threat_model,
)

# A model_info file of RobustBench (model_info/cifar10/Linf/Carmon2019Unlabeled.json), for its keys and value types.
CARMON2019 = {
    "link": "https://arxiv.org/abs/1905.13736",
    "name": "Unlabeled Data Improves Adversarial Robustness",
    "authors": "Yair Carmon, Aditi Raghunathan, Ludwig Schmidt, Percy Liang, John C. Duchi",
    "additional_data": True,
    "number_forward_passes": 1,
    "dataset": "cifar10",
    "venue": "NeurIPS 2019",
    "architecture": "WideResNet-28-10",
    "eps": "8/255",
    "clean_acc": "89.69",
    "reported": "62.5",
    "autoattack_acc": "59.53",
}


@pytest.fixture(scope="module")
def data(digits) -> tuple[Tensor, Tensor]:
    return digits["x_test"][:48], digits["y_test"][:48]


@pytest.mark.parametrize(
    ("eps", "written"),
    [
        (8 / 255, "8/255"),
        (4 / 255, "4/255"),
        (1 / 255, "1/255"),
        (0.5, "0.5"),
        (0.1, "0.1"),
        (0.3, "0.3"),
        (1.0, "1.0"),
        (12.0, "12.0"),
    ],
)
def test_eps_is_written_as_robustbench_writes_it(eps: float, written: str) -> None:
    assert format_eps(eps) == written


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), True])
def test_eps_must_be_a_positive_number(bad: float) -> None:
    with pytest.raises(ValueError, match="eps must be"):
        format_eps(bad)


def test_accuracies_and_threat_models_in_robustbench_form() -> None:
    assert format_accuracy(0.5953) == "59.53" and format_accuracy(1.0) == "100.00" and format_accuracy(0) == "0.00"
    assert [threat_model(norm) for norm in ("linf", "l2", "l1")] == ["Linf", "L2", "L1"]
    with pytest.raises(ValueError, match="unknown norm"):
        threat_model("l3")


def test_model_info_layout_holds_robustbenchs_keys_in_order() -> None:
    assert list(MODEL_INFO_KEYS[: len(CARMON2019)]) == list(CARMON2019)
    assert MODEL_INFO_KEYS[-2:] == ("footnote", "unreliable")


def test_an_autoattack_evaluation_fills_autoattack_acc(digits_model, data) -> None:
    x, y = data[0][:16], data[1][:16]
    # At 64/255 APGD-CE fools every digit, so the later (costly) attacks of the suite have nothing left to do.
    result = evaluate_robustness(
        digits_model, x, y, suite="autoattack", eps=64 / 255, batch_size=16, check_examples=0, progress=False
    )
    info = robustbench_info(result, {"checkpoint": "digits.safetensors", "dataset": "cifar10", "architecture": "CNN"})
    assert list(info)[: len(MODEL_INFO_KEYS)] == list(MODEL_INFO_KEYS)
    for key, value in CARMON2019.items():
        if info[key] is not None:
            assert type(info[key]) is type(value), key
    assert info["eps"] == "64/255" and info["threat_model"] == "Linf" and info["n_examples"] == 16
    assert info["clean_acc"] == f"{100 * result.clean_accuracy:.2f}"
    assert info["autoattack_acc"] == info["robust_acc"] == f"{100 * result.robust_accuracy:.2f}"
    assert info["attack_suite"] == "autoattack" and info["dataset"] == "cifar10" and info["architecture"] == "CNN"
    assert info["name"] == "digits.safetensors" and info["link"] is None and info["reported"] is None
    assert [attack["label"] for attack in info["suite_settings"]["attacks"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert "NOT AutoAttack" not in info["footnote"] and "16 examples of cifar10" in info["footnote"]
    assert info["unreliable"] is False and info["eps_value"] == 64 / 255


def test_other_suites_are_never_labelled_autoattack(digits_model, data, tmp_path) -> None:
    x, y = data
    result = evaluate_robustness(
        digits_model, x, y, ["fgsm", "pgd"], eps=0.1, steps=3, check_examples=0, progress=False
    )
    paths = result.save(tmp_path / "out", {"checkpoint": "digits"}, {"dataset": "digits", "architecture": None})
    info = json.loads((tmp_path / "out" / ROBUSTBENCH_FILE).read_text())
    assert paths["robustbench"] == str(tmp_path / "out" / ROBUSTBENCH_FILE)
    assert info["autoattack_acc"] is None and info["attack_suite"] == "custom"
    assert info["robust_acc"] == f"{100 * result.robust_accuracy:.2f}" and info["eps"] == "0.1"
    assert "NOT AutoAttack" in info["footnote"] and info["dataset"] == "digits"
    assert info["suite_settings"]["steps"] == 3 and info["suite_settings"]["mode"] == "cascade"
    assert [attack["attack"] for attack in info["suite_settings"]["attacks"]] == ["fgsm", "pgd"]
    # The model information goes to robustbench.json only, results.json keeps its own fields.
    assert "dataset" not in json.loads((tmp_path / "out" / "results.json").read_text())
