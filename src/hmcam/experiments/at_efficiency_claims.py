"""What the equal-cost training runs show: the spread over seeds, the differences between arms, the paper's claims.

Pure functions of the runs' results (no training, no files); :mod:`hmcam.experiments.at_efficiency_report`
lays them out. The verdict rules are in ``docs/experiments.md`` (Adversarial training at equal cost).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from hmcam.experiments.at_efficiency_plan import METRICS, Scale
from hmcam.experiments.verdicts import verdict

#: The paper's differences, CAT minus each rival, in points on PreAct-ResNet18 / CIFAR-10 (Table 4).
PAPER_DIFFERENCES = {
    "PGD-AT": {"pgd": 7.8, "mpgd": 9.1, "cwlinf": 2.4, "clean": -3.4},
    "Free": {"pgd": 7.3, "mpgd": 6.7, "cwlinf": 4.3},
    "YOPO": {"pgd": 6.8, "mpgd": 6.7, "cwlinf": 4.4},
}
#: The paper's training minutes per method on that table, for the time ratios it implies.
PAPER_MINUTES = {"PGD-AT": 132, "Free": 110, "YOPO": 66, "CAT": 114}
#: Clean accuracy CAT may give up against PGD-AT and still match the paper's "about the same" (Table 4: -3.4).
CLEAN_TOLERANCE = 0.034


def spread_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), minimum and maximum of one metric over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def compare(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """The difference of means ``first - second`` and whether it exceeds the seed spread.

    A difference exceeds the spread when the two ranges over seeds do not overlap: every seed of one
    arm beats every seed of the other. With one seed per arm nothing can exceed it.
    """
    difference = statistics.fmean(first) - statistics.fmean(second)
    separated = len(first) > 1 and len(second) > 1 and (min(first) > max(second) or max(first) < min(second))
    return {"difference": difference, "exceeds_spread": separated}


def summarize(results: Sequence[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """Per study: each arm's mean and spread of every metric, and every arm against every other one."""
    studies: dict[str, Any] = {}
    for study in scale.studies:
        mine = [result for result in results if result["study"] == study.name]
        rows = {arm.label: [result for result in mine if result["arm"] == arm.label] for arm in study.arms}
        arms = {
            label: {m: spread_summary([run[m] for run in runs]) for m in METRICS}
            for label, runs in rows.items()
            if runs
        }
        differences = {
            f"{a} - {b}": {m: compare([r[m] for r in rows[a]], [r[m] for r in rows[b]]) for m in METRICS}
            for a in arms
            for b in arms
            if a != b
        }
        studies[study.name] = {"arms": arms, "differences": differences, "seeds": list(scale.seeds)}
    return studies


def oscillation(curve: Sequence[dict[str, Any]]) -> float:
    """Total drop of per-epoch robust accuracy (sum of decreases): 0 for a curve that never falls (Fig. 5)."""
    values: list[float] = [point["robust"] for point in curve if point["robust"] is not None]
    return sum(max(0.0, a - b) for a, b in zip(values, values[1:], strict=False))


def percent(value: float) -> str:
    """A fraction as percent with one decimal (``0.1234`` -> ``"12.3"``)."""
    return f"{100 * value:.1f}"


def _outcome(comparison: dict[str, Any]) -> str:
    # "higher" only when every seed of the first arm beats every seed of the second: a difference
    # inside the seed spread is not evidence, as in the attack experiments' bootstrap verdicts.
    if comparison["exceeds_spread"]:
        return "higher" if comparison["difference"] > 0 else "lower"
    return "tie"


def _differences(summary: dict[str, Any], first: str, second: str, metrics: Sequence[str]) -> list[str]:
    parts = []
    for metric in metrics:
        comparison = summary["differences"][f"{first} - {second}"][metric]
        mark = "" if comparison["exceeds_spread"] else " (within the seed spread)"
        parts.append(f"{100 * comparison['difference']:+.1f} {metric}{mark}")
    return parts


