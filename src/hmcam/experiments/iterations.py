"""Fig. 2: success of M-PGD and HMCAM over the first iterations, white-box and black-box.

For each N in 1 .. ``max_steps`` every source model crafts examples with M-PGD (N steps) and HMCAM
(one transition of N accumulated-momentum steps and its Metropolis-Hastings test: the first N
iterations of the chain, as the figure clips the start of a run), and each is scored on every
target. PGD with ten times the largest N is the reference of the paper's second claim ("HMCAM with
N = 10 beats PGD with N = 100 black-box"). The claims are judged per image
(:mod:`hmcam.experiments.claims`): "at every N" is one statistic, the difference averaged over N.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor

from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.setup import (
    ATTACK_LABELS,
    AttackScale,
    Bench,
    hits_on_targets,
    image_differences,
)
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.reporting.figures import save_curve_panels
from hmcam.reporting.tables import markdown_table

#: The success curves.
FIGURE = "iterations.png"
#: The claims of Fig. 2, declared before any run; "at every N" is one statistic pooled over N.
CLAIMS = {
    claim.name: claim
    for claim in (
        *(
            Claim(
                experiment="iterations",
                name=f"hmcam-above-mpgd-{kind}",
                claim=f"HMCAM is above M-PGD at every N ({kind}-box)",
                paper="at all N = 1 .. 10 (Fig. 2)",
                statistic=f"HMCAM minus M-PGD {kind}-box success, points, per image averaged over N = 1 .. max, "
                f"{'source = target' if kind == 'white' else 'natural source/target'} pairs and seeds",
                unit="images",
                direction="greater",
            )
            for kind in ("white", "black")
        ),
        Claim(
            experiment="iterations",
            name="hmcam-beats-long-pgd-black",
            claim="HMCAM with N = max beats PGD with N = 10 max (black-box)",
            paper="HMCAM (N = 10) above PGD (N = 100) (Fig. 2)",
            statistic="HMCAM (N = max) minus PGD (N = 10 max) black-box success, points, per image averaged over "
            "natural source/target pairs and seeds",
            unit="images",
            direction="greater",
        ),
    )
}


Hits: TypeAlias = dict[tuple[str, str, int], Tensor]
Pair: TypeAlias = tuple[Tensor, Tensor, Tensor]


def _rates(setup: Bench, hits: Tensor) -> Tensor:
    """Success per target ([targets]) from hits ``[seeds, targets, images]``, among each target's correct images."""
    return torch.stack([hits[:, j, setup.correct[t]].float().mean() for j, t in enumerate(setup.targets)])


def box_pairs(setup: Bench, kind: str) -> list[tuple[str, int, str]]:
    """(source, target index, target): white-box (source = target) or natural black-box pairs."""
    return [
        (source, j, target)
        for source in setup.sources
        for j, target in enumerate(setup.targets)
        if (source == target) == (kind == "white") and target not in setup.adversarial
    ]


def per_image_evidence(claim: Claim, pairs: Sequence[Pair], ours: str) -> Evidence:
    """The claim's per-image evidence (points) from hits pairs; untestable when no pair counts an image."""
    differences = image_differences(pairs) if pairs else torch.empty(0)
    if differences.numel() == 0:
        return claim.evidence(ours="no image counted", untestable="no source/target pair of this kind counts an image")
    return claim.evidence(differences.numpy(), ours=f"{float(differences.mean()):+.2f} points per image {ours}")


def claim_evidence(setup: Bench, hits: Hits, steps: list[int]) -> list[Evidence]:
    """Evidence of the three claims: HMCAM minus M-PGD pooled over N (white, black), HMCAM minus long PGD."""
    largest = steps[-1]
    evidence = []
    for kind in ("white", "black"):
        pairs = [
            (hits[(source, "hmcam", n)][:, j], hits[(source, "mpgd", n)][:, j], setup.correct[target])
            for n in steps
            for source, j, target in box_pairs(setup, kind)
        ]
        ours = f"(HMCAM minus M-PGD, mean over N = 1 .. {largest}, {kind}-box pairs and seeds)"
        evidence.append(per_image_evidence(CLAIMS[f"hmcam-above-mpgd-{kind}"], pairs, ours))
    long_pairs = [
        (hits[(source, "hmcam", largest)][:, j], hits[(source, "pgd", 10 * largest)][:, j], setup.correct[target])
        for source, j, target in box_pairs(setup, "black")
    ]
    ours = f"(HMCAM N = {largest} minus PGD N = {10 * largest}, black-box pairs and seeds)"
    evidence.append(per_image_evidence(CLAIMS["hmcam-beats-long-pgd-black"], long_pairs, ours))
    return evidence


