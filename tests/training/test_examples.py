"""The per-example store in one process: registration, rows by dataset position, state round trip."""

from __future__ import annotations

import pytest
import torch

from hmcam.core.distributed import DistributedContext
from hmcam.training import ExampleState

SINGLE = DistributedContext(0, 1, 0, torch.device("cpu"), None)


def test_rows_are_read_and_written_by_dataset_position() -> None:
    store = ExampleState(6, SINGLE)
    chains = store.register("chain", (2, 3))
    assert chains.shape == (6, 2, 3) and chains.dtype == torch.float32 and not chains.any()
    store.register("seen", (), dtype=torch.bool, fill=False)
    assert store.names == ["chain", "seen"] and "chain" in store

    store.write("chain", torch.tensor([4, 1]), torch.stack([torch.full((2, 3), 4.0), torch.full((2, 3), 1.0)]))
    rows = store.read("chain", torch.tensor([1, 4, 0]), device="cpu")
    assert rows[:, 0, 0].tolist() == [1.0, 4.0, 0.0]
    rows += 100  # a copy: the store is changed only through write()
    assert store.tensor("chain")[1, 0, 0] == 1.0
    store.write("seen", torch.tensor([5]), torch.tensor([True]))
    store.sync()  # one process: nothing to exchange
    assert store.tensor("seen").tolist() == [False] * 5 + [True]


def test_state_round_trips_and_is_checked() -> None:
    store = ExampleState(4, SINGLE)
    store.register("v", (3,))
    store.write("v", torch.arange(4), torch.arange(12.0).reshape(4, 3))
    saved = {name: tensor.clone() for name, tensor in store.state_dict().items()}

    fresh = ExampleState(4, SINGLE)
    fresh.register("v", (3,))
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.tensor("v"), saved["v"])
    with pytest.raises(ValueError, match=r"holds \['w'\], but the method registered \['v'\]"):
        fresh.load_state_dict({"w": saved["v"]})
    with pytest.raises(ValueError, match=r"'v' is torch.float32 \(4, 2\), expected torch.float32 \(4, 3\)"):
        fresh.load_state_dict({"v": torch.zeros(4, 2)})


def test_mistakes_raise_clear_errors() -> None:
    store = ExampleState(3, SINGLE)
    store.register("v", (2,))
    with pytest.raises(ValueError, match="already registered"):
        store.register("v", (2,))
    with pytest.raises(ValueError, match="without dots"):
        store.register("a.b", (2,))
    with pytest.raises(KeyError, match=r"no per-example state named 'w'; registered: \['v'\]"):
        store.read("w", torch.tensor([0]))
    with pytest.raises(IndexError, match=r"must lie in \[0, 3\)"):
        store.read("v", torch.tensor([3]))
    with pytest.raises(ValueError, match=r"2 indices need rows of shape \(2, 2\), got \(2, 3\)"):
        store.write("v", torch.tensor([0, 1]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one example"):
        ExampleState(0, SINGLE)
