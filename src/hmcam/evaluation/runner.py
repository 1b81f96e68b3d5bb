"""Running one attack on the examples still standing: early exit and verification.

Robust accuracy asks one question per example: is there a point of the ball that the model
misclassifies? Once an iterate answers yes, further steps on that example are wasted, so the
attacks that offer it (the I-FGSM family and APGD / APGD-T, see
:class:`~hmcam.attacks.IterativeAttack`) run here with ``early_exit``: each example stops at its
first fooling iterate and fooled examples leave the batch at steps 1, 2, 4, 8, ..., the only host
synchronizations. The others (FGSM, the chains) run as they are, and so does every transfer attack,
whose own model's mistakes are not what counts. Either way every counted success is checked again
by a separate forward pass of the returned example, which is what the reported numbers rest on.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

from torch import Tensor, nn

from hmcam.attacks import APGD, APGDT, FAB, FABT, Attack, ChainAttack, IterativeAttack, Square, attack_arguments
from hmcam.attacks.apgd import DEFAULT_TARGETS
from hmcam.evaluation.metrics import predict


def derive_seed(seed: int, chunk: int, stage: str) -> int:
    """The attack seed of one stage on one chunk: a hash of the evaluation seed, the chunk and the stage.

    Random starts depend only on these, never on the process that runs the chunk or on what ran
    before in that process, so one process, K processes and a resumed run draw the same starts.
    """
    digest = hashlib.sha256(f"{seed}/{chunk}/{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
    if isinstance(attack, (APGDT, FABT)):
        # One run per target class (fewer on few classes), each of steps (times EOT passes) gradients.
        targets = attack.n_target_classes or DEFAULT_TARGETS
        return attack.steps * targets * attack.restarts * getattr(attack, "eot_iter", 1)
    if isinstance(attack, APGD):
        return attack.steps * attack.eot_iter
    if isinstance(attack, FAB):
        # A backward pass per class and step; ten classes assumed, as the cost only orders attacks.
        return attack.steps * attack.restarts * (DEFAULT_TARGETS + 1)
    if isinstance(attack, Square):
        # A query is one forward pass, about a third of a gradient (forward and backward).
        return max(1, attack.n_queries * attack.restarts // 3)
    if isinstance(attack, IterativeAttack):
        return attack.steps
    return 1


def with_early_exit(attack: Attack, early_exit: bool) -> Attack:
    """``attack`` with ``early_exit`` set where it takes that option (a copy when that changes it), else as is."""
    if not isinstance(attack, IterativeAttack) or attack.early_exit == early_exit:
        return attack
    if "early_exit" not in attack_arguments(type(attack)):
        return attack
    variant = copy.copy(attack)
    variant.early_exit = early_exit
    return variant


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

    The attack runs with early exit where it offers it (on a copy when ``attack`` has it off). A
    different ``target`` makes a transfer attack: examples crafted on ``attack.model`` are judged by
    ``target``, and the attack then runs without early exit, since the attacked model's mistakes are
    not what counts.
    """
    transfer = target is not None and target is not attack.model
    judge = attack.model if target is None else target
    attack = with_early_exit(attack, not transfer)
    adversarial = attack(x, y)
    # An iterative attack counts what it spent; a one-step attack costs what gradient_cost says.
    gradients = attack.gradients_spent if isinstance(attack, IterativeAttack) else x.shape[0] * gradient_cost(attack)
    prediction = predict(judge, adversarial, batch_size=max(1, x.shape[0]))
    perturbation = attack.norm.measure((adversarial - x).float())
    return Outcome(
        fooled=(prediction != y).cpu(),
        prediction=prediction.cpu(),
        perturbation=perturbation.cpu(),
        gradients=int(gradients),
    )
