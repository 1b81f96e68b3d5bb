"""The equal-cost training comparison's tables, curves and report, written into its run folder.

Given every run's result, the summary over seeds and the judged claims
(:mod:`hmcam.experiments.at_efficiency_claims`), this writes the per-run and per-arm tables, each
study's per-epoch curves (Fig. 5, mean over seeds), its budget sweep, the results with the claims,
``claims.csv`` and the report; ``docs/outputs.md`` (Experiment folders) lists the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hmcam.experiments.at_efficiency_claims import percent
from hmcam.experiments.at_efficiency_plan import METRICS, ROBUST_SUITE, Scale, Study
from hmcam.experiments.claims import FIELDS as CLAIM_FIELDS
from hmcam.experiments.setup import CLAIMS_TABLE, claim_table
from hmcam.reporting.figures import save_training_curves
from hmcam.reporting.run_folder import RunFolder
from hmcam.reporting.tables import markdown_table

#: The columns of the main table (and of the sweep's), one row per run.
RUN_COLUMNS = ("study", "arm", "seed", "budget", "epochs", *METRICS, "robust_examples")
#: The runs of the budget sweep at budgets other than each study's own.
SWEEP_TABLE = "sweep.csv"
#: The metrics a report shows as a count, not as a percentage.
COUNTS = ("train_minutes", "passes", "updates")
#: The table of means and standard deviations over seeds, one row per study and arm.
SUMMARY_TABLE = "summary.csv"
SUMMARY_COLUMNS = ("study", "arm", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")))


def curves_file(study: Study) -> str:
    """The name of ``study``'s curves figure in the run folder."""
    return f"{study.name}-curves.png"


