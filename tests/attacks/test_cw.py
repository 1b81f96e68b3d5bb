"""Carlini-Wagner L2: the confidence kappa is honoured and a result does not depend on its batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.attacks import CW
from hmcam.attacks.losses import margin


@pytest.mark.parametrize("kappa", [0.0, 2.0, 5.0])
def test_cw_success_means_a_margin_of_at_least_kappa(kappa, digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:48], y[:48]
    attack = CW(digits_model, kappa=kappa, steps=100, lr=0.1, binary_search_steps=4)
    adversarial = attack(x, y)
    assert attack.last_margin is not None
    reached = attack.last_margin >= kappa
    with torch.no_grad():
        achieved = margin(digits_model(adversarial), y)
    changed = (adversarial - x).flatten(1).abs().amax(1) > 0
    # Every returned example is misclassified or the clean input; last_margin says which reach kappa.
    assert changed.float().mean() > 0.8
    assert (achieved[changed] >= -1e-4).all()
    assert (achieved[reached] >= kappa - 1e-4).all()
    torch.testing.assert_close(attack.last_margin, achieved, atol=1e-4, rtol=0)
    if kappa > 0:
        # Before the fix the kept example was the smallest barely-misclassified one (median margin 0.009).
        assert achieved[changed].median() >= kappa - 1e-4


def test_targeted_cw_reaches_the_target_with_margin(digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:32], y[:32]
    targets = (y + 1) % 10
    attack = CW(digits_model, kappa=3.0, steps=100, lr=0.1, binary_search_steps=4, targeted=True)
    adversarial = attack(x, targets)
    with torch.no_grad():
        logits = digits_model(adversarial)
    hit = logits.argmax(1) == targets
    assert attack.last_margin is not None
    reached = attack.last_margin >= 3.0
    assert (reached & hit).float().mean() > 0.7
    assert (-margin(logits[reached], targets[reached]) >= 3.0 - 1e-4).all()


def test_cw_batch_equals_one_at_a_time(digits_correct, digits_model) -> None:
    # With per_example_abort the early abort is decided per example: the batch does not change a result.
    x, y = digits_correct
    x, y = x[:8], y[:8]
    attack = CW(digits_model, steps=60, lr=0.05, binary_search_steps=3, abort_early=True, per_example_abort=True)
    batched = attack(x, y)
    single = torch.cat([attack(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)


def test_cw_with_kappa_returns_the_best_misclassified_point_when_the_margin_is_missed(digits) -> None:
    # Foolbox 3's test_untargeted_attacks: CW(binary_search_steps=3, steps=20, kappa=2) must lower the
    # accuracy of a small linear model. Few examples reach a margin of 2 in 3 x 20 steps from c = 1e-3;
    # the others now return their most confident misclassified iterate, flagged by last_margin < kappa.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(digits["x_train"]), digits["y_train"]).backward()
        optimizer.step()
    model.eval()
    x, y = digits["x_test"][:64], digits["y_test"][:64]
    attack = CW(model, binary_search_steps=3, steps=20, kappa=2.0)
    adversarial = attack(x, y)
    with torch.no_grad():
        clean_accuracy = (model(x).argmax(1) == y).float().mean()
        logits = model(adversarial)
    # Measured 0.92 -> 0.86; Foolbox asks only that accuracy falls, which the old CW never did here.
    assert (logits.argmax(1) == y).float().mean() < clean_accuracy
    assert attack.last_margin is not None
    torch.testing.assert_close(attack.last_margin, margin(logits, y), atol=1e-4, rtol=0)
    fallback = (attack.last_margin >= 0) & (attack.last_margin < 2.0)
    assert fallback.sum() >= 3
    assert (logits[fallback].argmax(1) != y[fallback]).all()
