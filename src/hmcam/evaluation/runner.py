"""Running one attack on the examples still standing: early exit, compaction and verification.

Robust accuracy asks one question per example: is there a point of the ball that the model
misclassifies? Once an iterate answers yes, further steps on that example are wasted. For attacks
built on the plain steepest-ascent or momentum rule (I-FGSM, PGD, CW-L-inf, MI-FGSM, M-PGD) the loop
here is the attack's own loop (same start, same rule, same steps) that records the first iterate
that fools the model and drops fooled examples from the batch at steps 1, 2, 4, 8, ...; finding out
which ones to drop is the only host synchronization, so there is none at the other steps. Any other
attack (FGSM, DAA, whose steps couple the examples of a batch, AI-FGSM, the chains) runs as it is.
Either way every counted success is checked again by a separate forward pass of the returned
example, which is what the reported numbers rest on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.attacks import (
    APGDT,
    ATTACK_REGISTRY,
    Attack,
    Ball,
    ChainAttack,
    IterativeAttack,
    Momentum,
    SteepestAscent,
    StepRule,
)
from hmcam.attacks.ifgsm import IFGSM
from hmcam.attacks.norms import per_example
from hmcam.core.builder import build
from hmcam.evaluation.metrics import predict

#: Step rules whose state is per example, so that fooled examples can leave the batch mid-attack.
COMPACTABLE_RULES: tuple[type[StepRule], ...] = (SteepestAscent, Momentum)


def derive_seed(seed: int, chunk: int, stage: str) -> int:
    """The attack seed of one stage on one chunk: a hash of the evaluation seed, the chunk and the stage.

    Random starts depend only on these, never on the process that runs the chunk or on what ran
    before in that process, so one process, K processes and a resumed run draw the same starts.
    """
    digest = hashlib.sha256(f"{seed}/{chunk}/{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_attack(
    name: str, model: nn.Module, *, eps: float, norm: str, steps: int, alpha: float | None, seed: int
) -> Attack:
    """The attack ``name`` for ``model`` with one run (restarts are run by the evaluation itself).

    ``eps``, ``norm`` and ``seed`` go to every attack (each has an eps-ball here); ``steps`` and
    ``alpha`` (when given) to the attacks that take them (not FGSM, whose one step is eps), as
    :data:`~hmcam.attacks.ATTACK_REGISTRY` says; the rest keep their own defaults.
    """
    accepted = ATTACK_REGISTRY.accepts(name)
    options: dict[str, Any] = {"eps": eps, "norm": norm, "seed": seed}
    if "steps" in accepted:
        options["steps"] = steps
    if alpha is not None and "alpha" in accepted:
        options["alpha"] = alpha
    return build(ATTACK_REGISTRY, name, model, **options)


def is_iterative(attack: Attack) -> bool:
    """Whether ``attack`` takes gradient steps in a loop (anything but a one-step attack such as FGSM)."""
    return isinstance(attack, IterativeAttack)


def is_random(attack: Attack) -> bool:
    """Whether two runs of ``attack`` can differ (a random start or Metropolis-Hastings draws), so restarts help."""
    return isinstance(attack, ChainAttack) or (isinstance(attack, IterativeAttack) and attack.random_start)


def gradient_cost(attack: Attack) -> int:
    """Input-gradient evaluations of one run of ``attack`` on one example (its cost, for ordering attacks)."""
    if isinstance(attack, ChainAttack):
        return attack.steps * attack.samples
    if isinstance(attack, APGDT):
        return attack.steps * attack.n_target_classes  # one run per target class (fewer on few classes)
    if isinstance(attack, IterativeAttack):
        return attack.steps
    return 1


def _early_exit_capable(attack: Attack) -> bool:
    if not isinstance(attack, IFGSM):
        return False
    kind = type(attack)
    # The loop below replays IterativeAttack.perturb (one run), IFGSM.run and IterativeAttack.descend; an
    # attack that changes any of them is run as it is.
    return (
        kind.perturb is IterativeAttack.perturb
        and kind.run is IFGSM.run
        and kind.descend is IterativeAttack.descend
        and attack.labelled
        and not attack.targeted
    )


def _compact_rule(rule: StepRule, keep: Tensor) -> None:
    for name in ("alpha", "momentum"):
        value = getattr(rule, name, None)
        if isinstance(value, Tensor) and value.dim() > 0:
            setattr(rule, name, value[keep])


def _is_power_of_two(t: int) -> bool:
    return t & (t - 1) == 0


def _early_exit(attack: IFGSM, ball: Ball, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, int]:
    """The attack's run, stopping each example at its first fooling iterate; returns points and gradient count."""
    rule = attack.rule(ball)
    if type(rule) not in COMPACTABLE_RULES:
        return attack.perturb(ball, y, generator), y.shape[0] * attack.steps
    point = attack.start(ball, generator)
    result = ball.center.clone()
    active = torch.arange(y.shape[0], device=y.device)
    current, labels = ball, y
    found = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
    kept = point
    gradients = 0
    for t in range(1, attack.steps + 1):
        _, logits, grad = attack.gradient(point, labels)
        gradients += labels.shape[0]
        hit = attack.outcome(logits, labels) & ~found
        kept = torch.where(per_example(hit, point), point, kept)
        found = found | hit
        point = rule.step(current, point, grad, t)
        if _is_power_of_two(t) and t < attack.steps:
            # The only host synchronization of the loop: which examples to keep attacking.
            done = found.nonzero().squeeze(1)
            result[active[done]] = kept[done]
            keep = (~found).nonzero().squeeze(1)
            if keep.numel() == 0:
                return result, gradients
            if keep.numel() < labels.shape[0]:
                active, point, kept, labels = active[keep], point[keep], kept[keep], labels[keep]
                current = current.subset(keep)
                _compact_rule(rule, keep)
                found = found[keep]
    # Examples not fooled by an iterate return the last point, as the attack itself would; the
    # verification pass that follows tells whether it fools the model.
    result[active] = torch.where(per_example(found, point), kept, point)
    return result, gradients


