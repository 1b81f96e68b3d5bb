"""Fig. 1: many adversarial examples of one image from HMCAM, from PGD's restarts and from MI-FGSM's iterates.

K samples of each of a few correctly classified test images per generator (HMCAM with and without
momentum refresh, PGD's restarts, MI-FGSM's iterates): their diversity, white- and black-box
success, HMCAM's MCMC diagnostics and a t-SNE map. The generators and the measures:
docs/experiments.md, "Diversity of adversarial examples (Fig. 1)". The claims are judged per image
(:mod:`hmcam.experiments.claims`): each image's K samples give one value per generator.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks import HMCAM, MIFGSM, PGD
from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import StepRule
from hmcam.core.validate import choose
from hmcam.evaluation import predict
from hmcam.evaluation.sampling import (
    ChainDiagnostics,
    diagnose,
    distinct_fraction,
    distinct_labels,
    label_entropy,
    mean_pairwise_distance,
)
from hmcam.experiments.claims import Claim, Evidence, judge
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.setup import AttackScale, bench, claim_table, finish_experiment
from hmcam.reporting.figures import save_embedding
from hmcam.reporting.tables import markdown_table

#: Per scale: images, chains C and transitions S of HMCAM (K = C S samples per image and generator). S >= 8 gives
#: split chains of 4 draws at least; shorter ones leave ESS at its upper bound, C S log10(C S).
SIZES = {"smoke": (3, 2, 4), "small": (20, 5, 10), "paper": (20, 50, 10)}
#: The random initial momentum of the refreshed chains, in units of the mean |gradient|.
REFRESH = 1.0
GENERATORS = ("HMCAM", "HMCAM + refresh", "PGD restarts", "MI-FGSM iterates")
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
    model: nn.Module, scale: AttackScale, chains: int, transitions: int, images: Tensor, labels: Tensor
) -> tuple[dict[str, Tensor], dict[str, ChainDiagnostics]]:
    """Per generator, the samples ``[K, B, ...]`` of every image; for the HMCAM chains their diagnostics."""
    steps = scale.budget // scale.samples
    count = chains * transitions
    samples, diagnostics = {}, {}
    for name, refresh in (("HMCAM", 0.0), ("HMCAM + refresh", REFRESH)):
        attack = HMCAM(
            model, scale.eps, steps=steps, samples=transitions, chains=chains, momentum_refresh=refresh, seed=0
        )
        result = attack.sample(images, labels)
        samples[name] = result.samples.transpose(0, 1).flatten(0, 1)  # [C, S, B, ...] chain after chain
        diagnostics[name] = diagnose(result)
    tiled = images.repeat(count, *([1] * (images.dim() - 1)))
    restarts = PGD(model, scale.eps, steps=scale.budget, seed=0)(tiled, labels.repeat(count))
    samples["PGD restarts"] = restarts.reshape(count, *images.shape)
    recorded = _RecordedMIFGSM(model, scale.eps, steps=count)
    recorded(images, labels)
    samples["MI-FGSM iterates"] = torch.stack(recorded.iterates)
    return samples, diagnostics


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


def run_diversity(scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run Fig. 1 at ``scale`` into ``out``: diversity, strength and diagnostics per generator, t-SNE, report."""
    folder = options.run_folder()
    setup = bench(scale, options)
    count, chains, transitions = choose("scale", scale.name, SIZES)
    source = setup.sources[0]
    others = [label for label in setup.sources if label != source]
    chosen = setup.correct[source].nonzero().squeeze(1)[:count].to(setup.images.device)
    images, labels = setup.images[chosen], setup.labels[chosen]
    samples, diagnostics = generate(setup.models[source], scale, chains, transitions, images, labels)
    measures = {name: per_image(setup.models, source, others, samples[name], labels) for name in GENERATORS}
    rows = []
    for name in GENERATORS:
        row: dict[str, Any] = {"generator": name, "samples": samples[name].shape[0]}
        row |= {key: float(values.mean()) for key, values in measures[name].items()}
        row.setdefault("black_box_success", None)
        if name in diagnostics:
            summary = diagnostics[name].summary()
            row |= {key: summary[key] for key in ("acceptance_rate", "loss_ess_median", "loss_rhat_median")}
        rows.append({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()})
    first = torch.cat([images[:1].flatten(1).cpu()] + [samples[name][:, 0].flatten(1).cpu() for name in GENERATORS])
    groups = ["clean"] + [name for name in GENERATORS for _ in range(samples[name].shape[0])]
    save_embedding(folder.file(FIGURE), _embedding(first), groups, f"t-SNE of one image's samples ({source})")
    judged = claim_evidence(measures)
    claims = judge(judged)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    report = "\n".join(
        [
            "## Diversity (Fig. 1)",
            "",
            f"{scale.dataset}, source {source}, L-inf eps {scale.eps:.4g}, {count} correctly classified test images, "
            f"{chains * transitions} samples per image and generator (HMCAM: {chains} chains x {transitions} "
            f"transitions of {scale.budget // scale.samples} steps; PGD: N = {scale.budget}); black-box success on "
            f"{', '.join(others) or 'no other model'}. Values are means over images; the claims are judged per "
            "image (each image's samples give one value). Loss ESS and R-hat are descriptive.",
            "",
            markdown_table(rows, columns),
            claim_table(claims),
            f"![diversity]({FIGURE})",
            "",
        ]
    )
    results = {"source": source, "rows": rows, "claims": claims}
    return finish_experiment(folder, options, "diversity", scale, results, (rows, columns), report, judged)