@dataclass(frozen=True)
class Settings:
    """Fig. 2 at one scale: the curve runs N = 1 .. ``max_steps`` (the paper: 10)."""

    max_steps: int


#: The settings per scale.
SETTINGS = {"smoke": Settings(max_steps=3), "small": Settings(max_steps=10), "paper": Settings(max_steps=10)}
#: A job: the source model, the attack and its N.
Job: TypeAlias = tuple[str, str, int]


def _steps(context: Context[AttackScale, Settings, Bench]) -> list[int]:
    return list(range(1, context.settings.max_steps + 1))


def iteration_jobs(context: Context[AttackScale, Settings, Bench]) -> list[Job]:
    """M-PGD and HMCAM at every N from every source, and PGD at ten times the largest N."""
    sources, largest = context.bench.sources, context.settings.max_steps
    runs = [(source, attack, n) for source in sources for attack in ("mpgd", "hmcam") for n in _steps(context)]
    return runs + [(source, "pgd", 10 * largest) for source in sources]


def compute_hits(job: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """Which images the job's examples fool on each target, per seed (``hits``: [seeds, targets, images])."""
    source, attack, n = job
    scale, setup = context.scale, context.bench
    chosen = [scale.settings(attack, seed, steps=n, samples=1) for seed in scale.seeds]
    found = hits_on_targets(setup.models, source, chosen, setup.targets, setup.images, setup.labels, scale.batch_size)
    return {"hits": found}


def summarize_iterations(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """Success per N, white- and black-box, the curves and the claims' evidence."""
    scale, setup, steps = context.scale, context.bench, _steps(context)
    largest = steps[-1]
    hits: Hits = {job: outcome["hits"].bool() for job, outcome in outcomes.items()}
    rates = {key: _rates(setup, found) for key, found in hits.items()}

    def mean(attack: str, n: int, kind: str) -> float:
        return 100 * statistics.fmean(float(rates[(source, attack, n)][j]) for source, j, _ in box_pairs(setup, kind))

    rows = [
        {
            "attack": ATTACK_LABELS[attack],
            "N": n,
            "white_box": round(mean(attack, n, "white"), 2),
            "black_box": round(mean(attack, n, "black"), 2),
        }
        for attack in ("mpgd", "hmcam")
        for n in steps
    ]
    panels = {
        ATTACK_LABELS[attack]: {
            f"{source} -> {target}": ([100 * float(rates[(source, attack, n)][j]) for n in steps], source == target)
            for source in setup.sources
            for j, target in enumerate(setup.targets)
        }
        for attack in ("mpgd", "hmcam")
    }
    title = f"solid: white-box, dashed: black-box; eps {scale.eps:.4g}, {scale.images} images"
    long_pgd = mean("pgd", 10 * largest, "black")
    text = "\n".join(
        [
            "## Iterations (Fig. 2)",
            "",
            f"{scale.dataset}, L-inf eps {scale.eps:.4g}, N = 1 .. {largest}, {scale.images} test images, seeds "
            f"{list(scale.seeds)}; HMCAM at N is one transition of N steps. Mean success (%) over source and "
            f"natural target pairs; PGD with N = {10 * largest}: {long_pgd:.2f}% black-box. The claims are judged "
            "per image (differences averaged over N, pairs and seeds; the adversarially trained targets are not "
            "counted).",
            "",
            markdown_table(rows, ["attack", "N", "white_box", "black_box"]),
        ]
    )
    return Summary(
        rows=rows,
        columns=["attack", "N", "white_box", "black_box"],
        text=text,
        evidence=claim_evidence(setup, hits, steps),
        figures={
            FIGURE: lambda path: save_curve_panels(
                path, steps, panels, xlabel="iterations N", ylabel="success rate (%)", title=title
            )
        },
        results={"steps": steps, "long_pgd_black_box": long_pgd},
    )


#: Fig. 2 on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="iterations",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=iteration_jobs,
    key=lambda job: "-".join(map(str, job)),
    compute=compute_hits,
    summarize=summarize_iterations,
)