@dataclass(frozen=True)
class Outcome:
    """What one attack run did to a set of examples (CPU tensors, one entry per example).

    ``fooled`` is the verified result: the returned example, passed through the model on its own,
    is misclassified. ``prediction`` is the model's label for the returned example and
    ``perturbation`` its distance to the clean example under the threat model's norm.
    ``gradients`` counts the input-gradient evaluations spent (examples times steps actually run).
    """

    fooled: Tensor
    prediction: Tensor
    perturbation: Tensor
    gradients: int


def attack_and_verify(attack: Attack, x: Tensor, y: Tensor, *, target: nn.Module | None = None) -> Outcome:
    """Attack ``x`` (labels ``y``) and verify the result on ``target`` (default: the attacked model).

    A different ``target`` makes a transfer attack: examples crafted on ``attack.model`` are judged
    by ``target``, and the attack then runs without early exit, since the attacked model's mistakes
    are not what counts.
    """
    transfer = target is not None and target is not attack.model
    judge = attack.model if target is None else target
    if transfer or not _early_exit_capable(attack):
        adversarial = attack(x, y)
        gradients = x.shape[0] * gradient_cost(attack)
        if isinstance(attack, IterativeAttack) and not isinstance(attack, ChainAttack):
            gradients *= attack.restarts
    else:
        assert isinstance(attack, IFGSM)  # _early_exit_capable checked it
        counter: list[int] = []

        def body(ball: Ball, labels: Tensor, generator: torch.Generator | None) -> Tensor:
            points, spent = _early_exit(attack, ball, labels, generator)
            counter.append(spent)
            return ball.finish(points)

        adversarial = attack.guarded(x, y, body)
        gradients = counter[0]
    prediction = predict(judge, adversarial, batch_size=max(1, x.shape[0]))
    perturbation = attack.norm.measure((adversarial - x).float())
    return Outcome(
        fooled=(prediction != y).cpu(),
        prediction=prediction.cpu(),
        perturbation=perturbation.cpu(),
        gradients=int(gradients),
    )
