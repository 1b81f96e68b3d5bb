"""Signs of gradient masking (Athalye, Carlini & Wagner 2018), read from robust counts.

A robust-accuracy number is only as good as the attacks behind it. A defence that hides its
gradient rather than removing adversarial examples gives itself away in comparisons that must go
one way on an honest model: an iterative attack is at least as strong as a one-step one, more steps
do not make an attack weaker, and attacking the model's own gradient beats transferring examples
from another model. Each function here compares robust counts on the same examples and returns a
warning when the comparison goes the wrong way by more than ``tolerance`` examples (the noise of
attacks that take different paths); the restart check warns when the last restart still found new
adversarial examples, so more restarts would likely lower robust accuracy further.
"""

from __future__ import annotations

import math


def tolerance(count: int, margin: float) -> int:
    """How many examples a comparison may go the wrong way by before it warns: ``margin`` of ``count``, at least 1."""
    return max(1, math.floor(margin * count))


def _accuracy(robust: int, examples: int) -> str:
    return f"{robust / examples:.3f}" if examples else "n/a"


def one_step_warnings(
    one_step: dict[str, int], iterative: dict[str, int], examples: int, slack: int, where: str
) -> list[str]:
    """A warning for each one-step attack that leaves fewer examples robust than an iterative one.

    ``one_step`` and ``iterative`` map attack names to robust counts on the same ``examples``.
    """
    warnings = []
    for weak, weak_robust in one_step.items():
        for strong, strong_robust in iterative.items():
            if strong_robust - weak_robust > slack:
                warnings.append(
                    f"{weak} (one step) is stronger than {strong} (iterative) on {where}: robust accuracy "
                    f"{_accuracy(weak_robust, examples)} vs {_accuracy(strong_robust, examples)}; "
                    f"a sign of gradient masking, or of a too weak {strong} (check --steps and --alpha)"
                )
    return warnings


def steps_warning(
    name: str, half_steps: int, half_robust: int, steps: int, full_robust: int, examples: int, slack: int, where: str
) -> str | None:
    """A warning when ``name`` with ``half_steps`` steps leaves fewer examples robust than with ``steps``."""
    if full_robust - half_robust <= slack:
        return None
    return (
        f"{name} with {half_steps} steps is stronger than with {steps} steps on {where}: robust accuracy "
        f"{_accuracy(half_robust, examples)} vs {_accuracy(full_robust, examples)}; robust accuracy that rises "
        "with more steps is a sign of gradient masking"
    )


def transfer_warning(
    name: str, transfer_robust: int, white_box_robust: int, examples: int, slack: int, where: str
) -> str | None:
    """A warning when examples transferred from the source model beat every white-box attack together."""
    if white_box_robust - transfer_robust <= slack:
        return None
    return (
        f"the transfer attack ({name} on the source model) is stronger than all white-box attacks together on "
        f"{where}: robust accuracy {_accuracy(transfer_robust, examples)} vs "
        f"{_accuracy(white_box_robust, examples)}; a black-box attack beating white-box ones is a sign of "
        "gradient masking"
    )


def restart_warning(name: str, runs: int, fooled_last: int, examples: int, slack: int) -> str | None:
    """A warning when the last of ``runs`` restarts still fooled more than ``slack`` new examples."""
    if runs < 2 or fooled_last <= slack:
        return None
    return (
        f"the last restart of {name} ({runs} of {runs}) still fooled {fooled_last} of {examples} examples that "
        "the earlier ones did not: robust accuracy has not converged in the restarts; more would lower it further"
    )


def black_box_warning(name: str, fooled: int, examples: int, slack: int, gradient_attacks: list[str]) -> str | None:
    """A warning when the score-based ``name`` (Square) fooled more than ``slack`` examples the gradient attacks left.

    AutoAttack's own check (``check_square_sr``): a black-box attack that needs no gradient should
    add almost nothing after white-box attacks on an honest model.
    """
    if not gradient_attacks or fooled <= slack:
        return None
    return (
        f"{name}, which uses no gradient, fooled {fooled} of {examples} examples that {', '.join(gradient_attacks)} "
        "left robust: a black-box attack beating white-box ones is a sign of gradient masking"
    )
