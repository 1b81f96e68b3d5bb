"""Fig. 2: success of M-PGD and HMCAM over the first iterations, white-box and black-box.

For each N in 1 .. ``max_steps`` every source model crafts examples with M-PGD (N steps) and HMCAM
(one transition of N accumulated-momentum steps and its Metropolis-Hastings test: the first N
iterations of the chain, as the figure clips the start of a run), and each is scored on every
target. PGD with ten times the largest N is the reference of the paper's second claim ("HMCAM with
N = 10 beats PGD with N = 100 black-box").
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import Tensor

from hmcam.experiments.setup import (
    ATTACK_LABELS,
    AttackScale,
    Bench,
    RunOptions,
    bench,
    cache_file,
    claim_table,
    finish_experiment,
    hits_on_targets,
    jobs,
)
from hmcam.experiments.verdicts import verdict
from hmcam.reporting.figures import save_curve_panels
from hmcam.reporting.tables import markdown_table

#: The largest N of the curve per scale (the paper: 10).
MAX_STEPS = {"smoke": 3, "small": 10, "paper": 10}
#: The success curves.
FIGURE = "iterations.png"


def _rates(setup: Bench, hits: Tensor) -> Tensor:
    """Success per target ([targets]) from hits ``[seeds, targets, images]``, among each target's correct images."""
    return torch.stack([hits[:, j, setup.correct[t]].float().mean() for j, t in enumerate(setup.targets)])


def run_iterations(scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run Fig. 2 at ``scale`` into ``out``: success per N, white- and black-box, the curves and the report."""
    folder = options.run_folder()
    setup = bench(scale, options)
    largest = MAX_STEPS.get(scale.name, 10)
    steps = list(range(1, largest + 1))

    def settings(attack: str, n: int, seed: int) -> Any:
        return scale.settings(attack, seed, steps=n, samples=1)

    runs = [(source, attack, n) for source in setup.sources for attack in ("mpgd", "hmcam") for n in steps]
    runs += [(source, "pgd", 10 * largest) for source in setup.sources]
    rates: dict[tuple[str, str, int], Tensor] = {}
    for source, attack, n in jobs(runs, "iterations", options.progress):

        def compute(source: str = source, attack: str = attack, n: int = n) -> dict[str, Tensor]:
            chosen = [settings(attack, n, seed) for seed in scale.seeds]
            found = hits_on_targets(
                setup.models, source, chosen, setup.targets, setup.images, setup.labels, scale.batch_size
            )
            return {"hits": found}

        hits = folder.cached(cache_file(f"{source}-{attack}-{n}"), compute)["hits"].bool()
        rates[(source, attack, n)] = _rates(setup, hits)

    def mean(attack: str, n: int, kind: str) -> float:
        values = [
            float(rates[(source, attack, n)][j])
            for source in setup.sources
            for j, target in enumerate(setup.targets)
            if (source == target) == (kind == "white") and target not in setup.adversarial
        ]
        return 100 * statistics.fmean(values)

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
    save_curve_panels(
        folder.file(FIGURE),
        steps,
        panels,
        xlabel="iterations N",
        ylabel="success rate (%)",
        title=f"solid: white-box, dashed: black-box; eps {scale.eps:.4g}, {scale.images} images",
    )
    above = {kind: [mean("hmcam", n, kind) > mean("mpgd", n, kind) for n in steps] for kind in ("white", "black")}
    long_pgd = 100 * statistics.fmean(
        float(rates[(source, "pgd", 10 * largest)][j])
        for source in setup.sources
        for j, target in enumerate(setup.targets)
        if source != target and target not in setup.adversarial
    )
    claims = [
        {
            "claim": f"HMCAM is above M-PGD at every N ({kind}-box)",
            "paper": "at all N = 1 .. 10 (Fig. 2)",
            "ours": f"above at {sum(above[kind])} of {len(steps)} N; at N = {largest}: "
            f"{mean('hmcam', largest, kind):.1f}% vs {mean('mpgd', largest, kind):.1f}%",
            "verdict": verdict(["higher" if won else "tie" for won in above[kind]]),
        }
        for kind in ("white", "black")
    ]
    claims.append(
        {
            "claim": f"HMCAM with N = {largest} beats PGD with N = {10 * largest} black-box",
            "paper": "HMCAM (N = 10) above PGD (N = 100)",
            "ours": f"{mean('hmcam', largest, 'black'):.1f}% vs {long_pgd:.1f}%",
            "verdict": "holds" if mean("hmcam", largest, "black") > long_pgd else "does not hold",
        }
    )
    report = "\n".join(
        [
            "## Iterations (Fig. 2)",
            "",
            f"{scale.dataset}, L-inf eps {scale.eps:.4g}, N = 1 .. {largest}, {scale.images} test images, seeds "
            f"{list(scale.seeds)}; HMCAM at N is one transition of N steps. Mean success (%) over source and "
            "natural target pairs.",
            "",
            markdown_table(rows, ["attack", "N", "white_box", "black_box"]),
            claim_table(claims),
            f"![iterations]({FIGURE})",
            "",
        ]
    )
    results = {"steps": steps, "rows": rows, "claims": claims, "long_pgd_black_box": long_pgd}
    return finish_experiment(folder, options, "iterations", scale, results, (rows, list(rows[0])), report)
