"""One attack on the examples still standing: early exit against the plain attack, seeds, verification."""

from __future__ import annotations

import torch

from hmcam.attacks import AIFGSM, APGD, APGDT, FABT, FGSM, IFGSM, MPGD, PGD, Attack, Square
from hmcam.evaluation import predict
from hmcam.evaluation.runner import attack_and_verify, derive_seed, gradient_cost, is_random, with_early_exit
from hmcam.evaluation.suites import attack_list


def build_attack(name: str, model: torch.nn.Module, *, eps: float, steps: int, seed: int) -> Attack:
    """The attack ``name`` as an evaluation builds it from a list of names."""
    return attack_list([name], steps, 1)[0].build(model, eps=eps, norm="linf", seed=seed)


def test_early_exit_finds_every_example_the_plain_attack_finds_with_fewer_gradients(digits_model, digits_correct):
    x, y = digits_correct
    x, y = x[:64], y[:64]
    for attack_class in (IFGSM, PGD, MPGD, APGD):
        # Same seed, same batch: the same random start and the same trajectory until an example is fooled.
        plain = attack_class(digits_model, 0.2, steps=10, seed=3)
        fooled_plain = predict(digits_model, plain(x, y)) != y
        given = attack_class(digits_model, 0.2, steps=10, seed=3)
        outcome = attack_and_verify(given, x, y)
        assert not given.early_exit  # the runner switched early exit on for a copy of the attack
        assert bool((outcome.fooled | ~fooled_plain).all()), attack_class.__name__
        # An undefended model is fooled early, so fewer than the 64 x 10 = 640 gradients of the plain
        # attack are spent. Measured over digits models from seeds 0-2: I-FGSM 492-498 (its steps are
        # eps / 10, so examples fall late), PGD and M-PGD 296-327. Without early exit: exactly 640 (APGD 704,
        # one more gradient at its start).
        assert 0 < outcome.gradients < 0.9 * 64 * 10, (attack_class.__name__, outcome.gradients)


def test_examples_never_fooled_end_where_the_plain_attack_ends(digits_model, digits_correct):
    x, y = digits_correct
    x, y = x[:48], y[:48]
    eps = 0.02  # small: most examples survive, so their full trajectories are compared
    plain = IFGSM(digits_model, eps, steps=6)(x, y)
    outcome = attack_and_verify(IFGSM(digits_model, eps, steps=6), x, y)
    survivors = ~outcome.fooled
    assert survivors.sum() >= 10
    distance = IFGSM(digits_model, eps).norm.measure(plain - x)
    assert torch.allclose(outcome.perturbation[survivors], distance[survivors], atol=1e-6)
    assert torch.equal(outcome.prediction[survivors], predict(digits_model, plain)[survivors])


def test_outcomes_are_verified_and_inside_the_ball(digits_model, digits_correct):
    x, y = digits_correct
    for name in ("fgsm", "pgd", "cwlinf", "aifgsm"):
        attack = build_attack(name, digits_model, eps=0.15, steps=5, seed=1)
        outcome = attack_and_verify(attack, x, y)
        assert torch.equal(outcome.fooled, outcome.prediction != y)
        assert float(outcome.perturbation.max()) <= 0.15 + 1e-6


def test_transfer_examples_are_judged_by_the_target(digits_model, digits_correct):
    x, y = digits_correct
    source = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # an unrelated, untrained model
    outcome = attack_and_verify(PGD(source, 0.1, steps=3, seed=0), x, y, target=digits_model)
    adversarial = PGD(source, 0.1, steps=3, seed=0)(x, y)
    assert torch.equal(outcome.prediction, predict(digits_model, adversarial))
    assert outcome.gradients == len(x) * 3


def test_early_exit_is_set_where_taken(digits_model) -> None:
    def build(name: str, early_exit: bool):
        return with_early_exit(build_attack(name, digits_model, eps=0.1, steps=3, seed=0), early_exit)

    assert build("pgd", True).early_exit and not build("pgd", False).early_exit
    assert build("apgd-t", True).early_exit and build("mifgsm", True).early_exit
    assert not build("hmcam", True).early_exit  # a sampler returns its chain's state, not a first success
    assert isinstance(build("fgsm", True), FGSM)


def test_robust_accuracy_of_a_cascade_equals_the_plain_attacks(digits_model, digits_correct) -> None:
    """Early exit changes what is spent, not what is found: the attacks' own fooled sets, unioned."""
    x, y = digits_correct
    fooled_plain = torch.zeros_like(y, dtype=torch.bool)
    fooled_early = torch.zeros_like(y, dtype=torch.bool)
    for name in ("pgd", "apgd", "mpgd"):
        attack = build_attack(name, digits_model, eps=0.1, steps=10, seed=5)
        fooled_plain |= predict(digits_model, attack(x, y)) != y
        fooled_early |= attack_and_verify(attack, x, y).fooled
    assert bool((fooled_early | ~fooled_plain).all())


def test_seeds_depend_on_chunk_and_stage_only() -> None:
    assert derive_seed(0, 3, "attack:pgd:0") == derive_seed(0, 3, "attack:pgd:0")
    assert len({derive_seed(0, 3, "attack:pgd:0"), derive_seed(0, 4, "attack:pgd:0"), derive_seed(1, 3, "attack:pgd:0"),
                derive_seed(0, 3, "attack:pgd:1")}) == 4  # fmt: skip
    assert 0 <= derive_seed(2**40, 10**6, "x") < 2**63


def test_costs_and_randomness(digits_model) -> None:
    assert gradient_cost(FGSM(digits_model, 0.1)) == 1
    assert gradient_cost(PGD(digits_model, 0.1, steps=7)) == 7
    assert gradient_cost(APGDT(digits_model, 0.1, steps=7, n_target_classes=3)) == 21
    assert gradient_cost(APGDT(digits_model, 0.1, steps=7)) == 63  # the default 9 targets
    assert gradient_cost(APGD(digits_model, 0.1, steps=7, eot_iter=4)) == 28
    assert gradient_cost(FABT(digits_model, 0.1, steps=5, n_target_classes=2)) == 10
    assert gradient_cost(Square(digits_model, 0.1, n_queries=300)) == 100  # a query is a third of a gradient
    assert not is_random(FGSM(digits_model, 0.1)) and not is_random(IFGSM(digits_model, 0.1))
    assert is_random(PGD(digits_model, 0.1)) and not is_random(AIFGSM(digits_model, 0.1))
