"""Every attack of the paper (section 3, Table 1, Algorithms 1-2) on one shared threat model.

Where each concept lives: the threat model in ``ball.py`` and ``norms.py``, input checks and model
hygiene in ``base.py`` and ``hygiene.py``, the one iterative loop with restarts in ``loop.py``, each
update rule beside its attack (sign steps in ``ifgsm.py``, momentum in ``mifgsm.py``, accumulated
momentum in ``aifgsm.py``, the blob term in ``daa.py``), Metropolis-Hastings and chain recording in
``chain.py``, Algorithm 2 in ``hmcam.py`` and Algorithm 1 in ``hmc.py``.
"""

from collections.abc import Callable
from typing import Any

from hmcam.attacks.aifgsm import AIFGSM, AccumulatedMomentum, Moments
from hmcam.attacks.apgd import APGD, APGDT
from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.chain import (
    ChainAttack,
    ChainResult,
    LastStateRecorder,
    Recorder,
    SequenceRecorder,
    Transition,
    metropolis_hastings,
)
from hmcam.attacks.cw import CW
from hmcam.attacks.daa import DAA, Blob
from hmcam.attacks.fab import FAB, FABT
from hmcam.attacks.fgsm import FGSM
from hmcam.attacks.hmc import HMC
from hmcam.attacks.hmcam import HMCAM
from hmcam.attacks.hygiene import attack_mode
from hmcam.attacks.ifgsm import BIM, IFGSM, SteepestAscent
from hmcam.attacks.loop import IterativeAttack, StepRule, Trajectory
from hmcam.attacks.mifgsm import MIFGSM, MPGD, Momentum
from hmcam.attacks.norms import NORMS, get_norm
from hmcam.attacks.pgd import PGD, CWLinf
from hmcam.attacks.square import Square
from hmcam.core.builder import Registry, accepted_arguments

#: Attacks by the names the command line and the experiments use.
ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "ifgsm": IFGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "mpgd": MPGD,
    "aifgsm": AIFGSM,
    "hmcam": HMCAM,
    "hmc": HMC,
    "cw": CW,
    "cwlinf": CWLinf,
    "daa": DAA,
    "square": Square,
    "apgd": APGD,
    "apgd-t": APGDT,
    "fab": FAB,
    "fab-t": FABT,
}


def attack_arguments(attack_class: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword arguments ``attack_class`` takes; without ``eps`` and ``norm`` for an attack with no eps-ball.

    An attack whose ``uses_eps`` is False (CW) searches for a minimal perturbation in its own norm,
    so its base class's ``eps`` and ``norm`` are fixed by the attack and cannot be given.
    """
    names = accepted_arguments(attack_class)
    if getattr(attack_class, "uses_eps", True):
        return names
    return tuple(name for name in names if name not in ("eps", "norm"))


#: :data:`ATTACKS` for :func:`hmcam.core.builder.build`: names in any case, the model passed by the caller.
ATTACK_REGISTRY: Registry[type[Attack]] = Registry(
    "attack", ATTACKS, supplied=("model",), ignore_case=True, arguments=attack_arguments
)


def get_attack(name: str) -> type[Attack]:
    """Look up an attack class by its name, in any case; ValueError listing the known names otherwise."""
    return ATTACK_REGISTRY.lookup(name)


__all__ = [
    "AIFGSM",
    "APGD",
    "APGDT",
    "ATTACKS",
    "ATTACK_REGISTRY",
    "AccumulatedMomentum",
    "Attack",
    "BIM",
    "Ball",
    "Blob",
    "CW",
    "CWLinf",
    "ChainAttack",
    "ChainResult",
    "DAA",
    "FAB",
    "FABT",
    "FGSM",
    "HMC",
    "HMCAM",
    "IFGSM",
    "IterativeAttack",
    "LastStateRecorder",
    "MIFGSM",
    "MPGD",
    "Moments",
    "Momentum",
    "NORMS",
    "PGD",
    "Recorder",
    "SequenceRecorder",
    "Square",
    "SteepestAscent",
    "StepRule",
    "Trajectory",
    "Transition",
    "attack_arguments",
    "attack_mode",
    "get_attack",
    "get_norm",
    "metropolis_hastings",
]
