"""``hmcam eval|attack MODEL`` for models hmcam did not train: code + weights, TorchScript, torch.export, --data."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hmcam.cli import main
from hmcam.data import ImageDataset, load_dataset

MODEL_CODE = """
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
"""

QUICK = ["--attacks", "fgsm", "--eps", "0.1", "--check-examples", "0", "--no-progress", "--batch-size", "32"]
RUN_FILES = ("config.json", "results.json", "results.csv", "examples.csv", "report.md", "report.html")


def trained(model: nn.Module) -> nn.Module:
    """``model`` trained for a few seconds on 1000 Fashion-MNIST images, so its accuracy says something."""
    train = load_dataset("fashion-mnist", "train", limit=1000)
    assert isinstance(train, ImageDataset)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for start in range(0, 1000, 100):
            optimizer.zero_grad()
            images, labels = train.images[start : start + 100], train.labels[start : start + 100]
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, nn.Module]:
    """A model file in a temporary folder, and the trained model its ``build`` makes."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "model.py").write_text(textwrap.dedent(MODEL_CODE))
    namespace: dict[str, object] = {}
    exec(MODEL_CODE, namespace)
    torch.manual_seed(0)
    model = trained(namespace["build"]())  # type: ignore[operator]
    return folder, model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails_cleanly(capsys, argv: list[str], *fragments: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def check_run_folder(out: Path, printed: str, clean_expected: float) -> dict:
    result = json.loads(printed)
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert result["examples"] == 64
    assert result["clean_accuracy"] == pytest.approx(clean_expected)
    assert result["clean_accuracy"] > 0.5  # trained: far above the 0.1 of chance
    assert result["robust_accuracy"] <= result["clean_accuracy"]
    if (out / "robustbench.json").exists():
        info = json.loads((out / "robustbench.json").read_text())
        assert info["n_examples"] == 64 and info["dataset"] == "fashion-mnist"
        assert float(info["clean_acc"]) == pytest.approx(100 * result["clean_accuracy"], abs=0.01)
    return result


def accuracy(model: nn.Module) -> float:
    test = load_dataset("fashion-mnist", "test", limit=64)
    assert isinstance(test, ImageDataset)
    with torch.no_grad():
        return float((model(test.images).argmax(1) == test.labels).float().mean())


def test_eval_a_python_file_with_its_weights(capsys, user_model, tmp_path) -> None:
    folder, model = user_model
    weights = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(weights))
    out = tmp_path / "run"
    argv = ["eval", f"{folder / 'model.py'}:build", "--weights", str(weights), "--dataset", "fashion-mnist"]
    code, printed, err = run(capsys, *argv, "--limit", "64", *QUICK, "--out", str(out))
    assert code == 0, err
    result = check_run_folder(out, printed, accuracy(model))
    assert result["checkpoint"].endswith("model.py:build")


def test_eval_a_torchscript_file(capsys, user_model, tmp_path) -> None:
    _, model = user_model
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still what many ship
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 28, 28)), str(path))
    out = tmp_path / "run"
    code, printed, err = run(
        capsys, "eval", str(path), "--dataset", "fashion-mnist", "--limit", "64", *QUICK, "--out", str(out)
    )
    assert code == 0, err
    check_run_folder(out, printed, accuracy(model))


def test_eval_a_torch_export_program_and_attack_it(capsys, user_model, tmp_path) -> None:
    _, model = user_model
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.rand(4, 1, 28, 28),), dynamic_shapes=({0: batch},))
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "run"
    code, printed, err = run(
        capsys, "eval", str(path), "--dataset", "fashion-mnist", "--limit", "64", *QUICK, "--out", str(out)
    )
    assert code == 0, err
    check_run_folder(out, printed, accuracy(model))
    attack_out = tmp_path / "attack"
    argv = ["attack", str(path), "--dataset", "fashion-mnist", "--attack", "pgd", "--steps", "2", "--limit", "16"]
    code, printed, err = run(capsys, *argv, "--out", str(attack_out))
    assert code == 0, err
    assert (attack_out / "report.md").is_file()


def test_a_program_exported_for_one_batch_size_is_one_line(capsys, user_model, tmp_path) -> None:
    _, model = user_model
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 28, 28),)), str(path))
    fails_cleanly(capsys, ["eval", str(path), "--dataset", "fashion-mnist", *QUICK], "dynamic batch dimension")


