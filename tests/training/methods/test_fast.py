"""Fast adversarial training (FGSM-RS, Wong et al.): start and step, shared noise, scaler state, resume, robustness."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmcam.core.storage import load_tensors
from hmcam.models import build_model
from hmcam.training import TrainConfig, Trainer, build_method, train
from hmcam.training.methods import Batch, FastTraining, StepContext
from hmcam.training.methods.fast import FAST_STREAM, global_batch_noise


def test_defaults_step_and_cost() -> None:
    method = build_method("fast", dataset="fashion-mnist")
    assert (method.eps, method.alpha, method.amp) == (0.3, pytest.approx(0.375), True)
    method = build_method("fast", dataset="cifar10", alpha=0.02)
    assert (method.eps, method.alpha) == (8 / 255, 0.02)
    assert method.hyperparameters() == {"replays": 1, "eps": 8 / 255, "alpha": 0.02, "amp": True}
    assert method.passes_per_batch() == 2 and method.epochs_for_budget(80) == 40
    with pytest.raises(ValueError, match="give fast training eps"):
        FastTraining(dataset="imagenet")
    with pytest.raises(TypeError, match="amp must be True or False"):
        FastTraining(dataset="mnist", amp="yes")


def test_noise_of_a_global_minibatch_is_shared_out_by_position() -> None:
    like = torch.zeros(6, 1, 3, 3)
    whole = global_batch_noise(like, seed=1, epoch=2, batch=3, stream=FAST_STREAM)
    assert torch.equal(whole, global_batch_noise(like, seed=1, epoch=2, batch=3, stream=FAST_STREAM))
    assert -1 <= whole.min() < -0.9 and 0.9 < whole.max() < 1
    halves = [
        global_batch_noise(like[:3], seed=1, epoch=2, batch=3, stream=FAST_STREAM, rank=r, world_size=2) for r in (0, 1)
    ]
    assert torch.equal(halves[0], whole[0::2]) and torch.equal(halves[1], whole[1::2])
    for other in ({"seed": 2}, {"epoch": 3}, {"batch": 4}, {"stream": FAST_STREAM + 1}):
        arguments = {"seed": 1, "epoch": 2, "batch": 3, "stream": FAST_STREAM, **other}
        assert not torch.equal(whole, global_batch_noise(like, **arguments))
    normal = global_batch_noise(torch.zeros(1000), seed=1, epoch=0, batch=0, stream=0, normal=True)
    assert normal.min() < -2 and normal.max() > 2 and abs(normal.mean()) < 0.1


def test_the_training_examples_are_one_fgsm_step_from_a_uniform_start_in_training_mode() -> None:
    torch.manual_seed(0)
    # Dropout tells training mode from eval mode: the attack pass runs in training mode, as the authors'.
    model = build_model("smallcnn", mean=[0.5], std=[0.25]).train()
    # SmallCNN starts with an all-zero last layer, whose input gradient is zero.
    torch.nn.init.normal_(model.model.classifier[-1].weight, std=0.1)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    method = FastTraining(eps=0.1)
    context = StepContext(epoch=1, step=0, batch=2, batches=3)
    torch.manual_seed(7)
    output = method.loss(model, images, labels, context)

    torch.manual_seed(7)
    noise = global_batch_noise(images, seed=0, epoch=1, batch=2, stream=FAST_STREAM)
    start = ((images + 0.1 * noise).clamp(0, 1) - images).requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(images + start), labels), start)
    delta = (start.detach() + 0.125 * gradient.sign()).clamp(-0.1, 0.1)
    adversarial = (images + delta).clamp(0, 1)
    expected = model(adversarial)
    assert torch.equal(output.logits, expected)
    assert torch.equal(output.loss, F.cross_entropy(expected, labels))
    assert output.passes == 2.0

    assert start.abs().max() <= 0.1 and ((images + start) >= 0).all() and ((images + start) <= 1).all()
    assert (adversarial - images).abs().max() <= 0.1 + 1e-6
    # A step of 1.25 eps from a point inside the ball ends on its surface, or beyond the start's sign.
    moved = (delta - start.detach()).abs()
    assert moved.max() <= 0.125 + 1e-6 and (moved > 0.1).any()


def test_without_cuda_there_is_no_scaler_and_no_shared_state() -> None:
    method = FastTraining(eps=0.1)
    assert method.scaler is None and method.shared_state_dict() == {}
    method.load_shared_state_dict({})
    with pytest.raises(ValueError, match="saved with a gradient scaler"):
        method.load_shared_state_dict({"scale": torch.tensor(1024.0, dtype=torch.float64)})


def test_with_a_gradient_scaler_the_update_is_unchanged_and_the_scale_round_trips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CUDA path with a CPU scaler and no autocast: a power-of-two scale cancels exactly out of the
    # FGSM sign and of the update, and with growth_interval=1 it doubles at every step.
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    twin = copy.deepcopy(network)
    images, labels = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    scaled, plain = FastTraining(eps=0.1), FastTraining(eps=0.1)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    monkeypatch.setattr(scaled, "_precision", contextlib.nullcontext)
    for method, model in ((scaled, network), (plain, twin)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for number in range(2):
            context = StepContext(epoch=0, step=number, batch=number, batches=2)
            method.train_step(model, optimizer, Batch(images, labels, torch.arange(2)), context)
            assert context.meter.passes == 2.0
    assert all(torch.equal(a, b) for a, b in zip(network.parameters(), twin.parameters(), strict=True))
    state = scaled.shared_state_dict()
    assert (state["scale"].item(), state["growth_tracker"].item()) == (4096.0, 0)
    fresh = FastTraining(eps=0.1)
    fresh.scaler = torch.amp.GradScaler("cpu")
    fresh.load_shared_state_dict(state)
    assert fresh.scaler.get_scale() == 4096.0 and fresh.shared_state_dict().keys() == state.keys()
    with pytest.raises(ValueError, match="expects the scaler's scale and growth_tracker"):
        fresh.load_shared_state_dict({"scale": state["scale"]})


@pytest.mark.slow
def test_a_sigkilled_run_resumes_exactly(helpers, tmp_path: Path) -> None:
    helpers.assert_resumes_exactly(tmp_path, dict(helpers.TINY, method="fast", method_kwargs={"eps": 0.1}))


@pytest.mark.slow
def test_two_gloo_processes_match_one(helpers, tmp_path: Path) -> None:
    # Every example's start is a function of (seed, epoch, minibatch): measured 3.6e-8 and 3.0e-8 (seeds 5, 6).
    # The bar leaves room for a sign that rounding flips on another machine (a pixel moved by 2.5 eps).
    config = dict(helpers.TINY, method="fast", method_kwargs={"eps": 0.1}, train_limit=256)
    assert helpers.max_weight_difference_of_two_processes(tmp_path, config) <= 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision and its gradient scaler run on CUDA")
def test_on_cuda_the_scaler_state_is_shared_and_resumed(
    helpers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dict(helpers.TINY, method="fast", method_kwargs={"eps": 0.1}, device="cuda", channels_last=False)
    reference = train(TrainConfig(**config, out=str(tmp_path / "reference")))
    tensors, _ = load_tensors(tmp_path / "reference" / "state.safetensors")
    assert {"shared.scale", "shared.growth_tracker"} <= set(tensors)
    assert tensors["shared.scale"].item() > 0

    original = Trainer._train_epoch

    def stop_in_epoch_two(self: Trainer) -> dict:
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "again")))
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    again = train(TrainConfig(**config, out=str(tmp_path / "again")), resume=True)
    assert again["resumed_from_epoch"] == 1 and again["final"]["train_loss"] == reference["final"]["train_loss"]
    expected, found = helpers.weights(tmp_path / "reference"), helpers.weights(tmp_path / "again")
    assert all(torch.equal(expected[name], found[name]) for name in expected)


@pytest.mark.slow
def test_fast_training_is_more_robust_than_natural_training_on_the_same_budget(helpers, tmp_path: Path) -> None:
    # 6 epochs of 2 passes against natural training for 12 epochs. Measured over seeds 0, 1, 2: robust
    # accuracy 0.54 / 0.507 / 0.51 against natural 0.15 / 0.09 / 0.063, clean 0.75 / 0.74 / 0.70.
    final = helpers.robust_run(tmp_path, "fast", {"eps": 0.1}, epochs=6, seed=0)
    assert final["robust_accuracy"] >= helpers.natural_robust_accuracy(0) + 0.1
    assert final["clean_accuracy"] >= 0.5