def _gain(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def _arm_rows(study: Study, study_summary: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # Per arm: the summary table's row (numbers) and the report's row (percent, mean ± standard deviation).
    table_rows, shown_rows = [], []
    for label, metrics in study_summary["arms"].items():
        row: dict[str, Any] = {"study": study.name, "arm": label}
        for metric, values in metrics.items():
            row[f"{metric}_mean"], row[f"{metric}_std"] = values["mean"], values["std"]
        shown = {
            "arm": label,
            **{
                metric: f"{percent(values['mean'])} ± {percent(values['std'])}"
                for metric, values in metrics.items()
                if metric not in COUNTS
            },
            "train minutes": f"{metrics['train_minutes']['mean']:.3g} ± {metrics['train_minutes']['std']:.2g}",
            "passes": f"{metrics['passes']['mean']:.1f}",
            "updates": f"{metrics['updates']['mean']:.1f}",
            "last-epoch gain": "clean {clean}, robust {robust}".format(
                **{key: _gain(value) for key, value in study_summary["last_gain"][label].items()}
            ),
        }
        table_rows.append(row)
        shown_rows.append(shown)
    return table_rows, shown_rows


def _suite_rows(study_summary: dict[str, Any]) -> list[dict[str, str]]:
    # Per arm: the paper's worst case, AutoAttack and how much AutoAttack takes off (means over seeds).
    rows = []
    for label, metrics in study_summary["arms"].items():
        worst, suite = metrics["worst"]["mean"], metrics["autoattack"]["mean"]
        rows.append(
            {
                "arm": label,
                "paper's attacks": percent(worst),
                "AutoAttack": percent(suite),
                "difference": f"{100 * (suite - worst):+.1f}",
            }
        )
    return rows


def _sweep_lines(study: Study, study_summary: dict[str, Any]) -> list[str]:
    """The sweep's table (each budget and arm: AutoAttack, clean, epochs' weight updates) and its claims."""
    rows = [
        {
            "budget": f"{row['budget']:g}",
            "arm": label,
            "autoattack": f"{percent(metrics['autoattack']['mean'])} ± {percent(metrics['autoattack']['std'])}",
            "clean": f"{percent(metrics['clean']['mean'])} ± {percent(metrics['clean']['std'])}",
            "updates": f"{metrics['updates']['mean']:.1f}",
            "train minutes": f"{metrics['train_minutes']['mean']:.3g}",
        }
        for row in study_summary["sweep"]
        for label, metrics in row["arms"].items()
    ]
    claims = [record for record in study_summary["claims"] if "sweep-" in record["name"]]
    return [
        "### Budget sweep",
        "",
        f"{', '.join(study.sweep_arms)} at {', '.join(f'{b:g}' for b in sorted(study.sweep))} gradient passes per "
        "training example, every seed, the same schedule annealed to the end of each run. AutoAttack and clean "
        "accuracy in percent (mean ± standard deviation over seeds); updates: weight updates (optimizer steps) per "
        "training example. CAT-CE against CAT in the main table isolates the contrastive term J_cd at equal updates.",
        "",
        markdown_table(rows, ["budget", "arm", "autoattack", "clean", "updates", "train minutes"]),
        "",
        claim_table(claims) if claims else "No claim of the sweep concerns these arms.",
        "",
    ]


def _setting(study: Study, scale: Scale) -> str:
    # The sentence under a study's heading: what was trained and how it was scored.
    attacks = f"{study.attack_steps} steps" + (f", step {study.attack_alpha:.4g}" if study.attack_alpha else "")
    return (
        f"{study.dataset}, {study.model}, L-inf eps {study.eps:.4g}; "
        + (f"budget {study.budget:g} gradient passes per example; " if study.budget else "the paper's epochs; ")
        + f"seeds {list(scale.seeds)}. Accuracies in percent (mean ± standard deviation over seeds): clean on "
        + ("the whole test set" if study.test_limit is None else f"the first {study.test_limit} test images")
        + f", attacks ({attacks}), their per-example worst case and AutoAttack ({ROBUST_SUITE} suite) on the "
        + f"first {study.robust_examples}."
    )


def _study_section(
    folder: RunFolder, study: Study, scale: Scale, results: Sequence[dict[str, Any]], study_summary: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Draw ``study``'s curves; its report lines (with the judged claims of ``study_summary``) and table rows."""
    table_rows, shown_rows = _arm_rows(study, study_summary)
    curves = {label: [curve] for label, curve in study_summary["curves"].items()}
    title = f"{study.name}, eps {study.eps:.4g}, mean over seeds {list(scale.seeds)}"
    save_training_curves(folder.file(curves_file(study)), curves, title=title)
    study_claims = [record for record in study_summary["claims"] if "sweep-" not in record["name"]]
    lines = [
        f"## {study.name}",
        "",
        _setting(study, scale),
        "",
        markdown_table(
            shown_rows,
            ["arm", "clean", "pgd", "mpgd", "cwlinf", "worst", "autoattack", "train minutes", "passes", "updates"],
        ),
        "",
        "The paper's attacks against AutoAttack (the worst case over PGD, M-PGD and CW-L-inf, and AutoAttack's "
        "robust accuracy, in percent; a defence whose number falls most under AutoAttack was masking gradients):",
        "",
        markdown_table(_suite_rows(study_summary), ["arm", "paper's attacks", "AutoAttack", "difference"]),
        "",
        "Per-epoch clean and PGD accuracy (the trainer's per-epoch evaluation), mean over seeds, against "
        "gradient passes and training time. The last epoch's gain, in points, says whether a curve had "
        "flattened by the end of its budget:",
        "",
        markdown_table(shown_rows, ["arm", "last-epoch gain"]),
        "",
        f"![curves]({curves_file(study)})",
        "",
        "### The paper's claims, as this run measures them",
        "",
        "Each claim compares CAT's values over the training seeds with its rival's (Welch's t-test, "
        "differences in points); the p-values are Holm-adjusted across every claim of the run.",
        "",
        claim_table(study_claims) if study_claims else "No claim of the paper concerns these arms.",
        "",
        *(_sweep_lines(study, study_summary) if study.sweep else []),
    ]
    return lines, table_rows


def write_report(
    folder: RunFolder,
    scale: Scale,
    results: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    claims: dict[str, list[dict[str, Any]]],
    swept: Sequence[dict[str, Any]] = (),
) -> str:
    """Write the tables, the curves, the sweep, the results, the claims and the reports into ``folder``.

    Returns the report; ``swept`` are the sweep's runs at budgets other than each study's own.

    ``claims`` holds each study's judged claim records (one Holm family for the run): each study's
    part of ``summary`` gets its own as ``claims``, the results all of them, and ``claims.csv`` one
    row each. The results carry ``folder``'s run record (its start time and device).
    """
    folder.write_table(results, RUN_COLUMNS)
    folder.write_table(swept, RUN_COLUMNS, name=SWEEP_TABLE)
    table_rows: list[dict[str, Any]] = []
    lines = [f"# Adversarial training at equal cost: scale `{scale.name}`", "", scale.description, ""]
    for study in scale.studies:
        summary[study.name]["claims"] = claims[study.name]
        study_lines, study_rows = _study_section(folder, study, scale, results, summary[study.name])
        lines += study_lines
        table_rows += study_rows
    folder.write_table(table_rows, SUMMARY_COLUMNS, name=SUMMARY_TABLE)
    records = [record for study in scale.studies for record in claims[study.name]]
    folder.write_table(records, CLAIM_FIELDS, CLAIMS_TABLE)
    folder.write_results({"experiment": "at-efficiency", "scale": scale.name, "studies": summary, "claims": records})
    report = "\n".join(lines)
    folder.write_report(report)
    return report
