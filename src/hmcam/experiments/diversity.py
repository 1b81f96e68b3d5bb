"""Fig. 1: many adversarial examples of one image from HMCAM, from PGD's restarts and from MI-FGSM's iterates.

K samples of each of a few correctly classified test images per generator (HMCAM with and without
momentum refresh, PGD's restarts, MI-FGSM's iterates): their diversity, white- and black-box
success, HMCAM's MCMC diagnostics and a t-SNE map. The generators and the measures:
docs/experiments.md, "Diversity of adversarial examples (Fig. 1)".
"""

from __future__ import annotations

import statistics
from typing import Any

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
from hmcam.experiments.setup import AttackScale, RunOptions, bench, claim_table, finish_experiment
from hmcam.experiments.verdicts import verdict
from hmcam.reporting.figures import save_embedding
from hmcam.reporting.tables import markdown_table

#: Per scale: images, chains C and transitions S of HMCAM (K = C S samples per image and generator). S >= 8 gives
#: split chains of 4 draws at least; shorter ones leave ESS at its upper bound, C S log10(C S).
SIZES = {"smoke": (3, 2, 4), "small": (20, 5, 10), "paper": (20, 50, 10)}
#: The random initial momentum of the refreshed chains, in units of the mean |gradient|.
REFRESH = 1.0
GENERATORS = ("HMCAM", "HMCAM + refresh", "PGD restarts", "MI-FGSM iterates")
#: The t-SNE map.
FIGURE = "diversity.png"


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


def run_diversity(scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run Fig. 1 at ``scale`` into ``out``: diversity, strength and diagnostics per generator, t-SNE, report."""
    folder = options.run_folder()
    setup = bench(scale, options)
    count, chains, transitions = SIZES.get(scale.name, SIZES["small"])
    source = setup.sources[0]
    others = [label for label in setup.sources if label != source]
    chosen = setup.correct[source].nonzero().squeeze(1)[:count].to(setup.images.device)
    images, labels = setup.images[chosen], setup.labels[chosen]
    samples, diagnostics = generate(setup.models[source], scale, chains, transitions, images, labels)
    rows = []
    for name in GENERATORS:
        drawn = samples[name]
        predictions = predict(setup.models[source], drawn, sample_dims=1)
        transfer = [
            float((predict(setup.models[other], drawn, sample_dims=1) != labels).float().mean()) for other in others
        ]
        row: dict[str, Any] = {
            "generator": name,
            "samples": drawn.shape[0],
            "distinct_labels": float(distinct_labels(predictions).float().mean()),
            "label_entropy_bits": float(label_entropy(predictions).mean()),
            "mean_pairwise_l2": float(mean_pairwise_distance(drawn).mean()),
            "distinct_samples": float(distinct_fraction(drawn).mean()),
            "white_box_success": float((predictions != labels).float().mean()),
            "black_box_success": statistics.fmean(transfer) if transfer else None,
        }
        if name in diagnostics:
            summary = diagnostics[name].summary()
            row |= {key: summary[key] for key in ("acceptance_rate", "loss_ess_median", "loss_rhat_median")}
        rows.append({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()})
    first = torch.cat([images[:1].flatten(1).cpu()] + [samples[name][:, 0].flatten(1).cpu() for name in GENERATORS])
    groups = ["clean"] + [name for name in GENERATORS for _ in range(samples[name].shape[0])]
    save_embedding(folder.file(FIGURE), _embedding(first), groups, f"t-SNE of one image's samples ({source})")
    by_name = {row["generator"]: row for row in rows}

    def more(a: str, b: str, key: str) -> bool:
        return bool(by_name[a][key] > by_name[b][key])

    baselines = ("PGD restarts", "MI-FGSM iterates")
    claims = [
        {
            "claim": "HMCAM's samples are more diverse than PGD's restarts and MI-FGSM's iterates (Fig. 1)",
            "paper": "wider t-SNE spread",
            "ours": "; ".join(
                f"mean pairwise L2 {by_name['HMCAM']['mean_pairwise_l2']:.3g} vs {by_name[b]['mean_pairwise_l2']:.3g}, "
                f"labels {by_name['HMCAM']['distinct_labels']:.2f} vs {by_name[b]['distinct_labels']:.2f} ({b})"
                for b in baselines
            ),
            "verdict": verdict(
                [
                    "higher" if more("HMCAM", b, key) else "tie"
                    for b in baselines
                    for key in ("mean_pairwise_l2", "distinct_labels")
                ]
            ),
        },
        {
            "claim": "Momentum refresh makes HMCAM's chains a sample (beyond the paper)",
            "paper": "not measured",
            "ours": f"distinct samples {by_name['HMCAM + refresh']['distinct_samples']:.2f} vs "
            f"{by_name['HMCAM']['distinct_samples']:.2f}, loss ESS {by_name['HMCAM + refresh']['loss_ess_median']} vs "
            f"{by_name['HMCAM']['loss_ess_median']}, R-hat {by_name['HMCAM + refresh']['loss_rhat_median']} vs "
            f"{by_name['HMCAM']['loss_rhat_median']}",
            "verdict": verdict(
                [
                    "higher" if more("HMCAM + refresh", "HMCAM", key) else "tie"
                    for key in ("distinct_samples", "mean_pairwise_l2")
                ]
            ),
        },
    ]
    if others:
        refreshed, paper = by_name["HMCAM + refresh"]["black_box_success"], by_name["HMCAM"]["black_box_success"]
        claims.append(
            {
                "claim": "The randomness costs no black-box strength (refresh within 2 points of the paper's chain)",
                "paper": "not measured",
                "ours": f"{100 * refreshed:.1f}% vs {100 * paper:.1f}%",
                "verdict": "holds" if refreshed >= paper - 0.02 else "does not hold",
            }
        )
    columns = list(dict.fromkeys(key for row in rows for key in row))
    report = "\n".join(
        [
            "## Diversity (Fig. 1)",
            "",
            f"{scale.dataset}, source {source}, L-inf eps {scale.eps:.4g}, {count} correctly classified test images, "
            f"{chains * transitions} samples per image and generator (HMCAM: {chains} chains x {transitions} "
            f"transitions of {scale.budget // scale.samples} steps; PGD: N = {scale.budget}); black-box success on "
            f"{', '.join(others) or 'no other model'}. Values are means over images.",
            "",
            markdown_table(rows, columns),
            claim_table(claims),
            f"![diversity]({FIGURE})",
            "",
        ]
    )
    results = {"source": source, "rows": rows, "claims": claims}
    return finish_experiment(folder, options, "diversity", scale, results, (rows, columns), report)
