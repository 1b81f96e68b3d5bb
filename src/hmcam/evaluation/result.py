"""The result of a robust evaluation: summary numbers, per-attack reports and per-example facts.

:class:`RobustEvaluation` is what :func:`hmcam.evaluation.evaluate_robustness` returns; it turns
itself into ``results.json`` (:meth:`~RobustEvaluation.to_dict`), the tables
(:meth:`~RobustEvaluation.rows`) and ``report.md`` (:meth:`~RobustEvaluation.markdown`), and
:meth:`~RobustEvaluation.save` writes the evaluation's run folder through
:class:`hmcam.reporting.run_folder.RunFolder` (the files are listed in ``docs/outputs.md``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from hmcam.evaluation.config import EvaluationConfig
from hmcam.evaluation.robustbench import ROBUSTBENCH_FILE, robustbench_info
from hmcam.reporting.figures import save_bar_chart
from hmcam.reporting.run_folder import CONFIG_FILE, PAGE_FILE, REPORT_FILE, RESULTS_FILE, TABLE_FILE, RunFolder
from hmcam.reporting.tables import markdown_table

#: What the per-attack numbers of a cascade mean; written into every result.
PER_ATTACK_NOTE = (
    "attacks run cheapest first, each only on the examples still robust: robust_accuracy_among_reached is "
    "robust accuracy under this attack among the examples that reached it (classified correctly and not fooled "
    "by an earlier attack), cumulative_robust_accuracy is robust accuracy over all examples after this attack "
    "and every earlier one; standalone_robust_accuracy is the attack run alone on every example (only with "
    "standalone=True / --standalone, otherwise null); robust_accuracy is the per-example worst case over all "
    "attacks"
)
#: The figure of the run folder: accuracy after each attack, as bars.
FIGURE_FILE = "robustness.png"
#: The per-example table of the run folder.
EXAMPLES_FILE = "examples.csv"
#: The report's table: these fields of each attack.
REPORT_COLUMNS = (
    "name",
    "steps",
    "runs",
    "reached",
    "fooled",
    "cumulative_robust_accuracy",
    "standalone_robust_accuracy",
    "gradient_evaluations",
    "seconds",
)
_OUTCOME_WORDS = {0: "skipped", 1: "survived", 2: "fooled"}


def fraction(flags: Tensor) -> float:
    """The fraction of ``flags`` that are set, as a Python float (0.9, not float32's 0.8999999761581421)."""
    return int(flags.sum()) / flags.numel()


@dataclass(frozen=True)
class AttackReport:
    """The numbers of one attack in an evaluation (see :data:`PER_ATTACK_NOTE` for their meaning).

    ``steps`` is the gradient steps of one run (1 for a one-step attack), ``runs`` the runs given
    to each example, ``fooled_per_run`` how many examples each run fooled first, and
    ``gradient_evaluations`` / ``seconds`` the work and time of the attack's cascade and
    standalone-completion stages, summed over chunks (over processes too).
    """

    name: str
    iterative: bool
    steps: int
    runs: int
    reached: int
    fooled: int
    robust_accuracy_among_reached: float | None
    cumulative_robust_accuracy: float
    standalone_robust_accuracy: float | None
    fooled_per_run: tuple[int, ...]
    gradient_evaluations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "name": self.name,
            "iterative": self.iterative,
            "steps": self.steps,
            "runs": self.runs,
            "reached": self.reached,
            "fooled": self.fooled,
            "robust_accuracy_among_reached": self.robust_accuracy_among_reached,
            "cumulative_robust_accuracy": self.cumulative_robust_accuracy,
            "standalone_robust_accuracy": self.standalone_robust_accuracy,
            "fooled_per_run": list(self.fooled_per_run),
            "gradient_evaluations": self.gradient_evaluations,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class RobustEvaluation:
    """What :func:`~hmcam.evaluation.evaluate_robustness` found: summary, per-attack reports, per-example facts.

    Per example (CPU tensors of length N): ``labels``, ``clean_prediction``, ``robust`` (the worst
    case: correct and not fooled by any attack), ``fooled_by`` (index into ``config.attacks`` of the
    attack that fooled it first, -1 if none), ``adversarial_prediction`` and ``perturbation`` (of
    the example that fooled it), and ``outcomes`` [A, N] with 0 = not reached, 1 = survived,
    2 = fooled in the cascade; ``standalone`` [A, N] is each attack's own verdict (True = fooled)
    where it is known. ``checks`` holds the gradient-masking comparisons and ``warnings`` their
    verdicts. ``seconds`` is this call's wall time; ``resumed`` says whether saved progress was used.
    """

    config: EvaluationConfig
    labels: Tensor
    clean_prediction: Tensor
    robust: Tensor
    fooled_by: Tensor
    adversarial_prediction: Tensor
    perturbation: Tensor
    outcomes: Tensor
    standalone: Tensor
    attacks: tuple[AttackReport, ...]
    checks: dict[str, Any]
    warnings: tuple[str, ...]
    world_size: int
    resumed: bool
    seconds: float

    @property
    def clean_accuracy(self) -> float:
        """Fraction of examples the model classifies correctly."""
        return fraction(self.clean_prediction == self.labels)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of examples that survive every attack (the per-example worst case)."""
        return fraction(self.robust)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-example tensors, as JSON-ready values (``results.json``)."""
        fooled = self.fooled_by >= 0
        return {
            "suite": self.config.suite,
            "examples": self.config.examples,
            "eps": self.config.eps,
            "norm": self.config.norm,
            "steps": self.config.steps,
            "restarts": self.config.restarts,
            "mode": "standalone" if self.config.standalone else "cascade",
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "per_attack_note": PER_ATTACK_NOTE,
            "attacks": [report.to_dict() for report in self.attacks],
            "checks": self.checks,
            "warnings": list(self.warnings),
            "max_perturbation": float(self.perturbation[fooled].max()) if bool(fooled.any()) else 0.0,
            "gradient_evaluations": sum(report.gradient_evaluations for report in self.attacks)
            + int(self.checks.get("gradient_evaluations", 0)),
            "world_size": self.world_size,
            "resumed": self.resumed,
            "seconds": self.seconds,
            "config": self.config.to_dict(),
        }

    def rows(self, per: Literal["attack", "example"] = "attack") -> list[dict[str, Any]]:
        """One row per attack in run order (``results.csv``), or with ``per="example"`` one per example.

        An example's row (``examples.csv``) holds its label, the worst case and each attack's verdict.
        """
        if per == "example":
            return [self._example_row(index) for index in range(self.config.examples)]
        rows = []
        for order, report in enumerate(self.attacks):
            row = report.to_dict()
            row["fooled_per_run"] = " ".join(map(str, report.fooled_per_run))
            rows.append({"order": order, **row})
        return rows

    def _example_row(self, index: int) -> dict[str, Any]:
        names = self.config.attacks
        label, clean = int(self.labels[index]), int(self.clean_prediction[index])
        first = int(self.fooled_by[index])
        row: dict[str, Any] = {
            "index": index,
            "label": label,
            "clean_prediction": clean,
            "clean_correct": int(clean == label),
            "robust": int(self.robust[index]),
            "fooled_by": names[first] if first >= 0 else "",
            "adversarial_prediction": int(self.adversarial_prediction[index]),
            "perturbation": f"{float(self.perturbation[index]):.6g}",
        }
        for attack, name in enumerate(names):
            row[name] = _OUTCOME_WORDS[int(self.outcomes[attack, index])]
            if self.config.standalone:
                row[f"{name}_standalone"] = int(self.standalone[attack, index]) if clean == label else ""
        return row

    def markdown(self, subject: str = "the model") -> str:
        """``report.md``: the settings, the attack table, the figure and the masking warnings about ``subject``."""
        config = self.config
        lines = [
            f"# Robust evaluation of {subject}",
            "",
            f"The {config.describe()}; {config.examples} examples, {config.norm} eps {config.eps:.4g}; "
            f"each attack runs on the examples the previous ones left "
            f"({'and each alone' if config.standalone else 'cascade'}). Clean accuracy "
            f"**{self.clean_accuracy:.4f}**, robust accuracy (the per-example worst case) "
            f"**{self.robust_accuracy:.4f}**.",
            "",
            markdown_table([report.to_dict() for report in self.attacks], REPORT_COLUMNS),
            f"![accuracy after each attack]({FIGURE_FILE})",
            "",
        ]
        if self.warnings:
            lines += ["Warnings about gradient masking:", "", *(f"- {warning}" for warning in self.warnings), ""]
        else:
            lines += ["No sign of gradient masking in the checks that ran.", ""]
        lines += [
            f"How to read the table: {PER_ATTACK_NOTE}",
            "",
            f"Per attack: `{TABLE_FILE}`; per example: `{EXAMPLES_FILE}`.",
            "",
        ]
        return "\n".join(lines)

    def save(
        self, folder: str | Path, extra: dict[str, Any] | None = None, model: dict[str, Any] | None = None
    ) -> dict[str, str]:
        """Write the run folder: ``config.json``, ``results.json``, ``results.csv``, ``examples.csv``, the reports.

        ``config.json`` holds the evaluation's settings with ``extra`` (e.g. the checkpoint),
        ``results.json`` the summary (:meth:`to_dict`, ``extra`` first) with its ``run`` record,
        ``results.csv`` one row per attack, ``examples.csv`` one row per example, ``robustness.png``
        the accuracies as bars, ``robustbench.json`` the result in RobustBench's ``model_info`` layout
        (:mod:`hmcam.evaluation.robustbench`, with ``extra`` and ``model``: what is known of the model,
        such as its ``dataset`` and ``architecture``) and ``report.md`` / ``report.html`` all of it for
        people. Returns the paths written, by kind.
        """
        extra = extra or {}
        run = RunFolder(folder, "evaluation", started=time.time() - self.seconds, device=str(self.labels.device))
        run.write_config({**extra, **self.config.to_dict()})
        run.write_results({**extra, **self.to_dict()})
        run.write_json(ROBUSTBENCH_FILE, robustbench_info(self, {**extra, **(model or {})}))
        for rows, name in ((self.rows(), TABLE_FILE), (self.rows("example"), EXAMPLES_FILE)):
            run.write_table(rows, list(rows[0]) if rows else [], name=name, lineterminator="\n")
        names = ["clean", *(report.name for report in self.attacks), "worst case"]
        values = [
            self.clean_accuracy,
            *(report.cumulative_robust_accuracy for report in self.attacks),
            self.robust_accuracy,
        ]
        title = f"{self.config.norm} eps {self.config.eps:.4g}, {self.config.examples} examples"
        save_bar_chart(run.file(FIGURE_FILE), names, values, "accuracy (%)", title)
        run.write_report(self.markdown(str(extra.get("checkpoint", "the model"))))
        files = {
            "config": CONFIG_FILE,
            "json": RESULTS_FILE,
            "attacks_csv": TABLE_FILE,
            "examples_csv": EXAMPLES_FILE,
            "figure": FIGURE_FILE,
            "report": REPORT_FILE,
            "page": PAGE_FILE,
            "robustbench": ROBUSTBENCH_FILE,
        }
        return {key: str(run.file(name)) for key, name in files.items()}
