"""Defaults of the TrainingMethod interface."""

from __future__ import annotations

import pytest
import torch

from hmcam.training.methods import NaturalTraining


def test_a_method_without_carried_tensors_round_trips_an_empty_state() -> None:
    method = NaturalTraining(dataset="mnist")
    assert method.state_dict() == {}
    method.load_state_dict({})
    with pytest.raises(ValueError, match=r"'natural' carries no state but was given \['delta'\]"):
        method.load_state_dict({"delta": torch.zeros(1)})


def test_defaults_of_the_interface() -> None:
    method = NaturalTraining(dataset="cifar10")
    assert method.replays == 1
    assert method.eps is None
    assert method.adversarial is False
    assert method.dataset == "cifar10"
    assert method.hyperparameters() == {"replays": 1}
