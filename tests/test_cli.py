"""The command line end to end on real Fashion-MNIST: train, eval, attack, listings and errors."""

from __future__ import annotations

import json

import pytest

from hmcam.cli import main
from hmcam.core.storage import load_tensors


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_attack_writes_examples_summary_and_grid(capsys, lenet_checkpoint, tmp_path) -> None:
    code, out, _ = run(
        capsys,
        "attack",
        str(lenet_checkpoint),
        "--attack",
        "hmcam",
        "--eps",
        "0.1",
        "--steps",
        "2",
        "--samples",
        "3",
        "--limit",
        "16",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["attack"] == "hmcam" and summary["examples"] == 16 and 0 <= summary["acceptance_rate"] <= 1
    assert summary["run"]["kind"] == "attack" and json.loads((tmp_path / "config.json").read_text())["samples"] == 3
    assert (tmp_path / "chain.png").is_file() and (tmp_path / "report.html").is_file()
    assert summary["mean_linf"] <= 0.1 + 1e-6
    tensors, _ = load_tensors(tmp_path / "adversarial.safetensors")
    assert tensors["samples"].shape == (3, 16, 1, 28, 28) and tensors["adversarial"].shape == (16, 1, 28, 28)
    assert (tmp_path / "grid.png").stat().st_size > 1000
    assert json.loads(out)["out"] == str(tmp_path)


def test_eval_reports_clean_and_robust_accuracy(capsys, lenet_checkpoint, tmp_path) -> None:
    code, out, _ = run(
        capsys,
        "eval",
        str(lenet_checkpoint),
        "--attacks",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "3",
        "--limit",
        "32",
        "--no-progress",
        "--out",
        str(tmp_path / "eval"),
    )
    assert code == 0
    result = json.loads(out)
    assert result["robust_accuracy"] <= result["clean_accuracy"]
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert written["robust_accuracy"] == result["robust_accuracy"]


def test_train_then_resume(capsys, tmp_path) -> None:
    argv = [
        "train",
        "--dataset",
        "fashion-mnist",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--train-limit",
        "256",
        "--test-limit",
        "64",
        "--eval-subset",
        "0",
        "--batch-size",
        "64",
        "--out",
        str(tmp_path),
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and json.loads(out)["epochs"] == 1
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "metrics.jsonl").is_file()
    code, _, err = run(capsys, *argv)
    assert code == 2 and "already holds a training run" in err
    code, out, _ = run(capsys, *argv, "--resume")
    assert code == 0 and json.loads(out)["resumed_from_epoch"] == 1


def test_errors_are_readable_and_exit_non_zero(capsys, lenet_checkpoint, tmp_path) -> None:
    code, _, err = run(capsys, "attack", str(lenet_checkpoint), "--attack", "nope", "--out", str(tmp_path))
    assert code == 2 and "unknown attack 'nope'" in err
    code, _, err = run(capsys, "eval", str(tmp_path / "missing.safetensors"))
    assert code == 2 and "missing.safetensors" in err
    code, _, err = run(capsys, "eval", str(lenet_checkpoint), "--eps", "-1", "--limit", "4")
    assert code == 2 and "eps" in err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_listings(capsys) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and {"smallcnn", "resnet32", "wrn34_10"} <= set(json.loads(out))
    code, out, _ = run(capsys, "attacks")
    assert code == 0 and {"hmcam", "hmc", "pgd", "daa", "cw"} <= set(json.loads(out))
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and json.loads(out)["fashion-mnist"]["found"] is not None
