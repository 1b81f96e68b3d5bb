"""Tests for model checkpoints: exact round trips, refusal of bad files, crash safety, no unpickling."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hmcam.core.storage import load_tensors, save_tensors, sidecar_path
from hmcam.models import CheckpointError, build_model, load_checkpoint, save_checkpoint

MEAN, STD = (0.2860,), (0.3530,)


def trained_like(seed: int, **kwargs) -> torch.nn.Module:
    """A smallcnn whose weights (including the zero-initialized last layer) are all non-trivial."""
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=10, mean=MEAN, std=STD, **kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def save_smallcnn(path: Path, model: torch.nn.Module, **overrides) -> dict:
    arguments = dict(
        architecture="smallcnn",
        dataset="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=MEAN,
        std=STD,
        training={"method": "cat", "epochs": 2, "eps": 0.1},
        metrics={"clean_accuracy": 0.91},
    )
    arguments.update(overrides)
    return save_checkpoint(path, model, **arguments)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def test_round_trip_gives_identical_outputs_and_full_metadata(tmp_path, images):
    model = trained_like(0)
    path = tmp_path / "model.safetensors"
    written = save_smallcnn(path, model)
    loaded, metadata = load_checkpoint(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    assert metadata == written
    assert metadata["architecture"] == "smallcnn"
    assert metadata["build"] == {"num_classes": 10, "in_channels": 1, "mean": [0.286], "std": [0.353], "options": {}}
    assert metadata["dataset"] == "fashion-mnist" and metadata["input_shape"] == [1, 28, 28]
    assert metadata["num_classes"] == 10 and metadata["normalization"] == {"mean": [0.286], "std": [0.353]}
    assert metadata["training"] == {"method": "cat", "epochs": 2, "eps": 0.1}
    assert metadata["metrics"] == {"clean_accuracy": 0.91}
    assert metadata["versions"]["torch"] == torch.__version__ and metadata["versions"]["hmcam"]
    assert metadata["format"] == "hmcam-checkpoint" and metadata["format_version"] == 1
    # The readable sidecar carries the same metadata as the header.
    assert json.loads(sidecar_path(path).read_text()) == metadata


def test_round_trip_keeps_options_and_works_without_normalization(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, hidden=[8, 4]).eval()
    path = tmp_path / "mlp.safetensors"
    save_checkpoint(
        path,
        model,
        architecture="mlp",
        dataset="mnist",
        input_shape=[1, 28, 28],
        num_classes=3,
        mean=None,
        std=None,
        training={},
        metrics={},
        options={"hidden": [8, 4]},
    )
    loaded, metadata = load_checkpoint(path)
    assert metadata["normalization"] is None and metadata["build"]["options"] == {"hidden": [8, 4]}
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_batch_norm_statistics_survive_the_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet32", in_channels=1, mean=MEAN, std=STD)
    with torch.no_grad():
        model.train()(torch.rand(8, 1, 32, 32))  # moves the running statistics off their initial values
    model.eval()
    path = tmp_path / "resnet.safetensors"
    save_checkpoint(
        path,
        model,
        architecture="resnet32",
        dataset="fashion-mnist",
        input_shape=(1, 32, 32),
        num_classes=10,
        mean=MEAN,
        std=STD,
        training={},
        metrics={},
    )
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.model.bn1.running_mean, model.model.bn1.running_mean)
    assert loaded.model.bn1.num_batches_tracked.item() == 1
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unknown_architecture_is_refused(tmp_path):
    model = trained_like(0)
    path = tmp_path / "model.safetensors"
    metadata = save_smallcnn(path, model)
    save_tensors(path, model.state_dict(), {**metadata, "architecture": "resnet9000"})
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(path)


def test_tampered_tensor_shape_is_refused_naming_the_tensor(tmp_path):
    model = trained_like(0)
    path = tmp_path / "model.safetensors"
    metadata = save_smallcnn(path, model)
    tensors, _ = load_tensors(path)
    tensors["model.classifier.5.weight"] = tensors["model.classifier.5.weight"][:9]
    save_tensors(path, tensors, metadata)
    with pytest.raises(CheckpointError, match=r"'model.classifier.5.weight' has shape \[9, 200\].*needs \[10, 200\]"):
        load_checkpoint(path)


def test_missing_and_unexpected_tensors_are_refused(tmp_path):
    model = trained_like(0)
    path = tmp_path / "model.safetensors"
    metadata = save_smallcnn(path, model)
    tensors, _ = load_tensors(path)
    tensors["extra"] = tensors.pop("model.features.0.bias")
    save_tensors(path, tensors, metadata)
    with pytest.raises(
        CheckpointError, match=r"missing tensors \['model.features.0.bias'\].*unexpected tensors \['extra'\]"
    ):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format_version": 2}, "format version 2"),
        ({"format": "other"}, "not an hmcam checkpoint"),
        ({"build": {"num_classes": 10}}, "lacks the build arguments"),
        (
            {"build": {"num_classes": 10, "in_channels": 1, "mean": [0.5], "std": [0.5], "options": {"x": 1}}},
            "invalid build arguments",
        ),
    ],
)
def test_invalid_metadata_is_refused(tmp_path, edit, message):
    model = trained_like(0)
    path = tmp_path / "model.safetensors"
    metadata = save_smallcnn(path, model)
    save_tensors(path, model.state_dict(), {**metadata, **edit})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_a_safetensors_file_without_hmcam_metadata_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no hmcam metadata"):
        load_checkpoint(path)


class Trap:
    """Unpickling this creates a marker file: proof that a loader executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_files_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"state": Trap(marker)}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"architecture": "lenet"}, ValueError, "does not match architecture 'lenet'"),
        ({"num_classes": 7}, ValueError, "'model.classifier.5.weight' has shape \\[10, 200\\].*needs \\[7, 200\\]"),
        ({"mean": None, "std": None}, ValueError, "does not match architecture"),
        ({"mean": (0.5,), "std": (0.5,)}, ValueError, "normalizes with mean"),
        ({"input_shape": (3, 28, 28), "mean": (0.5,) * 3, "std": (0.5,) * 3}, ValueError, "does not match"),
        ({"input_shape": (28, 28)}, ValueError, "three positive integers"),
        ({"architecture": "resnet33"}, ValueError, "unknown architecture"),
        ({"dataset": ""}, ValueError, "dataset"),
        ({"training": {"optimizer": object()}}, TypeError, "training must be JSON-serializable"),
        ({"metrics": [0.9]}, TypeError, "metrics must be a dict"),
        ({"options": {"width": 2}}, TypeError, "no option"),
    ],
)
def test_save_refuses_a_checkpoint_that_could_not_be_loaded_back(tmp_path, overrides, error, message):
    path = tmp_path / "model.safetensors"
    with pytest.raises(error, match=message):
        save_smallcnn(path, trained_like(0), **overrides)
    assert list(tmp_path.iterdir()) == []


