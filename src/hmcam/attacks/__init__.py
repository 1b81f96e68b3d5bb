"""Every attack of the paper (section 3, Table 1, Algorithms 1-2) on one shared threat model.

Where each concept lives: the threat model in ``ball.py`` and ``norms.py``, input checks and model
hygiene in ``base.py`` and ``hygiene.py``, the one iterative loop with restarts in ``loop.py``, each
update rule beside its attack (sign steps in ``ifgsm.py``, momentum in ``mifgsm.py``, accumulated
momentum in ``aifgsm.py``, the blob term in ``daa.py``), Metropolis-Hastings and chain recording in
``chain.py``, Algorithm 2 in ``hmcam.py`` and Algorithm 1 in ``hmc.py``.
"""

from hmcam.attacks.aifgsm import AIFGSM, AccumulatedMomentum, Moments
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
from hmcam.attacks.fgsm import FGSM
from hmcam.attacks.hmc import HMC
from hmcam.attacks.hmcam import HMCAM
from hmcam.attacks.hygiene import attack_mode
from hmcam.attacks.ifgsm import BIM, IFGSM, SteepestAscent
from hmcam.attacks.loop import IterativeAttack, StepRule, Trajectory
from hmcam.attacks.mifgsm import MIFGSM, MPGD, Momentum
from hmcam.attacks.norms import NORMS, get_norm
from hmcam.attacks.pgd import PGD, CWLinf

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
}


def get_attack(name: str) -> type[Attack]:
    """Look up an attack class by its lower-case name."""
    if not isinstance(name, str) or name.lower() not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name.lower()]


__all__ = [
    "AIFGSM",
    "ATTACKS",
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
    "SteepestAscent",
    "StepRule",
    "Trajectory",
    "Transition",
    "attack_mode",
    "get_attack",
    "get_norm",
    "metropolis_hastings",
]
