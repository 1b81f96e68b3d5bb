"""What the attack experiments share: the scale, the attacks at one gradient budget, the zoo and the images.

An :class:`AttackScale` fixes the dataset, the zoo of models (:mod:`hmcam.experiments.zoo`), the
L-inf radius, the gradient budget N every iterative attack gets (HMCAM: S transitions of T = N / S
steps, as the paper's T = 50, S = 2 for N = 100), the attacked test images and the seeds. A
:class:`Bench` (:func:`bench`) is what every attack experiment's jobs start from; the hits of
crafted examples on each target and the per-image differences behind a claim are computed here
once for all of them. Running, caching and writing files are the framework's
(:mod:`hmcam.experiments.framework`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.core.batching import fetch
from hmcam.core.distributed import resolve_device
from hmcam.data import load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackSettings
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.zoo import ZOOS, trained_zoo
from hmcam.reporting.tables import markdown_table

#: The attacks of Table 2, in its row order.
TABLE_ATTACKS = ("fgsm", "pgd", "mpgd", "aifgsm", "hmcam")
#: How the tables name them.
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "mpgd": "M-PGD", "aifgsm": "AI-FGSM", "hmcam": "HMCAM"}
#: The table of HMCAM's paired bootstrap intervals against each baseline (transfer, ensemble).
INTERVALS_TABLE = "intervals.csv"


@dataclass(frozen=True)
class AttackScale:
    """The size of an attack experiment: dataset and zoo, eps, budget N, HMCAM's S, images, seeds, batch.

    With an ``eps_grid``, ``eps`` is only the default: the experiments run at the eps that
    :func:`hmcam.experiments.calibration.calibrate` chooses on ``calibration_images`` held-out test
    images, and ``calibration`` records what it measured.
    """

    name: str
    zoo: str
    dataset: str
    eps: float
    budget: int
    samples: int
    images: int
    seeds: tuple[int, ...]
    batch_size: int = 250
    eps_grid: tuple[float, ...] = ()
    calibration_images: int = 0
    calibration: dict[str, Any] | None = field(default=None, compare=False)
    zoo_seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not self.zoo_seeds or len(set(self.zoo_seeds)) != len(self.zoo_seeds) or min(self.zoo_seeds) < 0:
            raise ValueError(f"zoo_seeds must be distinct non-negative integers, got {list(self.zoo_seeds)}")
        if self.budget % self.samples:
            raise ValueError(f"the budget N = {self.budget} must be a multiple of HMCAM's S = {self.samples}")
        if self.eps_grid and (self.calibration_images < 1 or any(eps <= 0 for eps in self.eps_grid)):
            raise ValueError("an eps grid needs positive eps and calibration_images >= 1")

    @property
    def zoo_seed(self) -> int:
        """The seed of the one zoo an experiment run attacks (a scale of several zoos runs once per zoo)."""
        if len(self.zoo_seeds) != 1:
            raise ValueError(f"one experiment run attacks one zoo; run once per zoo seed of {list(self.zoo_seeds)}")
        return self.zoo_seeds[0]

    def settings(self, name: str, seed: int, **changes: Any) -> AttackSettings:
        """Attack ``name`` at this scale's budget: FGSM one step, HMCAM S x (N / S), the others N steps."""
        steps = {"fgsm": 1, "hmcam": self.budget // self.samples}.get(name, self.budget)
        samples = self.samples if name == "hmcam" else 1
        fields: dict[str, Any] = {"eps": self.eps, "steps": steps, "samples": samples, "seed": seed, **changes}
        return AttackSettings(name, **fields)


#: The attack experiments' scales; every scale calibrates eps. ``small`` attacks 300 images on each of three
#: zoos (trained with seeds 0, 1, 2) with one attack seed: zoos, not attack seeds, are the variance a
#: conclusion must survive. ``paper`` uses the paper's CIFAR-10 setting of Section 5.2 (N = 100; eps 2/255 is
#: where the paper's PGD reaches its 92.7%, so its grid is centred there).
ATTACK_SCALES: dict[str, AttackScale] = {
    "smoke": AttackScale(
        "smoke",
        "smoke",
        "fashion-mnist",
        0.1,
        budget=4,
        samples=2,
        images=48,
        seeds=(0,),
        eps_grid=(0.05, 0.1, 0.2),
        calibration_images=48,
    ),
    "small": AttackScale(
        "small",
        "small",
        "fashion-mnist",
        0.05,
        budget=20,
        samples=2,
        images=300,
        seeds=(0,),
        eps_grid=(0.03, 0.05, 0.075, 0.1, 0.15, 0.2),
        calibration_images=500,
        zoo_seeds=(0, 1, 2),
    ),
    "paper": AttackScale(
        "paper",
        "paper",
        "cifar10",
        2 / 255,
        budget=100,
        samples=2,
        images=1000,
        seeds=(0, 1, 2),
        eps_grid=(1 / 255, 2 / 255, 3 / 255, 4 / 255, 8 / 255),
        calibration_images=1000,
    ),
}


def attack_images(scale: AttackScale, data_root: str | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``scale.images`` test images and labels of the scale's dataset, on ``device``."""
    test = load_dataset(scale.dataset, "test", root=data_root, limit=scale.images)
    images, labels = fetch(test, range(len(test.labels)))
    return images.to(device), labels.to(device)


def adversarial_examples(
    model: nn.Module, settings: AttackSettings, images: Tensor, labels: Tensor, batch_size: int
) -> Tensor:
    """The attack's adversarial examples (a chain attack's last state), batch by batch, targets if targeted."""
    attack = settings.build(model)
    return torch.cat(
        [
            attack(images[start : start + batch_size], labels[start : start + batch_size])
            for start in range(0, len(images), batch_size)
        ]
    )


@dataclass
class Bench:
    """The zoo trained for a scale and the attacked images: everything an attack experiment starts from.

    ``sources`` are the naturally trained models (the paper crafts on those), ``targets`` every model
    and ``adversarial`` the adversarially trained ones; ``correct[label]`` says which images a model
    classifies correctly (on the CPU), the images success is counted among.
    """

    models: dict[str, nn.Module]
    sources: list[str]
    targets: list[str]
    adversarial: list[str]
    images: Tensor
    labels: Tensor
    correct: dict[str, Tensor]


def bench(scale: AttackScale, options: RunOptions) -> Bench:
    """Train (or reload) the scale's zoo into ``options.models`` and load the attacked images."""
    models = trained_zoo(
        scale.zoo,
        options.models,
        seed=scale.zoo_seed,
        device=options.device,
        data_root=options.data_root,
        progress=options.progress,
    )
    images, labels = attack_images(scale, options.data_root, resolve_device(options.device))
    entries = ZOOS[scale.zoo]
    return Bench(
        models=models,
        sources=[entry.label for entry in entries if not entry.adversarial],
        targets=[entry.label for entry in entries],
        adversarial=[entry.label for entry in entries if entry.adversarial],
        images=images,
        labels=labels,
        correct={label: (predict(model, images) == labels).cpu() for label, model in models.items()},
    )


def hits_on_targets(
    models: dict[str, nn.Module],
    source: str,
    settings: Sequence[AttackSettings],
    targets: Sequence[str],
    images: Tensor,
    labels: Tensor,
    batch_size: int,
) -> Tensor:
    """Per settings (one per seed), which images the examples crafted on ``source`` fool on each target.

    Returns ``[len(settings), len(targets), images]`` booleans (prediction differs from the label).
    """
    per_seed = []
    for setting in settings:
        crafted = adversarial_examples(models[source], setting, images, labels, batch_size)
        per_seed.append(torch.stack([predict(models[target], crafted) != labels for target in targets]))
    return torch.stack(per_seed).cpu()


def image_differences(pairs: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """Per-image difference in points, averaged over the pairs that count the image and over the seeds.

    Each pair is ``(first_hits, second_hits, eligible)``: hits ``[seeds, images]`` of the two attacks
    on one source/target pair and the images that pair counts (the target classifies them correctly).
    An image counted by no pair is dropped. The images are the unit a claim resamples: their
    differences are independent, the pairs and seeds of one image are not.
    """
    if not pairs:
        raise ValueError("a per-image difference needs at least one pair")
    total = torch.zeros(pairs[0][2].numel(), dtype=torch.float64)
    count = torch.zeros_like(total)
    for first, second, eligible in pairs:
        mask = eligible.to(torch.float64)
        total += (first.double() - second.double()).mean(dim=0) * mask
        count += mask
    return 100 * total[count > 0] / count[count > 0]


def calibration_text(scale: AttackScale) -> str:
    """The Markdown of the scale's eps calibration (:mod:`hmcam.experiments.calibration`), or that eps was fixed."""
    if not scale.calibration:
        return f"eps {scale.eps:.4g} is fixed by the scale (no calibration).\n"
    return calibration_markdown(scale.calibration)


def calibration_markdown(found: dict[str, Any]) -> str:
    """The Markdown of a calibration's record (:meth:`hmcam.experiments.calibration.Calibration.to_dict`)."""
    lines = [
        "### Calibration of eps",
        "",
        f"PGD ({found['budget']} steps, seed {found['seed']}) from every natural model on test images "
        f"{found['held_out'][0]} .. {found['held_out'][1] - 1}, which no experiment evaluates; eps "
        f"{found['chosen']:.4g} gives the mean white-box success closest to the paper's "
        f"{found['target_white_box']}% (Table 2, where black-box PGD reaches {found['paper_black_box']}%).",
        "",
        markdown_table(
            [{**row, "chosen": "yes" if row["chosen"] else ""} for row in found["rows"]],
            ["eps", "white_box", "black_box", "chosen"],
        ),
    ]
    return "\n".join(lines)
