"""Crop-and-flip augmentation: what it computes, its determinism, and that the trainer applies it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.core.storage import load_tensors
from hmcam.data import load_dataset
from hmcam.training import METHODS, Augmentation, Batch, NaturalTraining, StepContext, TrainConfig, Trainer, train
from hmcam.training.augment import crop_flip


def test_crop_flip_shifts_pads_with_zeros_and_flips() -> None:
    images = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5) + 1
    same = crop_flip(images, 2, torch.tensor([[2, 2], [2, 2]]), torch.tensor([False, False]))
    assert torch.equal(same, images)
    # Offset (0, 3) in the padded image: two rows up (zeros on top), one column right.
    moved = crop_flip(images, 2, torch.tensor([[0, 3], [2, 2]]), torch.tensor([False, True]))
    assert torch.equal(moved[0, 0, :2], torch.zeros(2, 5))
    assert torch.equal(moved[0, 0, 2:, :4], images[0, 0, :2, 1:])
    assert torch.equal(moved[0, 0, 2:, 4], torch.zeros(2))
    assert torch.equal(moved[1], images[1].flip(-1))


def test_augmentation_depends_on_seed_epoch_and_batch_only_and_not_on_the_processes() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 3, 6, 6)
    augment = Augmentation("crop-flip", padding=2, seed=5)
    state = torch.get_rng_state()
    first = augment(images, epoch=1, batch=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    assert torch.equal(first, augment(images, epoch=1, batch=3))
    assert not torch.equal(first, augment(images, epoch=1, batch=4))
    assert not torch.equal(first, augment(images, epoch=2, batch=3))
    assert not torch.equal(first, Augmentation("crop-flip", padding=2, seed=6)(images, epoch=1, batch=3))
    # Two processes hold positions 0, 2, 4, ... and 1, 3, 5, ... of the global batch.
    for rank in range(2):
        share = augment(images[rank::2], epoch=1, batch=3, rank=rank, world_size=2)
        assert torch.equal(share, first[rank::2])
    assert Augmentation("none")(images, 0, 0) is images
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'"):
        Augmentation("cutout")


class SeenImages(NaturalTraining):
    """Natural training that keeps the first minibatch of every epoch as the trainer handed it over."""

    name = "seen-images"
    seen: dict[int, tuple[Tensor, Tensor]] = {}

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        if context.batch == 0:
            SeenImages.seen[context.epoch] = (batch.images.clone(), batch.indices.clone())
        super().train_step(model, optimizer, batch, context)


CONFIG = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [32]},
    method="seen-images",
    epochs=2,
    batch_size=32,
    lr=0.05,
    train_limit=128,
    test_limit=32,
    eval_subset=0,
    seed=2,
    progress=False,
    device="cpu",
    channels_last=False,
)


def test_the_trainer_augments_each_batch_as_a_function_of_seed_epoch_and_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "seen-images", SeenImages)
    monkeypatch.setattr(SeenImages, "seen", {})
    raw = load_dataset("fashion-mnist", "train", limit=128).images
    augmented = train(TrainConfig(**CONFIG, augment="crop-flip", augment_padding=3, out=str(tmp_path / "a")))
    augment = Augmentation("crop-flip", padding=3, seed=2)
    for epoch, (images, indices) in SeenImages.seen.items():
        assert torch.equal(images, augment(raw[indices], epoch, 0))
        assert not torch.equal(images, raw[indices])

    # An interrupted run resumes to the same weights: augmentation is no random stream to restore.
    out = tmp_path / "b"
    interrupted = TrainConfig(**CONFIG, augment="crop-flip", augment_padding=3, out=str(out))
    original = Trainer._train_epoch

    def stop_in_epoch_two(self: Trainer) -> dict:
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = train(interrupted, resume=True)
    assert resumed["resumed_from_epoch"] == 1
    expected, _ = load_tensors(tmp_path / "a" / "last.safetensors")
    found, _ = load_tensors(out / "last.safetensors")
    assert all(torch.equal(expected[name], found[name]) for name in expected)

    SeenImages.seen.clear()
    plain = train(TrainConfig(**CONFIG, out=str(tmp_path / "c")))
    images, indices = SeenImages.seen[0]
    assert torch.equal(images, raw[indices])
    assert plain["final"]["train_loss"] != augmented["final"]["train_loss"]
