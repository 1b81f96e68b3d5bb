"""Runs that go wrong: a loss that is not finite, accuracy stuck at chance, and the warm-up against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from hmcam.core.storage import load_tensors
from hmcam.data import load_dataset
from hmcam.training import (
    METHODS,
    MethodOutput,
    StepContext,
    TrainConfig,
    TrainingCollapsed,
    TrainingCollapseWarning,
    TrainingMethod,
    train,
)

CONFIG = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [16]},
    epochs=2,
    batch_size=32,
    lr=0.05,
    milestones=[],
    train_limit=128,
    test_limit=32,
    eval_subset=0,
    seed=0,
    progress=False,
    device="cpu",
)


class Exploding(TrainingMethod):
    """Cross-entropy, until optimizer step ``nan_at`` of the run, whose loss is NaN."""

    name = "exploding"
    nan_at: ClassVar[int] = 5

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        if context.step == self.nan_at:
            loss = loss * float("nan")
        return MethodOutput(loss, logits, {})


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "exploding", Exploding)
    out = tmp_path / "run"
    # 4 minibatches an epoch: step 5 is the second minibatch of epoch 2.
    with pytest.raises(FloatingPointError) as raised:
        train(TrainConfig(**CONFIG, method="exploding", out=str(out)))
    message = str(raised.value)
    assert "the training loss became nan in epoch 2, minibatch 2 of 4 (optimizer step 6)" in message
    assert f"the last good checkpoint and state (epoch 1) in {out} were kept" in message

    # What is on disk is epoch 1, untouched: the same as a run that only trained one epoch.
    one_epoch = train(TrainConfig(**dict(CONFIG, epochs=1), method="natural", out=str(tmp_path / "one")))
    assert one_epoch["steps"] == 4
    _, state = load_tensors(out / "state.safetensors")
    assert (state["epoch"], state["step"]) == (1, 4)
    expected, _ = load_tensors(tmp_path / "one" / "last.safetensors")
    found, _ = load_tensors(out / "last.safetensors")
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1

    monkeypatch.setattr(Exploding, "nan_at", 0)
    with pytest.raises(FloatingPointError, match="no epoch had been completed, so nothing was saved"):
        train(TrainConfig(**CONFIG, method="exploding", out=str(tmp_path / "first")))
    assert not (tmp_path / "first" / "state.safetensors").exists()


class Guessing(TrainingMethod):
    """Trains normally but reports constant logits, so its training accuracy is class 0's share: chance."""

    name = "guessing"

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        logits = model(images)
        return MethodOutput(F.cross_entropy(logits, labels), torch.zeros_like(logits), {})


def test_accuracy_at_chance_for_consecutive_epochs_warns_or_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "guessing", Guessing)
    share = (load_dataset("fashion-mnist", "train", limit=128).labels == 0).float().mean().item()
    assert share < 0.2  # so chance + margin 0.1 covers it
    config = TrainConfig(**dict(CONFIG, epochs=3), method="guessing", collapse_epochs=2, collapse_margin=0.1)
    with pytest.warns(TrainingCollapseWarning) as caught:
        train(config.replace(out=str(tmp_path / "warned")))
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2
    assert "stayed at chance (<= 0.200 for 10 classes) for 2 epochs in a row, up to epoch 2" in messages[0]
    history = [json.loads(line) for line in (tmp_path / "warned" / "metrics.jsonl").read_text().splitlines()]
    assert ["collapse" in record for record in history] == [False, True, True]
    assert "for 3 epochs in a row" in history[2]["collapse"]

    out = tmp_path / "stopped"
    with pytest.raises(TrainingCollapsed, match="Stopped after saving epoch 2"):
        train(config.replace(stop_on_collapse=True, out=str(out)))
    _, state = load_tensors(out / "state.safetensors")
    assert state["epoch"] == 2

    # A run that learns is never flagged, and collapse_epochs=0 turns the check off.
    healthy = train(TrainConfig(**CONFIG, method="natural", collapse_epochs=1, out=str(tmp_path / "healthy")))
    assert "collapse" not in healthy["final"] and healthy["final"]["train_accuracy"] > 0.3
    off = train(config.replace(collapse_epochs=0, out=str(tmp_path / "off")))
    assert "collapse" not in off["final"]


def test_warm_up_scales_the_first_epochs_rates(tmp_path: Path) -> None:
    summary = train(TrainConfig(**dict(CONFIG, epochs=2), method="natural", warmup_epochs=2.0, out=str(tmp_path / "w")))
    history = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    # The last step of epoch e (0-based) sits at progress e + 3.5 / 4 epochs.
    assert [record["lr"] for record in history] == pytest.approx([0.05 * 0.875 / 2, 0.05 * 1.875 / 2], rel=1e-12)
    assert summary["steps"] == 8
