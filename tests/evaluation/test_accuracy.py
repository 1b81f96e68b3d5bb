"""Per-epoch evaluation: clean accuracy on the split, PGD accuracy on its first examples, RNG untouched."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from hmcam.attacks import PGD
from hmcam.core.batching import fetch
from hmcam.core.distributed import DistributedContext
from hmcam.data import load_dataset
from hmcam.evaluation.accuracy import accuracies
from hmcam.models import build_model

SINGLE = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


@pytest.fixture(scope="module")
def data():
    return load_dataset("fashion-mnist", "test", limit=96)


def _fitted(data):
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(16,), mean=list(data.info.mean), std=list(data.info.std))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data.images), data.labels).backward()
        optimizer.step()
    return model


def test_clean_and_robust_accuracy_match_a_direct_computation(data) -> None:
    model = _fitted(data).train()
    rng = torch.get_rng_state()
    clean, robust = accuracies(
        model, data, robust_examples=40, eps=0.05, alpha=0.02, steps=3, seed=7, batch_size=128, context=SINGLE
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training

    model.eval()
    with torch.no_grad():
        expected_clean = (model(data.images).argmax(1) == data.labels).sum().item() / 96
    attacked = PGD(model, eps=0.05, alpha=0.02, steps=3, seed=7)(data.images[:40], data.labels[:40])
    with torch.no_grad():
        expected_robust = (model(attacked).argmax(1) == data.labels[:40]).sum().item() / 40
    assert clean == expected_clean
    assert robust == expected_robust
    assert robust < clean > 0.5


def test_batching_does_not_change_the_clean_accuracy_and_zero_examples_skip_pgd(data) -> None:
    model = _fitted(data)
    whole, _ = accuracies(
        model, data, robust_examples=0, eps=None, alpha=None, steps=1, seed=0, batch_size=96, context=SINGLE
    )
    batched, robust = accuracies(
        model, data, robust_examples=0, eps=None, alpha=None, steps=1, seed=0, batch_size=10, context=SINGLE
    )
    assert whole == batched
    assert robust is None


def test_fetch_gathers_tensors_or_collates_items(data) -> None:
    images, labels = fetch(data, torch.tensor([5, 1, 5]))
    assert torch.equal(images, data.images[[5, 1, 5]])
    assert torch.equal(labels, data.labels[[5, 1, 5]])
    plain = TensorDataset(data.images, data.labels)
    images, labels = fetch(plain, [3, 0])
    assert torch.equal(images, data.images[[3, 0]])
    assert torch.equal(labels, data.labels[[3, 0]])
