"""The equal-cost training comparison's report text, per-arm table and curves.

Given the summary over seeds (:func:`hmcam.experiments.at_efficiency_claims.study_summaries`), this
lays out each study's tables, its convergence at the main budget, its budget sweep and its per-epoch
curves (Fig. 5, mean over seeds). The experiment framework appends the judged claims and writes the
files; ``docs/outputs.md`` (Experiment folders) lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hmcam.experiments.at_efficiency_claims import CONVERGED_GAIN, percent
from hmcam.experiments.at_efficiency_plan import METRICS, ROBUST_SUITE, Scale, Study
from hmcam.reporting.figures import save_training_curves
from hmcam.reporting.tables import markdown_table

#: The columns of the main table (and of the sweep's), one row per run.
RUN_COLUMNS = ("study", "arm", "seed", "budget", "epochs", *METRICS, "robust_examples")
#: The runs of the budget sweep at budgets other than each study's own.
SWEEP_TABLE = "sweep.csv"
#: The metrics a report shows as a count, not as a percentage.
COUNTS = ("train_minutes", "passes", "updates")
#: The table of means and standard deviations over seeds, one row per study and arm.
SUMMARY_TABLE = "summary.csv"
#: Each arm's convergence at its study's budget (points): the last epoch's robust gain (descriptive), the next
#: budget it ran at, its AutoAttack gain there and whether it converged (yes, no, n/a: not measured).
CONVERGENCE_TABLE = "convergence.csv"
CONVERGENCE_COLUMNS = ("study", "arm", "budget", "last_epoch_gain", "next_budget", "autoattack_gain", "converged")
SUMMARY_COLUMNS = ("study", "arm", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")))


def curves_file(study: Study) -> str:
    """The name of ``study``'s curves figure in the run folder."""
    return f"{study.name}-curves.png"


