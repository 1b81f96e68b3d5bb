"""Whether a difference between two attacks is real: paired bootstrap intervals and the verdict on a claim.

Two attacks run on the same images give paired per-image outcomes (1: the image was fooled). The
difference of their success rates is uncertain by about ``1 / sqrt(n)``: a point or two on 1000
images is noise. :func:`paired_bootstrap` resamples the images (keeping each image's pair of
outcomes together, averaged first over the seeds the attacks were repeated with) and gives the
percentile interval of the difference; :func:`verdict` turns a set of such comparisons into the
one-line judgement the reports print beside the paper's number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: The verdicts a report gives a claim of the paper.
VERDICTS = ("holds", "partly", "does not hold")


@dataclass(frozen=True)
class Difference:
    """The difference of two success rates on paired images, with its bootstrap interval (fractions)."""

    difference: float
    low: float
    high: float
    images: int

    @property
    def significant(self) -> str:
        """``"higher"`` or ``"lower"`` when the interval excludes 0, else ``"tie"``."""
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "tie"

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready, in percentage points."""
        return {
            "difference_points": round(100 * self.difference, 2),
            "ci_low_points": round(100 * self.low, 2),
            "ci_high_points": round(100 * self.high, 2),
            "images": self.images,
            "significant": self.significant,
        }


def paired_bootstrap(
    first: Tensor, second: Tensor, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Difference:
    """Mean of ``first - second`` and its percentile bootstrap interval over images.

    ``first`` and ``second`` are per-image outcomes, ``[images]`` or ``[seeds, images]`` (each image's
    outcomes are averaged over the seeds before resampling, so the seeds are not mistaken for
    independent images). Images are resampled with replacement ``resamples`` times.
    """
    if first.shape != second.shape or first.dim() not in (1, 2) or first.shape[-1] == 0:
        raise ValueError(
            f"paired outcomes need the same [images] or [seeds, images] shape, got {first.shape}, {second.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    paired = first.double() - second.double()
    per_image = (paired.mean(dim=0) if paired.dim() == 2 else paired).cpu()
    count = per_image.numel()
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(count, (resamples, count), generator=generator)
    means = per_image[draws].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Difference(float(per_image.mean()), low, high, count)


def verdict(outcomes: Sequence[str]) -> str:
    """``holds`` if every comparison came out ``"higher"``, ``does not hold`` if none did, else ``partly``."""
    if not outcomes:
        raise ValueError("a verdict needs at least one comparison")
    wins = sum(outcome == "higher" for outcome in outcomes)
    if wins == len(outcomes):
        return "holds"
    return "does not hold" if wins == 0 else "partly"
