"""Table 8: targeted white-box attacks (PGD, M-PGD, DAA, HMCAM) with few and many steps on adversarially trained models.

Each image gets a random target class other than its label (seeded). Every attack runs with the
two step counts of the table (10 and 100 at ``small`` and ``paper``) at a fixed radius larger than
the models were trained for (:data:`SETTINGS`; the paper's Table 8 attacks adversarially trained
ImageNet models at 16/255). The calibrated eps does not apply: it is tuned to the natural models.
HMCAM runs S = ``scale.samples`` transitions of steps / S; its success is that of its last
sample, and the share of images where any sample hits is reported beside it. Each claim
(:data:`CLAIMS`: HMCAM against one baseline) pools the step counts into one per-image difference,
judged by the claims engine (:mod:`hmcam.experiments.claims`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor

from hmcam.attacks import ChainAttack
from hmcam.evaluation import predict
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.setup import AttackScale, Bench, adversarial_examples, image_differences
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.reporting.figures import save_bar_chart
from hmcam.reporting.tables import markdown_table


@dataclass(frozen=True)
class Settings:
    """Table 8 at one scale: the radius ``eps`` and the step counts (few, many) every attack runs with."""

    eps: float
    step_counts: tuple[int, ...]


#: At ``smoke`` and ``small`` eps is twice the adversarially trained models' eps; at ``paper`` the paper's 16/255.
SETTINGS = {
    "smoke": Settings(eps=0.2, step_counts=(2, 4)),
    "small": Settings(eps=0.2, step_counts=(10, 100)),
    "paper": Settings(eps=16 / 255, step_counts=(10, 100)),
}
ATTACKS = ("pgd", "mpgd", "daa", "hmcam")
LABELS = {"pgd": "PGD", "mpgd": "M-PGD", "daa": "DAA", "hmcam": "HMCAM"}
#: The bar chart of the success with few and many steps.
FIGURE = "targeted.png"
#: Table 8 (ImageNet, eps 16/255): per attack, (10-step, 100-step) success in % on ResNet152_A, ResNet152_AD and
#: ResNeXt101_AD.
PAPER_TABLE_8 = {
    "pgd": ((5.48, 31.04), (4.93, 27.65), (5.00, 31.56)),
    "mpgd": ((4.01, 24.63), (3.51, 22.07), (3.44, 23.78)),
    "daa": ((4.23, 27.31), (4.17, 24.69), (4.55, 28.07)),
    "hmcam": ((17.29, 35.07), (14.69, 31.52), (17.54, 36.36)),
}
#: The baselines targeted HMCAM is compared with, one claim each.
BASELINES = ("pgd", "mpgd", "daa")
#: Hits per (victim, attack, steps): ``[seeds, images]``; a negative step count holds HMCAM's "any sample" hits.
Hits = dict[tuple[str, str, int], Tensor]


def paper_gap(baseline: str) -> float:
    """The paper's HMCAM minus ``baseline`` targeted success, points, mean over its three models and two step counts."""
    gaps = [
        ours - theirs
        for model, other in zip(PAPER_TABLE_8["hmcam"], PAPER_TABLE_8[baseline], strict=True)
        for ours, theirs in zip(model, other, strict=True)
    ]
    return statistics.fmean(gaps)


#: The claims of Table 8, declared before any run: one per baseline, pooled over the step counts.
CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            experiment="targeted",
            name=f"hmcam-vs-{baseline}",
            claim=f"Targeted HMCAM beats {LABELS[baseline]} on adversarially trained models",
            paper=f"{paper_gap(baseline):+.1f} points (mean over 10 and 100 steps and the three models)",
            statistic=f"HMCAM (last sample) minus {LABELS[baseline]} targeted success, points, per image averaged "
            "over the step counts the run uses (pooled: few and many steps), the attacked models and seeds",
            unit="images",
            direction="greater",
        )
        for baseline in BASELINES
    )
}