#: The metrics the robustness claims are judged on: AutoAttack, the number reviewers accept (the paper's
#: own attacks are shown beside it).
JUDGED = ("autoattack",)
#: The paper's attacks and their worst case, shown beside the judged metric.
SHOWN = ("pgd", "mpgd", "cwlinf", "worst")


def _robustness_claim(summary: dict[str, Any], rival: str) -> dict[str, str]:
    arms = summary["arms"]
    paper = PAPER_DIFFERENCES.get(rival, PAPER_DIFFERENCES["PGD-AT"])
    shown = ", ".join(f"{value:+.1f} {metric}" for metric, value in paper.items() if metric != "clean")
    minutes = arms["CAT"]["train_minutes"]["mean"] / max(arms[rival]["train_minutes"]["mean"], 1e-12)
    paper_minutes = PAPER_MINUTES["CAT"] / PAPER_MINUTES.get(rival, PAPER_MINUTES["PGD-AT"])
    outcomes = [_outcome(summary["differences"][f"CAT - {rival}"][metric]) for metric in JUDGED]
    return {
        "claim": f"CAT is more robust than {rival} (Table 4)",
        "paper": f"{shown} points, at {paper_minutes:.2f}x the time",
        "ours": ", ".join(_differences(summary, "CAT", rival, JUDGED))
        + " points (judged); paper's attacks "
        + ", ".join(_differences(summary, "CAT", rival, SHOWN))
        + f" points; at {minutes:.2f}x the training minutes and equal gradient passes",
        "verdict": verdict(outcomes),
    }


def claims(summary: dict[str, Any], reference: str = "PGD-AT") -> list[dict[str, str]]:
    """The paper's claims about CAT, each with the paper's figures, this study's and the verdict.

    A robustness claim is judged on AutoAttack's robust accuracy (:data:`JUDGED`; the paper's attacks
    are shown beside it): it *holds* when CAT beats the rival beyond the seed spread
    (:func:`compare`), *partly* when on some judged metrics, and *does not hold* when on none
    (:func:`hmcam.experiments.verdicts.verdict`); differences are in points of accuracy. The
    clean-accuracy claim holds when CAT loses at most the paper's 3.4 points, and the Fig. 5 claim
    when CAT's per-epoch robust accuracy falls less in total than YOPO's (:func:`oscillation`).
    Claims about arms the study does not have are left out.
    """
    arms = summary["arms"]
    found: list[dict[str, str]] = []
    if "CAT" not in arms:
        return found
    found += [_robustness_claim(summary, rival) for rival in (reference, "Free", "YOPO") if rival in arms]
    if reference in arms:
        clean = summary["differences"][f"CAT - {reference}"]["clean"]["difference"]
        found.append(
            {
                "claim": f"CAT keeps clean accuracy close to {reference} (Table 4)",
                "paper": f"{PAPER_DIFFERENCES['PGD-AT']['clean']:+.1f} points",
                "ours": f"{100 * clean:+.1f} points",
                "verdict": "holds" if clean >= -CLEAN_TOLERANCE else "does not hold",
            }
        )
    if "CAT-CE" in arms:
        found.append(
            {
                "claim": "J_cd drives the chains better than cross-entropy (Eq. 15)",
                "paper": "not measured",
                "ours": ", ".join(_differences(summary, "CAT", "CAT-CE", ("autoattack", "pgd", "worst"))) + " points",
                "verdict": verdict([_outcome(summary["differences"]["CAT - CAT-CE"][metric]) for metric in JUDGED]),
            }
        )
    drops = summary.get("oscillation", {})
    if "YOPO" in drops:
        found.append(
            {
                "claim": "CAT's robust accuracy rises steadily while YOPO's oscillates (Fig. 5)",
                "paper": "a figure, no number",
                "ours": "total per-epoch drop of robust accuracy: "
                + ", ".join(f"{label} {percent(value)}" for label, value in drops.items())
                + " points",
                "verdict": "holds" if drops["CAT"] < drops["YOPO"] else "does not hold",
            }
        )
    return found
