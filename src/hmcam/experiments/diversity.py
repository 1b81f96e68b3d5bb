"""Fig. 1: many adversarial examples of one image from HMCAM, from PGD's restarts and from MI-FGSM's iterates.

K samples of each of a few correctly classified test images per generator (HMCAM with and without
momentum refresh, PGD's restarts, MI-FGSM's iterates): their diversity, white- and black-box
success, HMCAM's MCMC diagnostics and a t-SNE map. The generators and the measures:
docs/experiments.md, "Diversity of adversarial examples (Fig. 1)". The claims are judged per image
(:mod:`hmcam.experiments.claims`): each image's K samples give one value per generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks import HMCAM, MIFGSM, PGD
from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import StepRule
from hmcam.evaluation import predict
from hmcam.evaluation.sampling import (
    ChainDiagnostics,
    diagnose,
    distinct_fraction,
    distinct_labels,
    label_entropy,
    mean_pairwise_distance,
)
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.setup import AttackScale, Bench
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.reporting.figures import save_embedding
from hmcam.reporting.tables import markdown_table

#: The random initial momentum of the refreshed chains, in units of the mean |gradient|.
REFRESH = 1.0
#: The generators of many examples of one image, and the cache file stem of each.
GENERATOR_KEYS = {
    "HMCAM": "hmcam",
    "HMCAM + refresh": "hmcam-refresh",
    "PGD restarts": "pgd-restarts",
    "MI-FGSM iterates": "mifgsm-iterates",
}
#: The generators, in the table's order.
GENERATORS = tuple(GENERATOR_KEYS)
#: The per-image measures of a generator's samples, in the order of the table (black-box only with other models).
MEASURES = (
    "distinct_labels",
    "label_entropy_bits",
    "mean_pairwise_l2",
    "distinct_samples",
    "white_box_success",
    "black_box_success",
)
#: HMCAM's chain diagnostics in the table (:meth:`~hmcam.evaluation.sampling.ChainDiagnostics.summary`).
DIAGNOSTICS = ("acceptance_rate", "loss_ess_median", "loss_rhat_median")
#: Per-image measures of one generator's samples, by name ([B] each).
Measures: TypeAlias = dict[str, Tensor]
#: The t-SNE map.
FIGURE = "diversity.png"
#: Non-inferiority margin of "refresh keeps the black-box strength", points: the margin the claim always had
#: (within 2 points), small against the tens of points between the attacks' black-box success.
STRENGTH_MARGIN = 2.0
#: The baselines HMCAM's diversity is compared with, by claim name.
BASELINES = {"pgd": "PGD restarts", "mifgsm": "MI-FGSM iterates"}
#: The claims of Fig. 1 (and two beyond the paper), declared before any run; each value is one image's K samples.
CLAIMS = {
    claim.name: claim
    for claim in (
        *(
            Claim(
                experiment="diversity",
                name=f"more-diverse-than-{key}",
                claim=f"HMCAM's samples are more diverse than {baseline} (Fig. 1)",
                paper="wider t-SNE spread",
                statistic=f"HMCAM minus {baseline} mean pairwise L2 distance between an image's K samples, per image",
                unit="images",
                direction="greater",
            )
            for key, baseline in BASELINES.items()
        ),
        Claim(
            experiment="diversity",
            name="refresh-makes-a-sample",
            claim="Momentum refresh makes HMCAM's chains a sample (beyond the paper)",
            paper="not measured",
            statistic="HMCAM + refresh minus HMCAM share of an image's K samples distinct from every earlier one, "
            "points, per image",
            unit="images",
            direction="greater",
        ),
        Claim(
            experiment="diversity",
            name="refresh-keeps-black-box",
            claim="The randomness of the refresh costs no black-box strength (beyond the paper)",
            paper="not measured",
            statistic="HMCAM + refresh minus HMCAM black-box success, points, per image averaged over its K samples "
            "and the other natural models",
            unit="images",
            direction="noninferior",
            margin=STRENGTH_MARGIN,
        ),
    )
}


class _Iterates(StepRule):
    """A step rule that keeps every iterate it produces."""

    def __init__(self, rule: StepRule, kept: list[Tensor]) -> None:
        self.rule = rule
        self.kept = kept

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        moved = self.rule.step(ball, point, grad, t)
        self.kept.append(ball.finish(moved))
        return moved


class _RecordedMIFGSM(MIFGSM):
    """MI-FGSM that keeps its iterates in ``iterates``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iterates: list[Tensor] = []

    @override
    def rule(self, ball: Ball) -> StepRule:
        return _Iterates(super().rule(ball), self.iterates)


