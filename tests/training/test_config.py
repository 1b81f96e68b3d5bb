"""TrainConfig: defaults from the paper, validation with clear messages, JSON round trip."""

from __future__ import annotations

import json

import pytest

from hmcam.training import TrainConfig


def test_defaults_are_the_papers_optimizer_settings() -> None:
    config = TrainConfig()
    assert (config.momentum, config.weight_decay, config.gamma) == (0.9, 5e-4, 0.1)
    assert config.schedule == "multistep"


def test_json_round_trip() -> None:
    config = TrainConfig(method="pgd", method_kwargs={"eps": 0.1}, milestones=[30, 36], epochs=40, train_limit=100)
    assert config.milestones == (30, 36)
    text = json.dumps(config.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == config


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
        ({"deterministic": 1}, TypeError, "deterministic must be true or false"),
        ({"method_kwargs": []}, TypeError, "method_kwargs must be a dict"),
        ({"dataset": ""}, TypeError, "dataset must be a non-empty string"),
    ],
)
def test_invalid_fields_raise(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(**changes)


def test_unknown_fields_raise() -> None:
    with pytest.raises(ValueError, match=r"unknown training configuration field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})
