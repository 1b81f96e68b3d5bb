"""The one loop: random starts and best-of-R restarts for every iterative attack, pluggable step rules."""

from __future__ import annotations

import pytest
import torch

from hmcam.attacks import AIFGSM, DAA, HMCAM, IFGSM, MIFGSM, MPGD, PGD, Ball, CWLinf, StepRule

ITERATIVE = [IFGSM, PGD, MIFGSM, MPGD, AIFGSM, CWLinf, DAA, HMCAM]


@pytest.mark.parametrize("attack_class", ITERATIVE, ids=lambda c: c.__name__)
def test_every_iterative_attack_takes_a_random_start_and_restarts(attack_class, digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:64], y[:64]
    kwargs = {"steps": 2, "seed": 0}
    one = attack_class(digits_model, 0.1, random_start=True, **kwargs)(x, y)
    assert not torch.equal(one, attack_class(digits_model, 0.1, random_start=False, **kwargs)(x, y))
    many = attack_class(digits_model, 0.1, random_start=True, restarts=4, **kwargs)(x, y)
    assert ((many - x).abs().flatten(1).amax(1) <= 0.1 + 1e-6).all()
    with torch.no_grad():
        fooled_one = (digits_model(one).argmax(1) != y).sum()
        fooled_many = (digits_model(many).argmax(1) != y).sum()
    # The first restart is the single run, and a later one replaces it only where it does better.
    assert fooled_many >= fooled_one


def test_best_of_restarts_keeps_the_first_success_else_the_highest_loss(tiny_net_factory) -> None:
    model = tiny_net_factory().eval()
    x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(16, dtype=torch.int64)
    attack = PGD(model, 0.05, steps=1, restarts=3, seed=0)
    runs = []
    original = attack.run

    def recording_run(ball, labels, generator):
        runs.append(original(ball, labels, generator))
        return runs[-1]

    attack.run = recording_run
    best = attack(x, y)
    with torch.no_grad():
        losses = torch.stack([torch.nn.functional.cross_entropy(model(r), y, reduction="none") for r in runs])
        fooled = torch.stack([model(r).argmax(1) != y for r in runs])
    for i in range(16):
        successes = fooled[:, i].nonzero()
        chosen = int(successes[0]) if len(successes) else int(losses[:, i].argmax())
        torch.testing.assert_close(best[i], runs[chosen][i])


def test_a_new_step_rule_plugs_into_the_loop(digits_correct, digits_model) -> None:
    class Doubling(StepRule):
        """Sign steps whose size doubles each step: a rule the library does not ship."""

        def step(self, ball: Ball, point: torch.Tensor, grad: torch.Tensor, t: int) -> torch.Tensor:
            return ball.step(point, 0.005 * 2 ** (t - 1), grad)

    class DoublingAttack(IFGSM):
        def rule(self, ball: Ball) -> StepRule:
            return Doubling()

    x, y = digits_correct
    x, y = x[:4], y[:4]
    adversarial = DoublingAttack(digits_model, 0.1, steps=3)(x, y)
    # The same three steps as single-step I-FGSM calls (0.035 in all stays inside the 0.1 ball).
    manual = IFGSM(digits_model, 0.1, alpha=0.005, steps=1)(x, y)
    manual = IFGSM(digits_model, 0.1, alpha=0.01, steps=1)(manual, y)
    manual = IFGSM(digits_model, 0.1, alpha=0.02, steps=1)(manual, y)
    torch.testing.assert_close(adversarial, manual)
