"""Table 3: attack an equal-weight ensemble of all models but one; success on the ensemble and the hold-out.

Each model of the zoo is held out in turn; the others form an :class:`~hmcam.models.Ensemble`
(equal weights, averaged logits). Every attack gets the budget N and crafts on the ensemble:
"ensemble" is its white-box success on the ensemble itself, "hold-out" its black-box success on the
model left out. HMCAM is compared with M-PGD on each hold-out by a paired bootstrap interval.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import Tensor

from hmcam.evaluation import predict
from hmcam.experiments.setup import (
    ATTACK_LABELS,
    INTERVALS_TABLE,
    TABLE_ATTACKS,
    AttackScale,
    RunOptions,
    adversarial_examples,
    bench,
    cache_file,
    claim_table,
    finish_experiment,
    jobs,
)
from hmcam.experiments.verdicts import paired_bootstrap, verdict
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


def run_ensemble(scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run Table 3 at ``scale`` into ``out``: success on each ensemble and its hold-out, intervals, report."""
    folder = options.run_folder()
    setup = bench(scale, options)
    hits: dict[tuple[str, str], Tensor] = {}
    ensemble_correct: dict[str, Tensor] = {}
    runs = [(held, attack) for held in setup.targets for attack in TABLE_ATTACKS]
    for held, attack in jobs(runs, "ensemble", options.progress):
        members = [setup.models[label] for label in setup.targets if label != held]
        ensemble = Ensemble(members).eval()
        ensemble_correct[held] = (predict(ensemble, setup.images) == setup.labels).cpu()

        def compute(ensemble: Ensemble = ensemble, held: str = held, attack: str = attack) -> dict[str, Tensor]:
            per_seed = []
            for seed in scale.seeds:
                crafted = adversarial_examples(
                    ensemble, scale.settings(attack, seed), setup.images, setup.labels, scale.batch_size
                )
                fooled = [predict(model, crafted) != setup.labels for model in (ensemble, setup.models[held])]
                per_seed.append(torch.stack(fooled))
            return {"hits": torch.stack(per_seed).cpu()}

        hits[(held, attack)] = folder.cached(cache_file(f"without-{held}-{attack}"), compute)["hits"].bool()

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
    intervals = []
    for baseline in ("pgd", "mpgd"):
        for held in setup.targets:
            eligible = setup.correct[held]
            difference = paired_bootstrap(
                hits[(held, "hmcam")][:, 1, eligible].float(), hits[(held, baseline)][:, 1, eligible].float()
            )
            intervals.append({"baseline": baseline, "hold_out": held, **difference.to_dict()})

    def mean_holdout(attack: str, robust: bool) -> float:
        chosen = [held for held in setup.targets if (held in setup.adversarial) == robust]
        return 100 * statistics.fmean(rate(held, attack, 1) for held in chosen) if chosen else float("nan")

    paper_natural = {a: statistics.fmean(v[1] for v in values[:4]) for a, values in PAPER_TABLE_3.items()}
    claims = []
    for baseline in ("pgd", "mpgd"):
        found = [str(r["significant"]) for r in intervals if r["baseline"] == baseline]
        claims.append(
            {
                "claim": f"HMCAM transfers from the ensemble to the hold-out better than {ATTACK_LABELS[baseline]}",
                "paper": f"{paper_natural['hmcam'] - paper_natural[baseline]:+.1f} points (natural hold-outs)",
                "ours": f"{mean_holdout('hmcam', False) - mean_holdout(baseline, False):+.1f} points; higher on "
                f"{found.count('higher')} of {len(found)} hold-outs",
                "verdict": verdict(found),
            }
        )
    for held in setup.adversarial:
        found = [str(r["significant"]) for r in intervals if r["baseline"] == "mpgd" and r["hold_out"] == held]
        claims.append(
            {
                "claim": f"HMCAM beats M-PGD most on the adversarially trained hold-out ({held})",
                "paper": f"{PAPER_TABLE_3['hmcam'][4][1] - PAPER_TABLE_3['mpgd'][4][1]:+.1f} points on ResNet32_A",
                "ours": f"{100 * (rate(held, 'hmcam', 1) - rate(held, 'mpgd', 1)):+.1f} points",
                "verdict": verdict(found),
            }
        )
    natural = [held for held in setup.targets if held not in setup.adversarial]
    series = {
        "on the ensemble": [statistics.fmean(rate(h, a, 0) for h in setup.targets) for a in TABLE_ATTACKS],
        "natural hold-outs": [statistics.fmean(rate(h, a, 1) for h in natural) for a in TABLE_ATTACKS],
    }
    if setup.adversarial:
        series["adversarially trained hold-out"] = [
            statistics.fmean(rate(h, a, 1) for h in setup.adversarial) for a in TABLE_ATTACKS
        ]
    save_bar_chart(
        folder.file(FIGURE),
        [ATTACK_LABELS[a] for a in TABLE_ATTACKS],
        series,
        "success rate (%)",
        f"ensemble of all but one model, eps {scale.eps:.4g}: mean over the hold-outs",
    )
    report = "\n".join(
        [
            "## Ensemble (Table 3)",
            "",
            f"{scale.dataset}, L-inf eps {scale.eps:.4g}, N = {scale.budget}, {scale.images} test images, seeds "
            f"{list(scale.seeds)}; each column pair holds one model out of an equal-weight logit ensemble of the "
            "others. Success (%) among the images the attacked model classifies correctly.",
            "",
            markdown_table(rows, list(rows[0])),
            f"![success on the ensemble and on the held-out models]({FIGURE})",
            "",
            claim_table(claims),
            f"HMCAM minus PGD and M-PGD on each hold-out, 95% paired bootstrap interval: `{INTERVALS_TABLE}`.",
            "",
        ]
    )
    results = {"rows": rows, "claims": claims, "intervals": intervals}
    folder.write_table(intervals, list(intervals[0]), INTERVALS_TABLE)
    return finish_experiment(folder, options, "ensemble", scale, results, (rows, list(rows[0])), report)