def random_targets(labels: Tensor, classes: int, seed: int) -> Tensor:
    """A target class per image, uniform over the classes other than its label, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % classes


def claim_evidence(baseline: str, hits: Hits, victims: list[str], counts: tuple[int, ...]) -> Evidence:
    """HMCAM minus ``baseline`` per image, pooled over every victim and step count (every image counts)."""
    pairs = [
        (
            hits[(victim, "hmcam", steps)],
            hits[(victim, baseline, steps)],
            torch.ones(hits[(victim, "hmcam", steps)].shape[-1], dtype=torch.bool),
        )
        for victim in victims
        for steps in counts
    ]
    values = image_differences(pairs)
    steps = " and ".join(map(str, counts))
    ours = f"{float(values.mean()):+.1f} points, mean of {values.numel()} images over {steps} steps on "
    return CLAIMS[f"hmcam-vs-{baseline}"].evidence(values.numpy(), ours=ours + ", ".join(victims))


#: A job: the attacked model, the attack and its step count.
Job: TypeAlias = tuple[str, str, int]


def victims(setup: Bench) -> list[str]:
    """The attacked models: the adversarially trained ones (the first model where the zoo has none)."""
    return setup.adversarial or setup.targets[:1]


def image_targets(setup: Bench) -> Tensor:
    """Each attacked image's random target class (seed 0), over the attacked models' classes."""
    with torch.no_grad():
        classes = int(setup.models[victims(setup)[0]](setup.images[:1]).shape[1])
    return random_targets(setup.labels, classes, seed=0)


def targeted_jobs(context: Context[AttackScale, Settings, Bench]) -> list[Job]:
    """Every attack with every step count on every attacked model."""
    counts = context.settings.step_counts
    return [(victim, attack, steps) for victim in victims(context.bench) for attack in ATTACKS for steps in counts]


def compute_hits(job: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """Which images reach their target per seed: the last example (``last``) and any of HMCAM's samples (``any``).

    Both are ``[seeds, images]``; for the one-example attacks they are the same.
    """
    victim, attack, steps = job
    scale, setup, eps = context.scale, context.bench, context.settings.eps
    model, targets = setup.models[victim], image_targets(setup)
    last, anywhere = [], []
    for seed in scale.seeds:
        if attack == "hmcam":
            settings = scale.settings(attack, seed, eps=eps, steps=max(1, steps // scale.samples), targeted=True)
            chain = settings.build(model)
            assert isinstance(chain, ChainAttack)
            sampled = [
                chain.sample(setup.images[i : i + scale.batch_size], targets[i : i + scale.batch_size]).samples
                for i in range(0, len(targets), scale.batch_size)
            ]
            predicted = predict(model, torch.cat(sampled, dim=1), sample_dims=1) == targets
            last.append(predicted[-1])
            anywhere.append(predicted.any(dim=0))
        else:
            settings = scale.settings(attack, seed, eps=eps, steps=steps, targeted=True)
            crafted = adversarial_examples(model, settings, setup.images, targets, scale.batch_size)
            last.append(predict(model, crafted) == targets)
            anywhere.append(last[-1])
    return {"last": torch.stack(last).cpu(), "any": torch.stack(anywhere).cpu()}


def summarize_targeted(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """Targeted success per attack, attacked model and step count, the bar chart and the claims' evidence."""
    scale, eps, counts = context.scale, context.settings.eps, context.settings.step_counts
    attacked = victims(context.bench)
    hits: Hits = {}
    for (victim, attack, steps), found in outcomes.items():
        hits[(victim, attack, steps)] = found["last"].bool()
        hits[(victim, attack, -steps)] = found["any"].bool()

    def rate(victim: str, attack: str, steps: int) -> float:
        return 100 * float(hits[(victim, attack, steps)].float().mean())

    rows = [
        {
            "attack": LABELS[attack],
            **{
                f"{victim} {steps} steps": round(rate(victim, attack, steps), 2)
                for victim in attacked
                for steps in counts
            },
            **(
                {
                    f"{victim} {steps} steps, any sample": round(rate(victim, attack, -steps), 2)
                    for victim in attacked
                    for steps in counts
                }
                if attack == "hmcam"
                else {}
            ),
        }
        for attack in ATTACKS
    ]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    bars = {
        f"{steps} steps": [statistics.fmean(rate(v, attack, steps) / 100 for v in attacked) for attack in ATTACKS]
        for steps in counts
    }
    title = f"targeted, eps {eps:.4g}, mean over {', '.join(attacked)}"
    text = "\n".join(
        [
            "## Targeted attacks (Table 8)",
            "",
            f"{scale.dataset}, white-box on {', '.join(attacked)}, L-inf eps {eps:.4g}, random targets, "
            f"{scale.images} test images, seeds {list(scale.seeds)}; HMCAM: S = {scale.samples}. Success (%) = the "
            "prediction is the target.",
            "",
            markdown_table(rows, columns),
            "Each claim is tested on HMCAM's (last sample) minus the baseline's success per image in points, "
            f"averaged over the step counts {list(counts)}, the attacked models and seeds; Holm-adjusted across the "
            "claims of this run.",
        ]
    )
    return Summary(
        rows=rows,
        columns=columns,
        text=text,
        evidence=[claim_evidence(baseline, hits, attacked, counts) for baseline in BASELINES],
        figures={
            FIGURE: lambda path: save_bar_chart(
                path, [LABELS[attack] for attack in ATTACKS], bars, "targeted success (%)", title
            )
        },
        results={"eps": eps, "victims": attacked},
    )


#: Table 8 on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="targeted",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=targeted_jobs,
    key=lambda job: "-".join(map(str, job)),
    compute=compute_hits,
    summarize=summarize_targeted,
)