def test_save_requires_the_safetensors_suffix(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_smallcnn(tmp_path / "model.pt", trained_like(0))


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failure_during_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, images, failing):
    path = tmp_path / "model.safetensors"
    old = trained_like(0)
    save_smallcnn(path, old, metrics={"epoch": 1})
    before = sorted(p.name for p in tmp_path.iterdir())

    def crash(*args, **kwargs):
        raise OSError("simulated crash in the middle of the save")

    with monkeypatch.context() as patch:
        patch.setattr(os, failing, crash)
        with pytest.raises(OSError, match="simulated crash"):
            save_smallcnn(path, trained_like(1), metrics={"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["model.json", "model.safetensors"]
    loaded, metadata = load_checkpoint(path)
    assert metadata["metrics"] == {"epoch": 1}
    with torch.no_grad():
        assert torch.equal(loaded(images), old(images))


def test_process_killed_during_save_leaves_the_previous_checkpoint_intact(tmp_path, images):
    """A real SIGKILL just before the rename: the old checkpoint must still load unchanged."""
    path = tmp_path / "model.safetensors"
    old = trained_like(0)
    save_smallcnn(path, old, metrics={"epoch": 1})
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from hmcam.models import build_model, save_checkpoint
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        model = build_model("smallcnn", mean={MEAN!r}, std={STD!r})
        save_checkpoint({str(path)!r}, model, architecture="smallcnn", dataset="fashion-mnist",
                        input_shape=(1, 28, 28), num_classes=10, mean={MEAN!r}, std={STD!r},
                        training={{}}, metrics={{"epoch": 2}})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    loaded, metadata = load_checkpoint(path)
    assert metadata["metrics"] == {"epoch": 1}
    with torch.no_grad():
        assert torch.equal(loaded(images), old(images))
