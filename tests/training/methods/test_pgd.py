"""PGD adversarial training (Madry et al.): defaults by dataset and the loss it returns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hmcam.attacks import PGD
from hmcam.models import build_model
from hmcam.training.methods import PGDTraining, StepContext, build_method

CONTEXT = StepContext(epoch=0, step=0, replay=0, indices=torch.arange(16))


def test_defaults_follow_the_dataset() -> None:
    for dataset in ("mnist", "fashion-mnist", "MNIST"):
        method = build_method("pgd", dataset=dataset)
        assert (method.eps, method.alpha, method.steps) == (0.3, 0.01, 40)
    method = build_method("pgd", dataset="cifar10")
    assert (method.eps, method.alpha, method.steps) == (8 / 255, 2 / 255, 7)
    method = build_method("pgd", dataset="cifar10", eps=4 / 255)
    assert (method.eps, method.alpha, method.steps) == (4 / 255, 2 / 255, 7)
    assert method.hyperparameters() == {"replays": 1, "eps": 4 / 255, "alpha": 2 / 255, "steps": 7}
    assert method.adversarial is True


def test_a_dataset_without_defaults_needs_every_parameter() -> None:
    with pytest.raises(
        ValueError, match=r"dataset 'imagenet' has no default threat model; give PGD training \['alpha', 'steps'\]"
    ):
        PGDTraining(dataset="imagenet", eps=4 / 255)
    method = PGDTraining(dataset="imagenet", eps=4 / 255, alpha=1 / 255, steps=3)
    assert (method.eps, method.alpha, method.steps) == (4 / 255, 1 / 255, 3)


def test_invalid_parameters_raise() -> None:
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        PGDTraining(dataset="mnist", eps=0.0)
    with pytest.raises(TypeError, match="steps must be an integer"):
        PGDTraining(dataset="mnist", steps=2.5)


def test_loss_is_the_cross_entropy_at_the_pgd_examples_drawn_from_the_global_rng() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(32,), mean=[0.5], std=[0.25]).train()
    images, labels = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    method = PGDTraining(dataset="mnist", eps=0.1, alpha=0.03, steps=4)

    torch.manual_seed(123)
    output = method.loss(model, images, labels, CONTEXT)
    torch.manual_seed(123)
    adversarial = PGD(model, eps=0.1, alpha=0.03, steps=4, random_start=True)(images, labels)
    expected = model(adversarial)

    assert torch.equal(output.logits, expected)
    assert torch.equal(output.loss, F.cross_entropy(expected, labels))
    assert output.loss > F.cross_entropy(model(images), labels)
    # The attack leaves the model as it found it: training mode, no parameter gradients.
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
