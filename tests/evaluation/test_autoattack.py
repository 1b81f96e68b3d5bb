"""The ``autoattack`` suite against torchattacks 3.5.1 configured like fra31/auto-attack's standard version.

torchattacks' own ``AutoAttack`` class keeps its attacks' defaults (10 iterations, Square's
rescaled schedule), so the reference here is its ``MultiAttack`` of APGD-CE, APGD-T, FAB-T and Square
with the reference's settings (100 iterations, 1 restart, 9 target classes, 5,000 queries,
``resc_schedule=False``), each on the examples still robust, as in the reference. Where the port
still differs from the original: its L2 APGD-T steps every example with the first example's step
size, its FAB recomputes the logits of every iterate in an extra forward pass, and its random
draws come from the global generator, so the two evaluations take different random paths and agree
up to a few examples rather than exactly.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks

from hmcam.evaluation import evaluate_robustness

EPS = 0.1
EXAMPLES = 160
#: Robust accuracy may differ by this much (fraction of examples); see the measurement in the test.
BAR = 0.04


def reference_autoattack(model: torch.nn.Module, eps: float) -> torchattacks.MultiAttack:
    """The attacks of torchattacks with fra31/auto-attack's ``version="standard"`` settings, in its order."""
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
            torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
            torchattacks.FAB(
                model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0
            ),
            torchattacks.Square(
                model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=0
            ),
        ]
    )


@pytest.mark.parametrize("which", ["digits_model", "digits_robust_model"])
def test_autoattack_suite_agrees_with_the_reference_configured_torchattacks(request, digits, which) -> None:
    model = request.getfixturevalue(which)
    x, y = digits["x_test"][:EXAMPLES], digits["y_test"][:EXAMPLES]
    ours = evaluate_robustness(model, x, y, eps=EPS, check_examples=0, progress=False)
    assert ours.config.suite == "autoattack"
    torch.manual_seed(0)
    adversarial = reference_autoattack(model, EPS)(x, y)
    with torch.no_grad():
        theirs = (model(adversarial).argmax(1) == y).float().mean().item()
    print(f"{which}: hmcam {ours.robust_accuracy:.4f}, torchattacks {theirs:.4f}")
    assert abs(ours.robust_accuracy - theirs) <= BAR
    # Every counted adversarial example lies in the ball.
    assert float(ours.perturbation[ours.fooled_by >= 0].max()) <= EPS + 1e-6
