"""The one loop: random starts, best-of-R restarts, pluggable step rules, and early exit with compaction."""

from __future__ import annotations

import pytest
import torch

from hmcam.attacks import (
    AIFGSM,
    APGD,
    APGDT,
    DAA,
    HMCAM,
    IFGSM,
    MIFGSM,
    MPGD,
    PGD,
    AccumulatedMomentum,
    Ball,
    Blob,
    CWLinf,
    Moments,
    Momentum,
    SteepestAscent,
    StepRule,
)
from hmcam.attacks.apgd import Search
from hmcam.attacks.loop import ActiveSet

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


# ------------------------------------------------------------------------------ early exit
def _targets(y: torch.Tensor) -> torch.Tensor:
    return (y + 1) % 10


EARLY_EXIT = {
    "IFGSM": lambda model, **kw: IFGSM(model, 0.1, steps=10, **kw),
    "PGD": lambda model, **kw: PGD(model, 0.1, steps=10, seed=3, **kw),
    "MIFGSM": lambda model, **kw: MIFGSM(model, 0.1, steps=10, **kw),
    "MPGD": lambda model, **kw: MPGD(model, 0.1, steps=10, seed=3, **kw),
    "APGD": lambda model, **kw: APGD(model, 0.1, steps=10, seed=3, **kw),
    "APGD-L1": lambda model, **kw: APGD(model, 3.0, steps=10, norm="l1", seed=3, **kw),
    "APGDT": lambda model, **kw: APGDT(model, 0.1, steps=10, n_target_classes=3, seed=3, **kw),
    "PGD-targeted": lambda model, **kw: PGD(model, 0.15, steps=10, seed=3, targeted=True, **kw),
    "MPGD-targeted": lambda model, **kw: MPGD(model, 0.15, steps=10, seed=3, targeted=True, **kw),
    "APGD-targeted": lambda model, **kw: APGD(model, 0.15, steps=10, seed=3, targeted=True, **kw),
}


@pytest.mark.parametrize("name", EARLY_EXIT)
def test_early_exit_fools_what_the_whole_run_fools_for_fewer_gradients(name, digits_model, digits_correct) -> None:
    x, y = digits_correct
    targeted = name.endswith("targeted")
    labels = _targets(y) if targeted else y
    plain, early = EARLY_EXIT[name](digits_model), EARLY_EXIT[name](digits_model, early_exit=True)
    assert not plain.early_exit
    whole, stopped = plain(x, labels), early(x, labels)
    with torch.no_grad():
        predictions = digits_model(whole).argmax(1), digits_model(stopped).argmax(1)
    fooled_whole, fooled_early = ((p == labels) if targeted else (p != labels) for p in predictions)
    assert fooled_early.sum() > 0
    assert bool((fooled_early | ~fooled_whole).all())  # every example the whole run fools
    if isinstance(plain, APGD):  # APGD returns a fooling iterate wherever one was found: the same set
        assert torch.equal(fooled_early, fooled_whole)
    assert (plain.norm.measure(stopped - x) <= plain.eps * (1 + 1e-5) + 1e-6).all()
    assert 0.0 <= float(stopped.min()) and float(stopped.max()) <= 1.0
    # The undefended model is fooled early, so fewer gradients are spent; the whole run spends examples x steps
    # (APGD one more, at its start point; APGD-T one run per target, on the examples no earlier target fooled).
    assert 0 < early.gradients_spent < plain.gradients_spent
    if not isinstance(plain, APGDT):
        assert plain.gradients_spent == len(x) * (plain.steps + isinstance(plain, APGD))


def test_early_exit_returns_the_first_fooling_iterate(digits_model, digits_correct) -> None:
    x, y = digits_correct
    kept: list[torch.Tensor] = []

    class Recorded(IFGSM):
        def gradient(self, point, labels):
            kept.append(point)
            return super().gradient(point, labels)

    Recorded(digits_model, 0.1, steps=6, early_exit=False)(x, y)
    early = IFGSM(digits_model, 0.1, steps=6, early_exit=True)(x, y)
    with torch.no_grad():
        fooled = torch.stack([digits_model(point).argmax(1) != y for point in kept])  # [steps, B]
    hit = fooled.any(0)
    first = fooled.float().argmax(0)
    for i in hit.nonzero().squeeze(1).tolist():
        torch.testing.assert_close(early[i], kept[int(first[i])][i])