def _gain(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def _next_gain(gain: dict[str, float] | None) -> str:
    return "not measured" if gain is None else f"{100 * gain['gain']:+.1f} at {gain['budget']:g}"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


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
            "gain at the next budget": _next_gain(study_summary["budget_gain"][label]),
            "converged": _yes_no(study_summary["converged"][label]),
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
    """The sweep's table: each budget and arm, AutoAttack, clean accuracy, weight updates, minutes."""
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
    return [
        "### Budget sweep",
        "",
        f"{', '.join(study.sweep_arms)} at {', '.join(f'{b:g}' for b in sorted(study.sweep))} gradient passes per "
        "training example, every seed, the same schedule annealed to the end of each run. AutoAttack and clean "
        "accuracy in percent (mean ± standard deviation over seeds); updates: weight updates (optimizer steps) per "
        "training example. CAT-CE against CAT in the main table isolates the contrastive term J_cd at equal updates. "
        "The sweep's claims (at each budget but the main one, which the main claims judge) are in the claims table.",
        "",
        markdown_table(rows, ["budget", "arm", "autoattack", "clean", "updates", "train minutes"]),
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


def _convergence_sentence(study: Study, study_summary: dict[str, Any]) -> str:
    # Which arms were still gaining robust accuracy at a larger budget, and whose convergence was not measured.
    # In the study's order: a summary read back from results.json has its keys sorted.
    done = {arm.label: study_summary["converged"][arm.label] for arm in study.arms}
    late = [label for label, measured in done.items() if measured is False]
    unknown = [label for label, measured in done.items() if measured is None]
    where = f"at {study.budget:g} passes per example" if study.budget else "at the paper's epochs"
    said = (
        f"Not converged {where} (AutoAttack robust accuracy {100 * CONVERGED_GAIN:g} point or more higher at the "
        f"next budget, mean over seeds): {', '.join(late)}; a robustness claim against them is untestable."
        if late
        else f"Every arm with a measured convergence converged {where}."
    )
    return said + (f" Not measured (no run at a larger budget): {', '.join(unknown)}." if unknown else "")


def _study_lines(study: Study, scale: Scale, study_summary: dict[str, Any]) -> list[str]:
    """``study``'s report lines: the table, the attacks against AutoAttack, convergence and the sweep."""
    _, shown_rows = _arm_rows(study, study_summary)
    return [
        f"## {study.name}",
        "",
        _setting(study, scale),
        "",
        markdown_table(
            shown_rows,
            ["arm", "clean", "pgd", "mpgd", "cwlinf", "worst", "autoattack", "train minutes", "passes", "updates"],
        ),
        "",
        "Passes: the gradient passes per training example each arm actually made; epochs are whole, so an arm "
        "may end below the budget.",
        "",
        "The paper's attacks against AutoAttack (the worst case over PGD, M-PGD and CW-L-inf, and AutoAttack's "
        "robust accuracy, in percent; a defence whose number falls most under AutoAttack was masking gradients):",
        "",
        markdown_table(_suite_rows(study_summary), ["arm", "paper's attacks", "AutoAttack", "difference"]),
        "",
        "### Convergence",
        "",
        f"Per-epoch clean and PGD accuracy (the trainer's per-epoch evaluation), mean over seeds, against "
        f"gradient passes and training time ({curves_file(study)}). The learning rate anneals to zero at the end "
        f"of every run, so the last epoch gains whatever the budget: its gain, in points, is shown but decides "
        f"nothing. An arm has converged when a run with the next budget of the sweep is less than "
        f"{100 * CONVERGED_GAIN:g} point more robust under AutoAttack (mean over seeds, points).",
        "",
        markdown_table(shown_rows, ["arm", "passes", "last-epoch gain", "gain at the next budget", "converged"]),
        "",
        _convergence_sentence(study, study_summary),
        "",
        *(_sweep_lines(study, study_summary) if study.sweep else []),
    ]


def report_text(scale: Scale, summaries: dict[str, Any]) -> str:
    """The report before its claims: the scale, then per study its tables, convergence and sweep."""
    lines = [f"# Adversarial training at equal cost: scale `{scale.name}`", "", scale.description, ""]
    for study in scale.studies:
        lines += _study_lines(study, scale, summaries[study.name])
    lines += [
        "Each claim compares CAT's values over the training seeds with its rival's (Welch's t-test, differences "
        "in points); the p-values are Holm-adjusted across every claim of the run.",
        "",
    ]
    return "\n".join(lines)


def summary_rows(scale: Scale, summaries: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of :data:`SUMMARY_TABLE`: per study and arm, each metric's mean and standard deviation."""
    return [row for study in scale.studies for row in _arm_rows(study, summaries[study.name])[0]]


def _points(value: float | None) -> float | str:
    return "n/a" if value is None else round(100 * value, 2)


def convergence_rows(scale: Scale, summaries: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of :data:`CONVERGENCE_TABLE`: per study and arm, its convergence at the study's budget, in points."""
    rows = []
    for study in scale.studies:
        summary = summaries[study.name]
        for label in (arm.label for arm in study.arms):
            done, gain = summary["converged"][label], summary["budget_gain"][label]
            rows.append(
                {
                    "study": study.name,
                    "arm": label,
                    "budget": "own epochs" if study.budget is None else study.budget,
                    "last_epoch_gain": _points(summary["last_gain"][label]["robust"]),
                    "next_budget": "n/a" if gain is None else gain["budget"],
                    "autoattack_gain": "n/a" if gain is None else _points(gain["gain"]),
                    "converged": _yes_no(done),
                }
            )
    return rows


def curve_figures(scale: Scale, summaries: dict[str, Any]) -> dict[str, Callable[[Path], None]]:
    """Each study's curves figure by file name: a function drawing it at a path."""

    def drawing(study: Study) -> Callable[[Path], None]:
        curves = {label: [curve] for label, curve in summaries[study.name]["curves"].items()}
        title = f"{study.name}, eps {study.eps:.4g}, mean over seeds {list(scale.seeds)}"
        return lambda path: save_training_curves(path, curves, title=title)

    return {curves_file(study): drawing(study) for study in scale.studies}