def test_wrapped_and_prefixed_weights_load_and_wrong_keys_are_one_line(capsys, user_model, tmp_path) -> None:
    folder, model = user_model
    spec = f"{folder / 'model.py'}:build"
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    argv = ["eval", spec, "--weights", str(wrapped), "--dataset", "fashion-mnist", "--limit", "64", *QUICK]
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(printed)["clean_accuracy"] == pytest.approx(accuracy(model))
    wrong = tmp_path / "wrong.pt"
    state = dict(model.state_dict())
    state["head.weight"] = state.pop("3.weight")
    torch.save(state, wrong)
    argv = ["eval", spec, "--weights", str(wrong), "--dataset", "fashion-mnist", *QUICK]
    fails_cleanly(capsys, argv, "1 missing keys (3.weight)", "1 unexpected keys (head.weight)")


def test_normalization_wraps_the_model_in_pixel_space(capsys, user_model, tmp_path) -> None:
    folder, model = user_model
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    spec = f"{folder / 'model.py'}:build"
    base = ["eval", spec, "--weights", str(weights), "--dataset", "fashion-mnist", "--limit", "64", *QUICK]
    code, printed, err = run(capsys, *base, "--mean", "0", "--std", "1")
    assert code == 0, err
    assert json.loads(printed)["clean_accuracy"] == pytest.approx(accuracy(model))  # the identity normalization
    code, printed, err = run(capsys, *base, "--mean", "0.5", "--std", "0.25")
    assert code == 0, err
    with torch.no_grad():
        test = load_dataset("fashion-mnist", "test", limit=64)
        assert isinstance(test, ImageDataset)
        expected = float((model((test.images - 0.5) / 0.25).argmax(1) == test.labels).float().mean())
    assert json.loads(printed)["clean_accuracy"] == pytest.approx(expected)
    fails_cleanly(capsys, [*base, "--mean", "0.1,0.2"], "give both --mean and --std")
    fails_cleanly(capsys, [*base, "--mean", "0.1,0.2", "--std", "1,1"], "--mean has 2 values", "1 channels")
    fails_cleanly(capsys, [*base, "--normalization", "cifar10"], "3 values", "1 channels")


def test_classes_and_input_shape_are_checked_against_the_data(capsys, user_model, tmp_path) -> None:
    folder, model = user_model
    spec = f"{folder / 'model.py'}:build"
    fails_cleanly(capsys, ["eval", spec, "--dataset", "fashion-mnist", "--num-classes", "5", *QUICK], "10 logits", "5")
    colour = tmp_path / "colour.npz"
    np.savez(colour, images=np.random.default_rng(0).random((4, 3, 32, 32)), labels=np.arange(4))
    fails_cleanly(capsys, ["eval", spec, "--data", str(colour), *QUICK], "fails on a batch of shape (2, 3, 32, 32)")
    fails_cleanly(capsys, ["eval", spec, *QUICK], "pass --dataset or --data")
    fails_cleanly(
        capsys, ["eval", f"{folder / 'model.py'}:nothing", "--dataset", "fashion-mnist", *QUICK], "no 'nothing'"
    )
    fails_cleanly(capsys, ["eval", "--dataset", "fashion-mnist", *QUICK], "give a model")


def test_user_data_file_from_the_command_line(capsys, user_model, tmp_path) -> None:
    folder, model = user_model
    test = load_dataset("fashion-mnist", "test", limit=48)
    assert isinstance(test, ImageDataset)
    data = tmp_path / "mine.npz"
    np.savez(data, images=test.images.permute(0, 2, 3, 1).numpy(), labels=test.labels.numpy())  # channels last
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 28, 28)), str(path))
    code, printed, err = run(capsys, "eval", str(path), "--data", str(data), *QUICK)
    assert code == 0, err
    with torch.no_grad():
        expected = float((model(test.images).argmax(1) == test.labels).float().mean())
    result = json.loads(printed)
    assert result["examples"] == 48 and result["clean_accuracy"] == pytest.approx(expected)
    fails_cleanly(capsys, ["eval", str(path), "--data", str(data), "--dataset", "mnist", *QUICK], "not both")


def test_an_hmcam_checkpoint_refuses_options_for_other_models(capsys, tmp_path) -> None:
    path = tmp_path / "c.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    fails_cleanly(capsys, ["eval", str(path), "--weights", str(path), *QUICK], "hmcam checkpoint", "--weights")