def test_compaction_only_at_powers_of_two() -> None:
    active = ActiveSet(torch.zeros(4, 2), steps=10)
    assert [t for t in range(1, 11) if active.due(t)] == [1, 2, 4, 8]
    point = torch.arange(8.0).reshape(4, 2)
    active.record(point, torch.tensor([False, True, False, True]))
    active.record(point + 100, torch.tensor([True, True, False, False]))  # example 1 keeps its first iterate
    keep = active.compact()
    assert keep is not None and keep.tolist() == [2] and active.index.tolist() == [2]
    assert active.compact() is None  # nobody new to drop
    result = active.finish(torch.full((1, 2), -1.0))
    assert result.tolist() == [[100.0, 101.0], [2.0, 3.0], [-1.0, -1.0], [6.0, 7.0]]
    assert active.fooled.tolist() == [True, True, False, True]


def test_rule_subset_keeps_the_listed_rows() -> None:
    keep = torch.tensor([2, 0])
    values = torch.arange(4.0).reshape(4, 1, 1, 1)
    steepest = SteepestAscent(values.clone())
    steepest.subset(keep)
    assert steepest.alpha.flatten().tolist() == [2.0, 0.0]
    shared = SteepestAscent(0.1)  # a scalar step is shared by every example and stays
    shared.subset(keep)
    assert shared.alpha == 0.1
    momentum = Momentum(0.1, 1.0)
    momentum.subset(keep)  # no momentum yet: nothing to keep
    momentum.momentum = values.clone()
    momentum.subset(keep)
    assert momentum.momentum.flatten().tolist() == [2.0, 0.0]
    moments = AccumulatedMomentum(values.clone(), values.clone(), Moments())
    moments.velocity, moments.second, moments.second_max = values + 1, values + 2, values + 3
    moments.initial_kinetic = values.flatten()
    moments.subset(keep)
    assert [v.flatten().tolist() for v in (moments.alpha, moments.cap, moments.velocity, moments.second)] == [
        [2.0, 0.0],
        [2.0, 0.0],
        [3.0, 1.0],
        [4.0, 2.0],
    ]
    assert moments.second_max.flatten().tolist() == [5.0, 3.0] and moments.initial_kinetic.tolist() == [2.0, 0.0]
    blob = Blob(values.clone(), 1.1)
    blob.subset(keep)
    assert blob.alpha.flatten().tolist() == [2.0, 0.0]
    search = Search(values, values + 1, values.flatten() + 2, values + 3, torch.tensor([True, False, True, False]))
    search.subset(keep)
    assert search.best.flatten().tolist() == [2.0, 0.0] and search.best_grad.flatten().tolist() == [3.0, 1.0]
    assert search.best_objective.tolist() == [4.0, 2.0] and search.adversarial.flatten().tolist() == [5.0, 3.0]
    assert search.fooled.tolist() == [True, True]


def test_a_rule_that_couples_the_examples_runs_to_the_end(digits_model, digits_correct) -> None:
    x, y = digits_correct
    assert not Blob.per_example_state and SteepestAscent.per_example_state
    plain = DAA(digits_model, 0.1, steps=6, seed=0)
    early = DAA(digits_model, 0.1, steps=6, seed=0, early_exit=True)
    whole, stopped = plain(x, y), early(x, y)
    assert early.gradients_spent == plain.gradients_spent == len(x) * 6
    with torch.no_grad():
        fooled_whole = digits_model(whole).argmax(1) != y
        fooled_early = digits_model(stopped).argmax(1) != y
    # Every example kept its place in the blob, so the trajectories are those of the whole run.
    assert bool((fooled_early | ~fooled_whole).all())
    assert torch.equal(stopped[~fooled_early], whole[~fooled_early])


def test_early_exit_is_a_flag() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(TypeError):
        PGD(model, 0.1, early_exit=1)
    with pytest.raises(TypeError):
        APGD(model, 0.1, early_exit="yes")