def generate(
    name: str, model: nn.Module, scale: AttackScale, chains: int, transitions: int, images: Tensor, labels: Tensor
) -> tuple[Tensor, ChainDiagnostics | None]:
    """The generator ``name``'s samples ``[K, B, ...]`` of every image; for the HMCAM chains, their diagnostics.

    ``name`` is one of :data:`GENERATORS`; a ValueError names another.
    """
    count = chains * transitions
    if name in ("HMCAM", "HMCAM + refresh"):
        refresh = REFRESH if name == "HMCAM + refresh" else 0.0
        steps = scale.budget // scale.samples
        attack = HMCAM(
            model, scale.eps, steps=steps, samples=transitions, chains=chains, momentum_refresh=refresh, seed=0
        )
        result = attack.sample(images, labels)
        return result.samples.transpose(0, 1).flatten(0, 1), diagnose(result)  # [C, S, B, ...] chain after chain
    if name == "PGD restarts":
        tiled = images.repeat(count, *([1] * (images.dim() - 1)))
        restarts = PGD(model, scale.eps, steps=scale.budget, seed=0)(tiled, labels.repeat(count))
        return restarts.reshape(count, *images.shape), None
    if name != "MI-FGSM iterates":
        raise ValueError(f"unknown generator {name!r}; expected one of {GENERATORS}")
    recorded = _RecordedMIFGSM(model, scale.eps, steps=count)
    recorded(images, labels)
    return torch.stack(recorded.iterates), None


def _embedding(points: Tensor) -> Tensor:
    """A 2-D t-SNE embedding of ``points`` ([P, D]) with scikit-learn, seeded."""
    # Deferred: scikit-learn's manifold module is a heavy import that only this figure needs.
    from sklearn.manifold import TSNE

    perplexity = max(2.0, min(30.0, (points.shape[0] - 1) / 3))
    embedding = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(points.double().numpy())
    return torch.from_numpy(embedding)


def per_image(models: dict[str, nn.Module], source: str, others: list[str], drawn: Tensor, labels: Tensor) -> Measures:
    """Per image ([B]) of ``drawn`` ([K, B, ...]): diversity, white- and black-box success (black: if others)."""
    predictions = predict(models[source], drawn, sample_dims=1)
    measures = {
        "distinct_labels": distinct_labels(predictions).double().cpu(),
        "label_entropy_bits": label_entropy(predictions).double().cpu(),
        "mean_pairwise_l2": mean_pairwise_distance(drawn).double().cpu(),
        "distinct_samples": distinct_fraction(drawn).double().cpu(),
        "white_box_success": (predictions != labels).double().mean(dim=0).cpu(),
    }
    if others:
        fooled = [(predict(models[other], drawn, sample_dims=1) != labels).double().mean(dim=0) for other in others]
        measures["black_box_success"] = torch.stack(fooled).mean(dim=0).cpu()
    return measures


def _paired(name: str, first: Tensor, second: Tensor, factor: float, unit: str) -> Evidence:
    """The claim's evidence from two per-image measures: their difference per image, times ``factor``."""
    differences = factor * (first - second)
    ours = f"{float(differences.mean()):+.3g} {unit} per image ({factor * float(first.mean()):.3g} vs "
    return CLAIMS[name].evidence(differences.numpy(), ours=f"{ours}{factor * float(second.mean()):.3g})")


def claim_evidence(measures: dict[str, Measures]) -> list[Evidence]:
    """Evidence of the claims, one value per image: diversity against each baseline, refresh against none."""
    hmcam, refreshed = measures["HMCAM"], measures["HMCAM + refresh"]
    evidence = [
        _paired(f"more-diverse-than-{key}", hmcam["mean_pairwise_l2"], measures[b]["mean_pairwise_l2"], 1, "L2")
        for key, b in BASELINES.items()
    ]
    distinct = (refreshed["distinct_samples"], hmcam["distinct_samples"])
    evidence.append(_paired("refresh-makes-a-sample", *distinct, 100, "points"))
    if "black_box_success" in hmcam:
        strength = (refreshed["black_box_success"], hmcam["black_box_success"])
        evidence.append(_paired("refresh-keeps-black-box", *strength, 100, "points"))
    else:
        reason = "the scale's zoo has no other natural model to measure black-box success on"
        evidence.append(CLAIMS["refresh-keeps-black-box"].evidence(ours="no black-box model", untestable=reason))
    return evidence


