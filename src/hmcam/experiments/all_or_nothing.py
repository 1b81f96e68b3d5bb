"""Table 9 analogue: a targeted feature-space attack on a recognition system, judged all-or-nothing.

The paper attacks online celebrity recognition with HMCAM sequences of S = 5 samples and counts a
case as a success only if *all* samples are recognised as the target person. Here the recognition
system is a nearest-prototype recogniser on the penultimate features of a trained classifier: each
class is represented by the mean feature of its training images, and an image is recognised as the
class of the nearest prototype (:class:`PrototypeRecogniser`). The attack crafts, on one network's
recogniser, images meant to be recognised as a random other class; success is measured on that
recogniser (white-box) and on another network's (black-box, as the online systems were to the
paper). HMCAM (S samples, all-or-nothing and any-sample) is compared with PGD and M-PGD (one
example each) at the same budget. The claims are judged per (image, target) case
(:mod:`hmcam.experiments.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from hmcam.attacks import ChainAttack
from hmcam.core.batching import fetch
from hmcam.data import load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.setup import AttackScale, Bench, adversarial_examples
from hmcam.experiments.targeted import SETTINGS as TABLE_8
from hmcam.experiments.targeted import random_targets
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.reporting.figures import save_bar_chart
from hmcam.reporting.tables import markdown_table

#: S of the HMCAM sequence (the paper: 5).
SEQUENCE = 5


@dataclass(frozen=True)
class Settings:
    """The experiment at one scale: the budget N (the paper: 100), the cases, the prototypes' images and eps.

    ``pairs`` (image, target) cases are attacked; ``gallery`` training images give the prototypes (their mean
    features per class); ``eps`` is Table 8's radius (:mod:`hmcam.experiments.targeted`).
    """

    budget: int
    pairs: int
    gallery: int
    eps: float


#: The settings per scale.
SETTINGS = {
    "smoke": Settings(budget=10, pairs=16, gallery=64, eps=TABLE_8["smoke"].eps),
    "small": Settings(budget=50, pairs=200, gallery=1000, eps=TABLE_8["small"].eps),
    "paper": Settings(budget=100, pairs=200, gallery=1000, eps=TABLE_8["paper"].eps),
}
#: The bar chart of the success cases.
FIGURE = "all_or_nothing.png"
#: The baselines of the claims, by method.
BASELINES = {"pgd": "PGD", "mpgd": "M-PGD"}
#: The claims of Table 9, declared before any run: one per baseline, judged per (image, target) case.
CLAIMS = {
    claim.name: claim
    for claim in (
        Claim(
            experiment="all-or-nothing",
            name=f"more-than-{method}-black",
            claim=f"HMCAM succeeds in more cases than {label} under the all-or-nothing criterion (black-box)",
            paper="Clarifai 8 of 10 against 3 (CAAD 2018 baseline) and 2 (N Attack)",
            statistic=f"HMCAM (all {SEQUENCE} samples) minus {label} black-box targeted success, points, per "
            "(image, target) case averaged over seeds",
            unit="images",
            direction="greater",
        )
        for method, label in BASELINES.items()
    )
}


#: A job: the method (``pgd``, ``mpgd``, ``hmcam``), crafting its examples on the white-box recogniser.
Job: TypeAlias = str
#: The methods compared, in the table's order.
METHODS = ("pgd", "mpgd", "hmcam")
METHOD_LABELS = {"pgd": "PGD", "mpgd": "M-PGD", "hmcam": f"HMCAM (S = {SEQUENCE})"}


class PrototypeRecogniser(nn.Module):
    """Recognition by the nearest class prototype in a network's penultimate feature space.

    The features are the input of the network's last linear layer, captured by a forward hook; the
    logits are minus the squared distances to the prototypes, so the nearest prototype wins and any
    targeted attack can aim at a class.
    """

    prototypes: Tensor

    def __init__(self, network: nn.Module, prototypes: Tensor) -> None:
        super().__init__()
        self.network = network
        self.head = [module for module in network.modules() if isinstance(module, nn.Linear)][-1]
        self.register_buffer("prototypes", prototypes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate features of ``x`` ([B, D])."""
        captured: list[Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.network(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Minus the squared distance of each image's features to each class prototype ([B, classes])."""
        return -torch.cdist(self.features(x), self.prototypes).pow(2)


def recogniser(network: nn.Module, images: Tensor, labels: Tensor, classes: int) -> PrototypeRecogniser:
    """A :class:`PrototypeRecogniser` whose prototypes are the mean features of ``images`` per class."""
    empty = PrototypeRecogniser(network, torch.zeros(classes, 1, device=images.device))
    with torch.no_grad():
        features = torch.cat([empty.features(chunk) for chunk in torch.split(images, 500)])
    prototypes = torch.stack([features[labels == c].mean(dim=0) for c in range(classes)])
    return PrototypeRecogniser(network, prototypes).eval()


def claim_evidence(outcomes: Mapping[Job, Mapping[str, Tensor]], key: str) -> list[Evidence]:
    """Per baseline, HMCAM's minus its success (points) per case, from ``outcomes[method][key]`` ([seeds, cases])."""
    hmcam = outcomes["hmcam"][key].double()
    evidence = []
    for method, label in BASELINES.items():
        baseline = outcomes[method][key].double()
        differences = 100 * (hmcam - baseline).mean(dim=0)
        ours = (
            f"{float(differences.mean()):+.2f} points per case: {float(hmcam.sum(dim=1).mean()):.1f} against "
            f"{float(baseline.sum(dim=1).mean()):.1f} of {hmcam.shape[1]} cases ({label})"
        )
        evidence.append(CLAIMS[f"more-than-{method}-black"].evidence(differences.numpy(), ours=ours))
    return evidence


def recognisers(setup: Bench) -> tuple[str, str]:
    """The networks of the attacked (white-box) and the other (black-box) recogniser: the first two natural models."""
    return setup.sources[0], setup.sources[1 % len(setup.sources)]


@dataclass(frozen=True)
class Cases:
    """The recognition systems by network and the attacked (image, target) cases."""

    systems: dict[str, PrototypeRecogniser]
    images: Tensor
    targets: Tensor


def cases(context: Context[AttackScale, Settings, Bench]) -> Cases:
    """The two recognisers and the attacked cases.

    The prototypes come from the first ``gallery`` training images; the cases are the first ``pairs`` test
    images, each with a random other class (seed 1) to be recognised as.
    """
    setup, settings = context.bench, context.settings
    train = load_dataset(context.scale.dataset, "train", root=context.options.data_root, limit=settings.gallery)
    train_images, train_labels = (t.to(setup.images.device) for t in fetch(train, range(len(train.labels))))
    classes = int(train_labels.max()) + 1
    systems = {name: recogniser(setup.models[name], train_images, train_labels, classes) for name in recognisers(setup)}
    images, labels = setup.images[: settings.pairs], setup.labels[: settings.pairs]
    return Cases(systems, images, random_targets(labels, classes, seed=1))


def compute_cases(method: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """Per recogniser and seed, the cases where all of the method's examples (``-all``) or any (``-any``) hit.

    Keys ``{network}-all`` and ``{network}-any``, each ``[seeds, cases]``; HMCAM crafts S samples in one
    chain of N / S steps per transition, PGD and M-PGD one example with N steps.
    """
    scale, eps, budget = context.scale, context.settings.eps, context.settings.budget
    white, black = recognisers(context.bench)
    attacked = cases(context)
    images, targets = attacked.images, attacked.targets
    found: dict[str, list[Tensor]] = {f"{system}-{kind}": [] for system in (white, black) for kind in ("all", "any")}
    for seed in scale.seeds:
        if method == "hmcam":
            settings = scale.settings(method, seed, eps=eps, steps=budget // SEQUENCE, samples=SEQUENCE, targeted=True)
            attack = settings.build(attacked.systems[white])
            assert isinstance(attack, ChainAttack)
            sequence = attack.sample(images, targets).samples  # [S, B, ...]
        else:
            settings = scale.settings(method, seed, eps=eps, steps=budget, targeted=True)
            sequence = adversarial_examples(attacked.systems[white], settings, images, targets, scale.batch_size)[None]
        for system in (white, black):
            hit = predict(attacked.systems[system], sequence, sample_dims=1) == targets
            found[f"{system}-all"].append(hit.all(dim=0))
            found[f"{system}-any"].append(hit.any(dim=0))
    return {key: torch.stack(values).cpu() for key, values in found.items()}


def summarize_cases(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """Success cases per method, white-box and black-box, all-or-nothing and any sample; the claims' evidence."""
    scale, settings = context.scale, context.settings
    white, black = recognisers(context.bench)
    pairs, eps = settings.pairs, settings.eps

    def count(method: str, system: str, kind: str) -> float:
        return float(outcomes[method][f"{system}-{kind}"].float().sum(dim=1).mean())

    rows = [
        {
            "method": METHOD_LABELS[method],
            f"white-box ({white}) all-or-nothing": count(method, white, "all"),
            f"black-box ({black}) all-or-nothing": count(method, black, "all"),
            f"black-box ({black}) any sample": count(method, black, "any"),
        }
        for method in METHODS
    ]
    bars = {
        f"white-box ({white}), all": [count(m, white, "all") / pairs for m in METHODS],
        f"black-box ({black}), all": [count(m, black, "all") / pairs for m in METHODS],
        f"black-box ({black}), any": [count(m, black, "any") / pairs for m in METHODS],
    }
    text = "\n".join(
        [
            "## All-or-nothing (Table 9 analogue)",
            "",
            f"{scale.dataset}: nearest-prototype recognisers on the penultimate features of {white} (attacked) and "
            f"{black} (black-box), prototypes from {settings.gallery} training images; {pairs} (image, random target) "
            f"pairs, L-inf eps {eps:.4g}, N = {settings.budget}, seeds {list(scale.seeds)}. Success cases (mean over "
            f"seeds): the target is recognised for every one of HMCAM's {SEQUENCE} samples (all-or-nothing), or for "
            "any. The claims are judged per (image, target) case, black-box, all-or-nothing.",
            "",
            markdown_table(rows, list(rows[0])),
        ]
    )
    return Summary(
        rows=rows,
        columns=list(rows[0]),
        text=text,
        evidence=claim_evidence(outcomes, f"{black}-all"),
        figures={
            FIGURE: lambda path: save_bar_chart(
                path,
                [METHOD_LABELS[method] for method in METHODS],
                bars,
                f"success cases (% of {pairs})",
                f"targeted feature-space attack, eps {eps:.4g}",
            )
        },
        results={"pairs": pairs, "eps": eps},
    )


#: The Table 9 analogue on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="all-or-nothing",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=lambda context: list(METHODS),
    key=lambda method: method,
    compute=compute_cases,
    summarize=summarize_cases,
)
