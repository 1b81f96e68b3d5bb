"""An example's result never depends on the batch it is in (per-example losses, Eq. 7 amended)."""

from __future__ import annotations

import math

import pytest
import torch

from hmcam.attacks import AIFGSM, FGSM, HMCAM, IFGSM, MIFGSM, PGD, CWLinf

DETERMINISTIC = {
    "fgsm": lambda m: FGSM(m, 0.1),
    "ifgsm": lambda m: IFGSM(m, 0.1, steps=5),
    "pgd-no-start": lambda m: PGD(m, 0.1, steps=5, random_start=False),
    "mifgsm": lambda m: MIFGSM(m, 0.1, steps=5),
    "aifgsm": lambda m: AIFGSM(m, 0.1, steps=5),
    "aifgsm-l2": lambda m: AIFGSM(m, 1.0, steps=5, norm="l2"),
    "hmcam": lambda m: HMCAM(m, 0.1, steps=3, samples=3, temperature=math.inf),
    "cwlinf": lambda m: CWLinf(m, 0.1, steps=5, random_start=False),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_batch_equals_one_at_a_time(name, digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:12], y[:12]
    attack = DETERMINISTIC[name](digits_model)
    batched = attack(x, y)
    single = torch.cat([attack(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
