"""Shared command-line helpers: the evaluation split, the device and the output checks."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmcam.cli.common import check_output_file, check_output_folder, checkpoint_and_data
from hmcam.models import build_model, save_checkpoint


def test_imagenet_checkpoints_are_evaluated_on_the_val_split(tmp_path: Path) -> None:
    # ImageNet has no "test" split; asking for one failed before any work. Labels are folder indices,
    # so all 1000 class folders must exist; one small image each.
    buffer = io.BytesIO()
    Image.fromarray(np.full((240, 260, 3), 40, dtype=np.uint8)).save(buffer, format="PNG")
    for index in range(1000):
        folder = tmp_path / "data" / "imagenet" / "val" / f"n{index:08d}"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(buffer.getvalue())
    path = tmp_path / "model.safetensors"
    model = build_model("mlp", num_classes=1000, in_channels=3, hidden=[4])
    save_checkpoint(
        path, model, architecture="mlp", dataset="imagenet", input_shape=(3, 224, 224), num_classes=1000,
        mean=None, std=None, options={"hidden": [4]}, training={}, metrics={},
    )  # fmt: skip
    args = argparse.Namespace(
        checkpoint=str(path), dataset=None, data_root=str(tmp_path / "data"), limit=2, device="cpu"
    )
    _, metadata, test = checkpoint_and_data(args)
    assert metadata["dataset"] == "imagenet"
    assert test.images.shape == (2, 3, 224, 224) and test.labels.tolist() == [0, 1]


def test_device_is_resolved_and_used(tmp_path: Path) -> None:
    args = argparse.Namespace(checkpoint=str(tmp_path / "x"), dataset=None, data_root=None, limit=1, device="tpu")
    with pytest.raises(ValueError, match="training runs on 'cpu' or 'cuda' devices|unknown device"):
        checkpoint_and_data(args)
    if not torch.cuda.is_available():
        args.device = "cuda"
        with pytest.raises(ValueError, match="CUDA is not available"):
            checkpoint_and_data(args)


def test_output_checks_name_the_obstacle(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{blocker} is a file"):
        check_output_folder(blocker / "sub" / "run")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output_file(tmp_path)
    assert check_output_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
