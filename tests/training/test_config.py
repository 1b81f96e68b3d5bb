"""TrainConfig: defaults from the paper, validation with clear messages, JSON round trip."""

from __future__ import annotations

import json

import pytest

from hmcam.training import TrainConfig
from hmcam.training.config import RESUMABLE_CHANGES


def test_defaults_are_the_papers_optimizer_settings() -> None:
    config = TrainConfig()
    assert (config.momentum, config.weight_decay, config.gamma) == (0.9, 5e-4, 0.1)
    assert config.schedule == "multistep"


def test_json_round_trip() -> None:
    config = TrainConfig(method="pgd", method_kwargs={"eps": 0.1}, milestones=[30, 36], epochs=40, train_limit=100)
    assert config.milestones == (30, 36)
    text = json.dumps(config.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == config


def test_training_engine_fields_round_trip_with_their_defaults() -> None:
    defaults = TrainConfig()
    assert (defaults.warmup_epochs, defaults.augment, defaults.augment_padding) == (0.0, "none", 4)
    assert (defaults.sync_batchnorm, defaults.workers) == (True, 4)
    assert (defaults.collapse_epochs, defaults.collapse_margin, defaults.stop_on_collapse) == (3, 0.02, False)
    config = TrainConfig(
        warmup_epochs=0.5,
        augment="crop-flip",
        augment_padding=2,
        sync_batchnorm=False,
        workers=0,
        collapse_epochs=0,
        collapse_margin=0.1,
        stop_on_collapse=True,
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # Only what changes neither data nor arithmetic may change on resume.
    assert {"workers", "collapse_epochs", "collapse_margin", "stop_on_collapse"} <= RESUMABLE_CHANGES
    assert not {"warmup_epochs", "augment", "augment_padding", "sync_batchnorm"} & RESUMABLE_CHANGES


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"batch_size": "64"}, TypeError, "batch_size must be an integer"),
        ({"lr": 0.0}, ValueError, r"lr must lie in \(0.0, inf\]"),
        ({"momentum": 1.0}, ValueError, r"momentum must lie in \[0.0, 1.0\)"),
        ({"schedule": "step"}, ValueError, "unknown schedule 'step'"),
        ({"milestones": (1.5,)}, ValueError, "milestone 1.5 is neither"),
        ({"milestones": "30"}, TypeError, "milestones must be a list"),
        ({"train_limit": 0}, ValueError, "train_limit must be >= 1"),
        ({"eval_eps": -0.1}, ValueError, "eval_eps must lie in"),
        ({"deterministic": 1}, TypeError, "deterministic must be True or False"),
        ({"method_kwargs": []}, TypeError, "method_kwargs must be a dict"),
        ({"dataset": ""}, TypeError, "dataset must be a non-empty string"),
        ({"warmup_epochs": 11.0}, ValueError, r"warmup_epochs must lie in \[0.0, 10\]"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs must lie in"),
        ({"augment": "cutout"}, ValueError, r"unknown augmentation 'cutout'; choose one of \('none', 'crop-flip'\)"),
        ({"augment_padding": -1}, ValueError, "augment_padding must be >= 0"),
        ({"sync_batchnorm": "yes"}, TypeError, "sync_batchnorm must be True or False"),
        ({"workers": -1}, ValueError, "workers must be >= 0"),
        ({"collapse_epochs": 1.5}, TypeError, "collapse_epochs must be an integer"),
        ({"collapse_margin": 2.0}, ValueError, r"collapse_margin must lie in \[0.0, 1.0\]"),
        ({"stop_on_collapse": None}, TypeError, "stop_on_collapse must be True or False"),
    ],
)
def test_invalid_fields_raise(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(**changes)


def test_unknown_fields_raise() -> None:
    with pytest.raises(ValueError, match=r"unknown training configuration field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})
