"""Table 3: attack an equal-weight ensemble of all models but one; success on the ensemble and the hold-out.

Each model of the zoo is held out in turn; the others form an :class:`~hmcam.models.Ensemble`
(equal weights, averaged logits). Every attack gets the budget N and crafts on the ensemble:
"ensemble" is its white-box success on the ensemble itself, "hold-out" its black-box success on the
model left out. The claims (:data:`CLAIMS`) are tested on per-image differences by the claims
engine (:mod:`hmcam.experiments.claims`); ``intervals.csv`` gives each hold-out's interval, descriptive only.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor

from hmcam.evaluation import predict
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.inference import paired_interval
from hmcam.experiments.setup import (
    ATTACK_LABELS,
    INTERVALS_TABLE,
    TABLE_ATTACKS,
    AttackScale,
    Bench,
    adversarial_examples,
    image_differences,
)
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.models import Ensemble
from hmcam.reporting.figures import save_bar_chart
from hmcam.reporting.tables import markdown_table

#: Table 3 of the paper (CIFAR-10, eps 2/255): per held-out model and attack, (ensemble, hold-out) success in %.
PAPER_TABLE_3 = {
    "fgsm": ((28.27, 30.74), (31.08, 31.43), (29.47, 25.34), (29.64, 27.70), (28.45, 7.53)),
    "pgd": ((90.97, 80.73), (94.79, 50.30), (91.05, 80.14), (92.13, 82.11), (92.11, 13.88)),
    "mpgd": ((92.13, 81.92), (96.47, 52.48), (92.60, 80.83), (93.60, 83.85), (92.48, 21.23)),
    "aifgsm": ((92.62, 83.12), (96.06, 56.54), (92.94, 82.29), (93.47, 84.46), (93.04, 28.31)),
    "hmcam": ((92.81, 83.76), (96.29, 57.43), (92.99, 83.07), (93.88, 85.38), (94.18, 30.11)),
}
#: The bar chart of the success on the ensembles and hold-outs.
FIGURE = "ensemble.png"
#: Hits per (held-out model, attack): ``[seeds, 2, images]``, on the ensemble (0) and on the hold-out (1).
Hits = dict[tuple[str, str], Tensor]


def _paper_gap(attack: str, baseline: str, adversarial: bool) -> float:
    """The paper's hold-out gap of ``attack`` over ``baseline``: the adversarial hold-out's or the natural mean."""
    if adversarial:
        return PAPER_TABLE_3[attack][4][1] - PAPER_TABLE_3[baseline][4][1]
    return statistics.fmean(
        a[1] - b[1] for a, b in zip(PAPER_TABLE_3[attack][:4], PAPER_TABLE_3[baseline][:4], strict=True)
    )


_NATURAL = "per image averaged over the natural hold-outs that classify it correctly and over seeds"
#: The claims of Table 3, declared before any run.
CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        *(
            Claim(
                experiment="ensemble",
                name=f"hmcam-vs-{baseline}-holdout",
                claim=f"HMCAM transfers from the ensemble to the hold-out better than {ATTACK_LABELS[baseline]}",
                paper=f"{_paper_gap('hmcam', baseline, False):+.1f} points (natural hold-outs)",
                statistic=f"HMCAM minus {ATTACK_LABELS[baseline]} hold-out success, points, {_NATURAL}",
                unit="images",
                direction="greater",
            )
            for baseline in ("pgd", "mpgd")
        ),
        Claim(
            experiment="ensemble",
            name="hmcam-vs-mpgd-most-on-adversarial",
            claim="HMCAM beats M-PGD most on the adversarially trained hold-out",
            paper=f"{_paper_gap('hmcam', 'mpgd', True) - _paper_gap('hmcam', 'mpgd', False):+.1f} points "
            f"(ResNet32_A {_paper_gap('hmcam', 'mpgd', True):+.1f} against natural "
            f"{_paper_gap('hmcam', 'mpgd', False):+.1f})",
            statistic="per image, HMCAM minus M-PGD success on the adversarially trained hold-out(s) minus the mean "
            "of HMCAM minus M-PGD over the natural hold-outs, points, seeds averaged; over the images both kinds of "
            "hold-out count",
            unit="images",
            direction="greater",
        ),
    )
}


@dataclass(frozen=True)
class Settings:
    """Table 3 at one scale: nothing beyond the attack scale (its budget, images, seeds and zoo)."""


#: The settings per scale.
SETTINGS = {"smoke": Settings(), "small": Settings(), "paper": Settings()}
#: A job: the held-out model and the attack crafting on the ensemble of the others.
Job: TypeAlias = tuple[str, str]


def ensemble_without(setup: Bench, held: str) -> Ensemble:
    """The equal-weight logit ensemble of every model of the zoo but ``held``, in eval mode."""
    return Ensemble([setup.models[label] for label in setup.targets if label != held]).eval()


def ensemble_jobs(context: Context[AttackScale, Settings, Bench]) -> list[Job]:
    """Every attack of the table on the ensemble without each model of the zoo in turn."""
    return [(held, attack) for held in context.bench.targets for attack in TABLE_ATTACKS]


def compute_hits(job: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """Which images the job's examples fool per seed, on the ensemble (0) and the hold-out (1): [seeds, 2, images]."""
    held, attack = job
    scale, setup = context.scale, context.bench
    ensemble = ensemble_without(setup, held)
    per_seed = []
    for seed in scale.seeds:
        crafted = adversarial_examples(
            ensemble, scale.settings(attack, seed), setup.images, setup.labels, scale.batch_size
        )
        fooled = [predict(model, crafted) != setup.labels for model in (ensemble, setup.models[held])]
        per_seed.append(torch.stack(fooled))
    return {"hits": torch.stack(per_seed).cpu()}


