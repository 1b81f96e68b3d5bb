"""Free-m adversarial training (Shafahi et al.): defaults, the carried delta by hand, resume, torchrun, robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmcam.core.distributed import DistributedContext
from hmcam.training import ExampleState, build_method
from hmcam.training.methods import Batch, FreeTraining, MethodSetup, StepContext


def tiny_setup(model: nn.Module, batch: int, input_shape: tuple[int, ...]) -> MethodSetup:
    context = DistributedContext(0, 1, 0, torch.device("cpu"), None)
    return MethodSetup(
        dataset_size=2 * batch,
        input_shape=input_shape,
        num_classes=3,
        device=torch.device("cpu"),
        distributed=context,
        model=model,
        examples=ExampleState(2 * batch, context),
        batch_size=batch,
        process_batch=batch,
        batches_per_epoch=2,
        epochs=1,
        seed=0,
    )


def test_defaults_follow_the_dataset_and_the_budget_divides_by_m() -> None:
    method = build_method("free", dataset="fashion-mnist")
    assert (method.eps, method.replays) == (0.3, 10)
    method = build_method("free", dataset="cifar10")
    assert (method.eps, method.replays) == (8 / 255, 8)
    assert method.hyperparameters() == {"replays": 8, "eps": 8 / 255}
    assert method.passes_per_batch() == 8 and method.epochs_for_budget(80) == 10
    assert method.adversarial
    with pytest.raises(ValueError, match=r"no Free training defaults; give \['replays'\]"):
        FreeTraining(dataset="imagenet", eps=4 / 255)
    assert FreeTraining(dataset="imagenet", eps=4 / 255, replays=4).replays == 4
    with pytest.raises(ValueError, match="replays must be >= 1"):
        FreeTraining(dataset="mnist", replays=0)


def linear_gradients(weight, bias, inputs, labels):
    """The gradients of a linear model's mean cross-entropy at its inputs, weight and bias, written out."""
    flat = inputs.flatten(1)
    logits = flat @ weight.T + bias
    error = (logits.softmax(dim=1) - F.one_hot(labels, weight.shape[0])) / len(labels)
    return (error @ weight).view_as(inputs), error.T @ flat, error.sum(dim=0)


def test_each_replay_steps_delta_and_the_weights_and_delta_carries_into_the_next_minibatch() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    method = FreeTraining(eps=0.25, replays=2)
    method.setup(tiny_setup(network, batch=2, input_shape=(1, 2, 2)))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.5)
    weight, bias = (p.detach().double().clone() for p in network[1].parameters())
    delta = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    minibatches = [(torch.rand(2, 1, 2, 2), torch.tensor([0, 2])), (torch.rand(2, 1, 2, 2), torch.tensor([1, 1]))]
    # A pixel near 1: once delta pushes it past 1 it is clipped, and its gradient (so its step) is zero.
    minibatches[0][0][0, 0, 0, 0] = 0.9
    for number, (images, labels) in enumerate(minibatches):
        context = StepContext(epoch=0, step=2 * number, batch=number, batches=2)
        method.train_step(network, optimizer, Batch(images, labels, torch.arange(2)), context)
        for _ in range(2):
            moved = images.double() + delta
            inside = (moved >= 0) & (moved <= 1)
            towards_input, towards_weight, towards_bias = linear_gradients(weight, bias, moved.clamp(0, 1), labels)
            delta = (delta + 0.25 * (towards_input * inside).sign()).clamp(-0.25, 0.25)
            weight, bias = weight - 0.5 * towards_weight, bias - 0.5 * towards_bias
        assert method.delta.abs().max() == 0.25
        assert torch.allclose(method.delta.double(), delta, atol=1e-6)
        assert torch.allclose(network[1].weight.double(), weight, atol=1e-6)
        assert torch.allclose(network[1].bias.double(), bias, atol=1e-6)
        assert (context.meter.passes, context.meter.examples) == (2.0, 4)
    # The clipped pixel kept the perturbation it had when it crossed 1.
    assert delta[0, 0, 0, 0] == 0.25

    saved = method.state_dict()
    fresh = FreeTraining(eps=0.25, replays=2)
    fresh.setup(tiny_setup(network, batch=2, input_shape=(1, 2, 2)))
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.delta, method.delta)
    with pytest.raises(ValueError, match=r"expects delta of shape \(2, 1, 2, 2\)"):
        fresh.load_state_dict({"delta": torch.zeros(3, 1, 2, 2)})
    with pytest.raises(RuntimeError, match="call setup"):
        FreeTraining(eps=0.25, replays=2).state_dict()


@pytest.mark.slow
def test_a_sigkilled_run_resumes_with_its_carried_perturbation(helpers, tmp_path: Path) -> None:
    config = dict(helpers.TINY, method="free", method_kwargs={"eps": 0.1, "replays": 2})
    helpers.assert_resumes_exactly(tmp_path, config)


@pytest.mark.slow
def test_two_gloo_processes_match_one(helpers, tmp_path: Path) -> None:
    # Process r's delta row i belongs to position r + 2 i of every global minibatch, as row r + 2 i of
    # one process's delta does, so the runs agree to rounding: measured 8.9e-8 and 1.2e-7 (seeds 5, 6).
    # The bar leaves room for a sign that rounding flips on another machine (a pixel moved by 2 eps).
    config = dict(helpers.TINY, method="free", method_kwargs={"eps": 0.1, "replays": 2}, train_limit=256)
    assert helpers.max_weight_difference_of_two_processes(tmp_path, config) <= 1e-3


@pytest.mark.slow
def test_free_training_is_more_robust_than_natural_training_on_the_same_budget(helpers, tmp_path: Path) -> None:
    # Free-4 for 3 epochs (12 passes per example) against natural for 12 epochs. Measured over seeds
    # 0, 1, 2: robust accuracy 0.367 / 0.47 / 0.407 against natural 0.15 / 0.09 / 0.063, clean 0.79 / 0.77 / 0.75.
    final = helpers.robust_run(tmp_path, "free", {"eps": 0.1, "replays": 4}, epochs=3, seed=0)
    assert final["robust_accuracy"] >= helpers.natural_robust_accuracy(0) + 0.1
    assert final["clean_accuracy"] >= 0.5
