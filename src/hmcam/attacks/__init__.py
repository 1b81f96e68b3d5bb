"""Every attack of the paper (section 3, Table 1, Algorithms 1-2) on one shared threat model."""

from hmcam.attacks.aifgsm import AIFGSM
from hmcam.attacks.base import Attack, Ball
from hmcam.attacks.chain import ChainAttack, ChainResult, metropolis_hastings
from hmcam.attacks.cw import CW
from hmcam.attacks.daa import DAA
from hmcam.attacks.fgsm import FGSM
from hmcam.attacks.hmc import HMC
from hmcam.attacks.hmcam import HMCAM
from hmcam.attacks.hygiene import attack_mode
from hmcam.attacks.ifgsm import BIM, IFGSM
from hmcam.attacks.mifgsm import MIFGSM, MPGD
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
    "AIFGSM", "ATTACKS", "Attack", "BIM", "Ball", "CW", "CWLinf", "ChainAttack", "ChainResult", "DAA",
    "FGSM", "HMC", "HMCAM", "IFGSM", "MIFGSM", "MPGD", "NORMS", "PGD", "attack_mode", "get_attack",
    "get_norm", "metropolis_hastings",
]
