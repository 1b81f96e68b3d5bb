"""PGD (Madry et al., 2018) with random restarts, and its CW-margin variant used in robust evaluation."""

from __future__ import annotations

from hmcam.attacks.ifgsm import IFGSM


class PGD(IFGSM):
    """Projected gradient descent: I-FGSM from a uniform random start, with ``restarts`` independent runs.

    Signature ``PGD(model, eps, alpha=None, steps=10, restarts=1, *, random_start=True, ...)``.
    Madry et al.'s step ``alpha = 2.5 * eps / steps`` is the default. With several restarts each
    example keeps its first successful run, or, while none has succeeded, the run with the highest
    loss; the paper (section 3.2) reads the restarts as independent, parallel HMC chains.
    """

    default_step_ratio = 2.5
    default_random_start = True


class CWLinf(PGD):
    """PGD on the Carlini-Wagner margin at a fixed eps: what adversarial-training papers call "CW".

    The margin ``max_{j != y} z_j - z_y`` has no vanishing softmax gradient, so it finds adversarial
    examples for confidently classified inputs where cross-entropy stalls.
    """

    default_loss = "cw"
