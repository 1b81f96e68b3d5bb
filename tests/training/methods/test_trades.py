"""TRADES (Zhang et al.): defaults, the loss against a direct computation, cost, resume, torchrun, robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmcam.models import build_model
from hmcam.training import build_method
from hmcam.training.methods import StepContext, TRADESTraining
from hmcam.training.methods.fast import global_batch_noise
from hmcam.training.methods.trades import TRADES_STREAM


def test_defaults_follow_the_dataset_and_beta_is_six() -> None:
    method = build_method("trades", dataset="mnist")
    assert (method.eps, method.alpha, method.steps, method.beta) == (0.3, 0.01, 40, 6.0)
    method = build_method("trades", dataset="cifar10", beta=1.0)
    assert (method.eps, method.alpha, method.steps, method.beta) == (8 / 255, 2 / 255, 7, 1.0)
    assert method.hyperparameters() == {"replays": 1, "eps": 8 / 255, "alpha": 2 / 255, "steps": 7, "beta": 1.0}
    # K attack steps, a third of a pass for the attack's clean forward, two for the update on two batches.
    assert method.passes_per_batch() == pytest.approx(7 + 7 / 3)
    with pytest.raises(ValueError, match=r"give TRADES \['alpha', 'steps'\] explicitly"):
        TRADESTraining(dataset="imagenet", eps=4 / 255)
    with pytest.raises(ValueError, match="beta must be a number >= 0"):
        TRADESTraining(dataset="mnist", beta=-1.0)


def test_loss_matches_the_authors_computation_with_the_clean_output_computed_once() -> None:
    torch.manual_seed(0)
    # Dropout tells the attack's eval mode from the update's training mode.
    model = build_model("smallcnn", mean=[0.5], std=[0.25]).train()
    # SmallCNN starts with an all-zero last layer, whose input gradient is zero.
    nn.init.normal_(model.model.classifier[-1].weight, std=0.1)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    method = TRADESTraining(eps=0.1, alpha=0.03, steps=3, beta=6.0)
    context = StepContext(epoch=0, step=0, batch=1, batches=2)
    forwards = []
    handle = model.register_forward_hook(lambda module, inputs, output: forwards.append(module.training))
    torch.manual_seed(11)
    output = method.loss(model, images, labels, context)
    handle.remove()
    # One clean forward and K steps in eval mode, then the clean and the adversarial batch in training mode.
    assert forwards == [False] * 4 + [True] * 2
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())

    torch.manual_seed(11)
    kl_sum = nn.KLDivLoss(reduction="sum")
    model.eval()
    with torch.no_grad():
        clean = F.softmax(model(images), dim=1)
    noise = global_batch_noise(images, seed=0, epoch=0, batch=1, stream=TRADES_STREAM, normal=True)
    adversarial = images + 0.001 * noise
    for _ in range(3):
        adversarial.requires_grad_()
        (gradient,) = torch.autograd.grad(kl_sum(F.log_softmax(model(adversarial), dim=1), clean), [adversarial])
        adversarial = adversarial.detach() + 0.03 * torch.sign(gradient.detach())
        adversarial = torch.min(torch.max(adversarial, images - 0.1), images + 0.1)
        adversarial = torch.clamp(adversarial, 0.0, 1.0)
    model.train()
    logits = model(images)
    adversarial_logits = model(adversarial)
    natural = F.cross_entropy(logits, labels)
    robust = kl_sum(F.log_softmax(adversarial_logits, dim=1), F.softmax(logits, dim=1)) / 4
    assert torch.equal(output.logits, adversarial_logits)
    assert torch.allclose(output.loss, natural + 6.0 * robust, rtol=1e-6)
    assert torch.allclose(output.stats["kl"], robust, rtol=1e-6) and output.stats["kl"] > 0
    assert torch.equal(output.stats["natural_loss"], natural.detach())
    assert output.passes == pytest.approx(3 + 7 / 3)
    # The KL term's gradient reaches the weights through both branches.
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_a_sigkilled_run_resumes_exactly(helpers, tmp_path: Path) -> None:
    kwargs = {"eps": 0.1, "alpha": 0.04, "steps": 2}
    helpers.assert_resumes_exactly(tmp_path, dict(helpers.TINY, method="trades", method_kwargs=kwargs))


@pytest.mark.slow
def test_two_gloo_processes_match_one(helpers, tmp_path: Path) -> None:
    # The attack starts 0.001 from the clean image, where the KL's gradient is tiny, so rounding in the
    # half-size matrix products of each process flips the sign of a few of its components: measured
    # 6.4e-4 and 2.5e-4 (seeds 5, 6); with a step of 1e-4, where flips cost nothing, 6e-8 and 1.2e-7.
    config = dict(helpers.TINY, method="trades", method_kwargs={"eps": 0.1, "alpha": 0.04, "steps": 2})
    assert helpers.max_weight_difference_of_two_processes(tmp_path, dict(config, train_limit=256)) <= 5e-3


@pytest.mark.slow
def test_trades_is_more_robust_than_natural_training_on_the_same_budget(helpers, tmp_path: Path) -> None:
    # TRADES with K = 2 costs 4.33 passes per minibatch: 3 epochs are 13 passes per example, against
    # natural training for 12 epochs. Measured over seeds 0, 1, 2: robust accuracy 0.437 / 0.417 / 0.39
    # against natural 0.15 / 0.09 / 0.063, clean 0.70 / 0.70 / 0.66.
    final = helpers.robust_run(tmp_path, "trades", {"eps": 0.1, "alpha": 0.04, "steps": 2}, epochs=3, seed=0)
    assert final["robust_accuracy"] >= helpers.natural_robust_accuracy(0) + 0.1
    assert final["clean_accuracy"] >= 0.5
