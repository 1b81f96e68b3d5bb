"""Folder datasets (ImageNet's layout) are decoded by DataLoader workers while the trainer trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import get_worker_info

from hmcam.core.storage import load_tensors
from hmcam.data import ImageFolder, dataset_info
from hmcam.training import TrainConfig, train
from hmcam.training import datasets as datasets_module


class WorkerDecodedFolder(ImageFolder):
    """An ImageFolder that refuses to decode in the main process while ``require_worker`` is set."""

    require_worker = False

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if WorkerDecodedFolder.require_worker and get_worker_info() is None:
            raise AssertionError("an image was decoded in the training process, not in a DataLoader worker")
        return super().__getitem__(index)


def _write_folder(root: Path) -> None:
    generator = np.random.default_rng(0)
    for label in range(3):
        for index in range(8):
            # Classes differ in brightness, so the model can learn something.
            pixels = generator.integers(0, 90, size=(30, 30, 3)) + 80 * label
            folder = root / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")


CONFIG = dict(
    dataset="imagenet",
    model="mlp",
    model_options={"hidden": [16]},
    epochs=2,
    batch_size=8,
    lr=0.05,
    eval_subset=0,
    seed=0,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_folder_images_are_decoded_by_workers_and_train_as_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_folder(tmp_path / "images")
    info = dataset_info("imagenet")

    def load(name: str, split: str, **kwargs: object) -> ImageFolder:
        # 28 x 28 crops of the 30 x 30 images: the MLP's input size, with 3 channels.
        return WorkerDecodedFolder(tmp_path / "images", info, resize=30, crop=28)

    monkeypatch.setattr(datasets_module, "load_dataset", load)
    monkeypatch.setattr(WorkerDecodedFolder, "require_worker", True)
    with_workers = train(TrainConfig(**CONFIG, workers=2, out=str(tmp_path / "workers")))
    assert with_workers["steps"] == 2 * 3  # 24 images in batches of 8

    monkeypatch.setattr(WorkerDecodedFolder, "require_worker", False)
    in_process = train(TrainConfig(**CONFIG, workers=0, out=str(tmp_path / "main")))
    expected, _ = load_tensors(tmp_path / "main" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "workers" / "last.safetensors")
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert with_workers["final"]["clean_accuracy"] == in_process["final"]["clean_accuracy"]
    assert with_workers["final"]["train_loss"] == in_process["final"]["train_loss"]

    # The number of workers changes nothing a resumed run computes.
    resumed = train(TrainConfig(**CONFIG, workers=1, out=str(tmp_path / "main")), resume=True)
    assert resumed["resumed_from_epoch"] == 2