def holdout_pairs(
    hits: Hits, setup: Bench, baseline: str, helds: list[str], within: Tensor | None = None
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """HMCAM's and ``baseline``'s hold-out hits on each of ``helds``, counting the images it classifies correctly."""
    return [
        (
            hits[(held, "hmcam")][:, 1],
            hits[(held, baseline)][:, 1],
            setup.correct[held] if within is None else setup.correct[held] & within,
        )
        for held in helds
    ]


def holdout_evidence(hits: Hits, setup: Bench, baseline: str) -> Evidence:
    """HMCAM minus ``baseline`` per image over the natural hold-outs."""
    claim = CLAIMS[f"hmcam-vs-{baseline}-holdout"]
    natural = [held for held in setup.targets if held not in setup.adversarial]
    if not natural:
        return claim.evidence(ours="-", untestable="the zoo of this scale has no natural hold-out")
    values = image_differences(holdout_pairs(hits, setup, baseline, natural))
    if values.numel() == 0:
        return claim.evidence(ours="-", untestable="no natural hold-out classifies any attacked image correctly")
    ours = f"{float(values.mean()):+.1f} points, mean of {values.numel()} images over {len(natural)} natural hold-outs"
    return claim.evidence(values.numpy(), ours=ours)


def adversarial_evidence(hits: Hits, setup: Bench) -> Evidence:
    """HMCAM minus M-PGD on the adversarial hold-out(s) minus the same on the natural ones, per image."""
    claim = CLAIMS["hmcam-vs-mpgd-most-on-adversarial"]
    natural = [held for held in setup.targets if held not in setup.adversarial]
    if not setup.adversarial or not natural:
        kind = "adversarially trained" if not setup.adversarial else "natural"
        return claim.evidence(ours="-", untestable=f"the zoo of this scale has no {kind} hold-out")
    # Only images both sides count, so the two per-image differences line up.
    both = torch.stack([setup.correct[h] for h in setup.adversarial]).any(0)
    both &= torch.stack([setup.correct[h] for h in natural]).any(0)
    if not bool(both.any()):
        return claim.evidence(ours="-", untestable="no image is classified correctly by both kinds of hold-out")
    robust = image_differences(holdout_pairs(hits, setup, "mpgd", setup.adversarial, both))
    plain = image_differences(holdout_pairs(hits, setup, "mpgd", natural, both))
    values = robust - plain
    ours = (
        f"{float(values.mean()):+.1f} points over {values.numel()} images "
        f"(adversarial {float(robust.mean()):+.1f} against natural {float(plain.mean()):+.1f})"
    )
    return claim.evidence(values.numpy(), ours=ours)


def holdout_intervals(hits: Hits, setup: Bench) -> list[dict[str, Any]]:
    """HMCAM minus PGD and M-PGD on each hold-out, 95% BCa interval in points (descriptive only)."""
    intervals = []
    for baseline in ("pgd", "mpgd"):
        for held in setup.targets:
            if not bool(setup.correct[held].any()):
                continue  # the hold-out classifies no image correctly: nothing to count
            values = image_differences(holdout_pairs(hits, setup, baseline, [held]))
            interval = paired_interval(values.numpy())
            intervals.append(
                {
                    "baseline": baseline,
                    "hold_out": held,
                    "adversarial": held in setup.adversarial,
                    "difference_points": interval["estimate"],
                    "ci_low_points": interval["ci_low"],
                    "ci_high_points": interval["ci_high"],
                    "images": values.numel(),
                }
            )
    return intervals


def summarize_ensemble(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """Success on each ensemble and its hold-out, the bar chart, the per-hold-out intervals and the claims' evidence."""
    scale, setup = context.scale, context.bench
    hits: Hits = {job: outcome["hits"].bool() for job, outcome in outcomes.items()}
    ensemble_correct = {
        held: (predict(ensemble_without(setup, held), setup.images) == setup.labels).cpu() for held in setup.targets
    }

    def rate(held: str, attack: str, which: int) -> float:
        eligible = ensemble_correct[held] if which == 0 else setup.correct[held]
        return float(hits[(held, attack)][:, which, eligible].float().mean())

    rows = [
        {
            "attack": ATTACK_LABELS[attack],
            **{
                f"-{held} {part}": round(100 * rate(held, attack, which), 2)
                for held in setup.targets
                for which, part in ((0, "ensemble"), (1, "hold-out"))
            },
        }
        for attack in TABLE_ATTACKS
    ]
    intervals = holdout_intervals(hits, setup)
    natural = [held for held in setup.targets if held not in setup.adversarial]
    series = {
        "on the ensemble": [statistics.fmean(rate(h, a, 0) for h in setup.targets) for a in TABLE_ATTACKS],
        "natural hold-outs": [statistics.fmean(rate(h, a, 1) for h in natural) for a in TABLE_ATTACKS],
    }
    if setup.adversarial:
        series["adversarially trained hold-out"] = [
            statistics.fmean(rate(h, a, 1) for h in setup.adversarial) for a in TABLE_ATTACKS
        ]
    title = f"ensemble of all but one model, eps {scale.eps:.4g}: mean over the hold-outs"
    text = "\n".join(
        [
            "## Ensemble (Table 3)",
            "",
            f"{scale.dataset}, L-inf eps {scale.eps:.4g}, N = {scale.budget}, {scale.images} test images, seeds "
            f"{list(scale.seeds)}; each column pair holds one model out of an equal-weight logit ensemble of the "
            "others. Success (%) among the images the attacked model classifies correctly.",
            "",
            markdown_table(rows, list(rows[0])),
            "Each claim is tested on the per-image difference in points (seeds averaged), Holm-adjusted across "
            "the claims of this run; the transfer claims pool the natural hold-outs only.",
            "",
            f"HMCAM minus PGD and M-PGD on each hold-out, 95% BCa bootstrap interval (descriptive): "
            f"`{INTERVALS_TABLE}`.",
        ]
    )
    return Summary(
        rows=rows,
        columns=list(rows[0]),
        text=text,
        evidence=[
            *(holdout_evidence(hits, setup, baseline) for baseline in ("pgd", "mpgd")),
            adversarial_evidence(hits, setup),
        ],
        figures={
            FIGURE: lambda path: save_bar_chart(
                path, [ATTACK_LABELS[a] for a in TABLE_ATTACKS], series, "success rate (%)", title
            )
        },
        tables={INTERVALS_TABLE: (intervals, list(intervals[0]))} if intervals else {},
        results={"intervals": intervals},
    )


#: Table 3 on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="ensemble",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=ensemble_jobs,
    key=lambda job: "without-{}-{}".format(*job),
    compute=compute_hits,
    summarize=summarize_ensemble,
)
