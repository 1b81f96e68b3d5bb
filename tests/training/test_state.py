"""Optimizer and RNG state split into tensors + JSON and restored exactly (no pickle)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from hmcam.training.state import (
    capture_rng,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    pack,
    restore_rng,
    unpack,
)


def _trained(optimizer_class, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = optimizer_class(model.parameters(), **kwargs)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(
    ("optimizer_class", "kwargs"),
    [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}), (torch.optim.Adam, {"lr": 0.01})],
)
def test_optimizer_state_round_trips_and_continues_identically(optimizer_class, kwargs) -> None:
    model, optimizer = _trained(optimizer_class, **kwargs)
    tensors, skeleton = optimizer_state_to_tensors(optimizer.state_dict())
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    # What a state file gives back: copies, not the live buffers that the next step updates in place.
    tensors, skeleton = unpack(pack(tensors, skeleton))

    clone = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    clone.load_state_dict(model.state_dict())
    restored = optimizer_class(clone.parameters(), lr=123.0)
    restored.load_state_dict(optimizer_state_from_tensors(tensors, skeleton))
    assert restored.param_groups[0]["lr"] == kwargs["lr"]

    batch = torch.randn(5, 4)
    for net, opt in ((model, optimizer), (clone, restored)):
        opt.zero_grad()
        net(batch).square().sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sgd_momentum_buffers_are_stored_as_tensors() -> None:
    _, optimizer = _trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    tensors, skeleton = optimizer_state_to_tensors(optimizer.state_dict())
    assert sorted(tensors) == [f"optimizer.state.{i}.momentum_buffer" for i in range(4)]
    assert skeleton["indices"] == [0, 1, 2, 3]
    assert torch.equal(
        tensors["optimizer.state.2.momentum_buffer"], optimizer.state_dict()["state"][2]["momentum_buffer"]
    )


def test_rng_states_round_trip() -> None:
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.standard_normal()  # leave a cached Gaussian in NumPy's state
    random.gauss(0, 1)
    tensors, meta = capture_rng()
    tensors, meta = unpack(pack(tensors, json.loads(json.dumps(meta))))
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal(), random.gauss(0, 1))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng(tensors, meta)
    second = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal(), random.gauss(0, 1))
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_pack_round_trips_tensors_and_metadata() -> None:
    tensors = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.float64)}
    back, meta = unpack(pack(tensors, {"x": [1, None, "y"]}))
    assert meta == {"x": [1, None, "y"]}
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype for k in tensors)


def test_unserializable_values_raise() -> None:
    with pytest.raises(TypeError, match="metadata is not JSON-serializable"):
        pack({}, {"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        pack({"__meta__": torch.zeros(1)}, {})
    state = {"state": {0: {"step": object()}}, "param_groups": []}
    with pytest.raises(TypeError, match="optimizer state 0.step is not JSON-serializable"):
        optimizer_state_to_tensors(state)