@dataclass(frozen=True)
class Settings:
    """Fig. 1 at one scale: ``images`` attacked images, HMCAM's ``chains`` C and ``transitions`` S.

    Every generator gives K = C S samples per image. S >= 8 gives split chains of 4 draws at least; shorter ones
    leave ESS at its upper bound, C S log10(C S).
    """

    images: int
    chains: int
    transitions: int


#: The settings per scale.
SETTINGS = {
    "smoke": Settings(images=3, chains=2, transitions=4),
    "small": Settings(images=20, chains=5, transitions=10),
    "paper": Settings(images=20, chains=50, transitions=10),
}
#: A job: one generator (:data:`GENERATORS`), its samples of every image.
Job: TypeAlias = str


def _attacked(context: Context[AttackScale, Settings, Bench]) -> tuple[str, list[str], Tensor, Tensor]:
    """The source model, the other natural models, and the first correctly classified images with their labels."""
    setup = context.bench
    source = setup.sources[0]
    others = [label for label in setup.sources if label != source]
    chosen = setup.correct[source].nonzero().squeeze(1)[: context.settings.images].to(setup.images.device)
    return source, others, setup.images[chosen], setup.labels[chosen]


def compute_generator(name: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """One generator's per-image measures, its samples of the first image (``first``: [K, D]) and its diagnostics.

    The diagnostics (HMCAM's chains only) are ``diagnostic.KEY`` scalars, NaN where the summary has none.
    """
    scale, setup, settings = context.scale, context.bench, context.settings
    source, others, images, labels = _attacked(context)
    samples, diagnostics = generate(
        name, setup.models[source], scale, settings.chains, settings.transitions, images, labels
    )
    outcome = per_image(setup.models, source, others, samples, labels)
    outcome["first"] = samples[:, 0].flatten(1).cpu()
    if diagnostics is not None:
        summary = diagnostics.summary()
        for key in DIAGNOSTICS:
            value = summary[key]
            outcome[f"diagnostic.{key}"] = torch.tensor(math.nan if value is None else value, dtype=torch.float64)
    return outcome


def generator_row(name: str, outcome: Mapping[str, Tensor]) -> dict[str, Any]:
    """A generator's row: its sample count, the means over images of its measures, its chains' diagnostics."""
    row: dict[str, Any] = {"generator": name, "samples": outcome["first"].shape[0]}
    row |= {key: float(outcome[key].mean()) for key in MEASURES if key in outcome}
    row.setdefault("black_box_success", None)
    for key in DIAGNOSTICS:
        if f"diagnostic.{key}" in outcome:
            value = float(outcome[f"diagnostic.{key}"])
            row[key] = None if math.isnan(value) else value
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}


def summarize_diversity(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """Diversity, strength and diagnostics per generator, the t-SNE map of one image and the claims' evidence."""
    scale, settings = context.scale, context.settings
    source, others, images, _ = _attacked(context)
    measures = {name: {key: outcomes[name][key] for key in MEASURES if key in outcomes[name]} for name in GENERATORS}
    rows = [generator_row(name, outcomes[name]) for name in GENERATORS]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    points = torch.cat([images[:1].flatten(1).cpu()] + [outcomes[name]["first"] for name in GENERATORS])
    groups = ["clean"] + [name for name in GENERATORS for _ in range(outcomes[name]["first"].shape[0])]
    count = settings.chains * settings.transitions
    text = "\n".join(
        [
            "## Diversity (Fig. 1)",
            "",
            f"{scale.dataset}, source {source}, L-inf eps {scale.eps:.4g}, {settings.images} correctly classified "
            f"test images, {count} samples per image and generator (HMCAM: {settings.chains} chains x "
            f"{settings.transitions} transitions of {scale.budget // scale.samples} steps; PGD: N = {scale.budget}); "
            f"black-box success on {', '.join(others) or 'no other model'}. Values are means over images; the claims "
            "are judged per image (each image's samples give one value). Loss ESS and R-hat are descriptive.",
            "",
            markdown_table(rows, columns),
        ]
    )
    title = f"t-SNE of one image's samples ({source})"
    return Summary(
        rows=rows,
        columns=columns,
        text=text,
        evidence=claim_evidence(measures),
        figures={FIGURE: lambda path: save_embedding(path, _embedding(points), groups, title)},
        results={"source": source},
    )


#: Fig. 1 on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="diversity",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=lambda context: list(GENERATORS),
    key=lambda name: GENERATOR_KEYS[name],
    compute=compute_generator,
    summarize=summarize_diversity,
)
