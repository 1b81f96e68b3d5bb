"""What the equal-cost training runs show: the spread over seeds, the differences between arms, the paper's claims.

Pure functions of the runs' results (no training, no files); :mod:`hmcam.experiments.at_efficiency_report`
lays them out. The paper's claims (:data:`CLAIMS`) are declared here, before any run, and judged by the
claims engine (:func:`hmcam.experiments.claims.judge`, called by the experiment framework on
:func:`run_evidence`) with the training seed as the unit: each arm's values over its seeds are an
independent sample, CAT's against its rival's by Welch's t-test, and all claims of all studies of a run
are one Holm family (``docs/experiments.md``, Adversarial training at equal cost). A run's result
carries its ``budget``: the main comparison is the runs at each study's own budget, the sweep those at
its other budgets.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from hmcam.experiments.at_efficiency_plan import METRICS, Scale, Study
from hmcam.experiments.claims import Claim, Evidence

#: The paper's differences, CAT minus each rival, in points on PreAct-ResNet18 / CIFAR-10 (Table 4).
PAPER_DIFFERENCES = {
    "PGD-AT": {"pgd": 7.8, "mpgd": 9.1, "cwlinf": 2.4, "clean": -3.4},
    "Free": {"pgd": 7.3, "mpgd": 6.7, "cwlinf": 4.3},
    "YOPO": {"pgd": 6.8, "mpgd": 6.7, "cwlinf": 4.4},
}
#: The paper's training minutes per method on that table, for the time ratios it implies.
PAPER_MINUTES = {"PGD-AT": 132, "Free": 110, "YOPO": 66, "CAT": 114}
#: Clean accuracy (points) CAT may give up against PGD-AT and still be "close": the paper's own Table 4 gap
#: (-3.4), which it presents as keeping clean accuracy; a larger loss than the paper's is not its claim.
CLEAN_MARGIN = 3.4
#: The metric the robustness claims are judged on: AutoAttack, the number reviewers accept.
JUDGED = "autoattack"
#: The paper's attacks and their worst case, shown beside the judged metric (descriptive only).
SHOWN = ("pgd", "mpgd", "cwlinf", "worst")
#: The rivals of the robustness claims, in the paper's order.
RIVALS = ("PGD-AT", "Free", "YOPO")
#: Why a claim is untestable when an arm has a single seed: Welch's test needs a spread on both sides.
FEW_SEEDS = "needs at least 2 seeds per arm"
#: The rivals CAT is judged against at every budget of a study's sweep other than its own.
SWEEP_RIVALS = ("PGD-AT", "TRADES")
#: An arm has converged at the study's budget when its mean AutoAttack robust accuracy over seeds at the next
#: budget of the sweep (twice the budget at ``small``) is less than this above its mean at the budget (a
#: fraction: 1 point). More training no longer buys robustness there: the per-epoch curve cannot show this
#: under a schedule annealed to zero, whose last epoch always gains. A robustness claim against an arm
#: measured not to have converged (CAT's own included) is untestable.
CONVERGED_GAIN = 0.01
#: Why a robustness claim is untestable when an arm was measured still gaining at the compared budget.
NOT_CONVERGED = "{arm} had not converged at {budget:g} passes per example: {gain:+.1f} AutoAttack points at {next:g}"
EXPERIMENT = "at-efficiency"


def _seed_statistic(what: str) -> str:
    return f"{what}, points, difference of the means over training seeds (Welch)"


def _robustness_claim(rival: str) -> Claim:
    paper = ", ".join(
        f"{value:+.1f} {metric}" for metric, value in PAPER_DIFFERENCES[rival].items() if metric != "clean"
    )
    ratio = PAPER_MINUTES["CAT"] / PAPER_MINUTES[rival]
    return Claim(
        experiment=EXPERIMENT,
        name=f"cat-vs-{rival.lower()}",
        claim=f"CAT is more robust than {rival} (Table 4)",
        paper=f"{paper} points, at {ratio:.2f}x the time (AutoAttack not reported)",
        statistic=_seed_statistic(f"CAT minus {rival} AutoAttack robust accuracy"),
        unit="seeds",
        direction="greater",
    )


#: The paper's claims about CAT, by name; a study judges those whose arms it has.
CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        *(_robustness_claim(rival) for rival in RIVALS),
        Claim(
            experiment=EXPERIMENT,
            name="clean-vs-pgd-at",
            claim="CAT keeps clean accuracy close to PGD-AT (Table 4)",
            paper=f"{PAPER_DIFFERENCES['PGD-AT']['clean']:+.1f} points",
            statistic=_seed_statistic("CAT minus PGD-AT clean accuracy"),
            unit="seeds",
            direction="noninferior",
            margin=CLEAN_MARGIN,
        ),
        Claim(
            experiment=EXPERIMENT,
            name="jcd-vs-ce",
            claim="J_cd drives the chains better than cross-entropy (Eq. 15)",
            paper="not measured",
            statistic=_seed_statistic("CAT minus CAT-CE AutoAttack robust accuracy"),
            unit="seeds",
            direction="greater",
        ),
        Claim(
            experiment=EXPERIMENT,
            name="steady-vs-yopo",
            claim="CAT's robust accuracy rises steadily while YOPO's oscillates (Fig. 5)",
            paper="a figure, no number",
            statistic=_seed_statistic(
                "CAT minus YOPO oscillation (total per-epoch drop of a run's robust accuracy curve)"
            ),
            unit="seeds",
            direction="less",
        ),
    )
}


#: The robustness claims of :data:`CLAIMS` (CAT against each of :data:`RIVALS`): those that wait for convergence.
ROBUSTNESS_CLAIMS = frozenset(f"cat-vs-{rival.lower()}" for rival in RIVALS)
#: The arm each claim of :data:`CLAIMS` compares CAT with.
CLAIM_RIVALS = {
    **{f"cat-vs-{rival.lower()}": rival for rival in RIVALS},
    "clean-vs-pgd-at": "PGD-AT",
    "jcd-vs-ce": "CAT-CE",
    "steady-vs-yopo": "YOPO",
}
#: The per-seed value each claim of :data:`CLAIMS` is judged on, where it is not :data:`JUDGED`.
CLAIM_METRICS = {"clean-vs-pgd-at": "clean", "steady-vs-yopo": "oscillation"}


def sweep_claim(rival: str, budget: float) -> Claim:
    """The claim that CAT beats ``rival`` under AutoAttack at ``budget`` gradient passes per example (the sweep)."""
    return Claim(
        experiment=EXPERIMENT,
        name=f"sweep-{budget:g}/cat-vs-{rival.lower()}",
        claim=f"CAT is more robust than {rival} at {budget:g} passes per example (budget sweep)",
        paper="Table 4 compares at one cost per method; other budgets not measured",
        statistic=_seed_statistic(f"CAT minus {rival} AutoAttack robust accuracy at {budget:g} passes per example"),
        unit="seeds",
        direction="greater",
    )


def _sweep_pairs(study: Study) -> list[tuple[float, str]]:
    # (budget, rival) of every sweep claim of ``study``: none unless CAT is among its sweep arms, none at the
    # study's own budget (the main claims judge that one).
    if "CAT" not in study.sweep_arms:
        return []
    others = sorted(set(study.sweep) - {study.budget})
    return [(budget, rival) for budget in others for rival in SWEEP_RIVALS if rival in study.sweep_arms]


def sweep_claims(study: Study) -> list[Claim]:
    """The sweep's claims of ``study``, declared from its plan: each budget of its sweep but its own, each rival."""
    return [sweep_claim(rival, budget) for budget, rival in _sweep_pairs(study)]


def spread_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), minimum and maximum of one metric over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def compare(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """The difference of means ``first - second`` (descriptive: the claims are tested on :func:`run_evidence`)."""
    return {"difference": statistics.fmean(first) - statistics.fmean(second)}


def oscillation(curve: Sequence[dict[str, Any]]) -> float:
    """Total drop of per-epoch robust accuracy (sum of decreases): 0 for a curve that never falls (Fig. 5)."""
    values: list[float] = [point["robust"] for point in curve if point["robust"] is not None]
    return sum(max(0.0, a - b) for a, b in zip(values, values[1:], strict=False))


def mean_curve(curves: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per epoch, the mean over seeds of ``passes``, ``minutes``, ``clean`` and ``robust``.

    A value is None where any seed lacks it. The seeds of one arm train the same epochs; a seed
    with fewer shortens the curve to the common epochs.
    """
    points = []
    for epoch in zip(*curves, strict=False):
        point: dict[str, Any] = {"epoch": epoch[0]["epoch"]}
        for key in ("passes", "minutes", "clean", "robust"):
            values = [p[key] for p in epoch]
            point[key] = None if any(v is None for v in values) else statistics.fmean(values)
        points.append(point)
    return points


def last_gain(curve: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Clean and robust accuracy gained in the last epoch of ``curve`` (None with one epoch or unmeasured)."""
    gains: dict[str, float | None] = {}
    for key in ("clean", "robust"):
        ends = [point[key] for point in curve[-2:]]
        gains[key] = ends[1] - ends[0] if len(ends) == 2 and None not in ends else None
    return gains


def converged(gain: float | None) -> bool | None:
    """Whether a gain of robust accuracy is under :data:`CONVERGED_GAIN` (None when it was not measured)."""
    return None if gain is None else gain < CONVERGED_GAIN


def budget_gains(study: Study, runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Per arm of ``study``: its mean AutoAttack gain from the study's budget to the next budget it ran at.

    ``runs`` are the study's runs at every budget. An arm with no runs above the study's budget (not
    in the sweep, or the study has no larger budget) maps to None: its convergence was not measured.
    """
    gains: dict[str, dict[str, float] | None] = {}
    for arm in study.arms:
        mine = [run for run in runs if run["arm"] == arm.label]
        here = [run[JUDGED] for run in mine if run["budget"] == study.budget]
        above = sorted({run["budget"] for run in mine if study.budget is not None and run["budget"] > study.budget})
        if not here or not above:
            gains[arm.label] = None
            continue
        there = [run[JUDGED] for run in mine if run["budget"] == above[0]]
        gains[arm.label] = {"budget": above[0], "gain": statistics.fmean(there) - statistics.fmean(here)}
    return gains


def _spreads(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {metric: spread_summary([run[metric] for run in runs]) for metric in METRICS}


def sweep_summary(study: Study, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget of ``study``'s sweep (ascending): each sweep arm's spread of every metric over its runs there."""
    rows = []
    for budget in sorted(study.sweep):
        arms = {
            label: _spreads(mine)
            for label in study.sweep_arms
            if (mine := [r for r in runs if r["arm"] == label and r.get("budget") == budget])
        }
        rows.append({"budget": budget, "arms": arms})
    return rows


def study_summaries(results: Sequence[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """Per study: each arm's spreads, mean curve, last-epoch gain, convergence, oscillation, differences, sweep.

    Convergence comes from :func:`budget_gains`; the last-epoch gain of the mean curve is descriptive.

    ``results`` are every run of the scale, at every budget: all but the sweep's come from the runs at
    each study's own budget.
    """
    studies: dict[str, Any] = {}
    for study in scale.studies:
        everywhere = [run for run in results if run["study"] == study.name]
        mine = [run for run in everywhere if run["budget"] == study.budget]
        rows = {arm.label: [run for run in mine if run["arm"] == arm.label] for arm in study.arms}
        rows = {label: runs for label, runs in rows.items() if runs}
        arms = {label: _spreads(runs) for label, runs in rows.items()}
        curves = {label: mean_curve([run["curve"] for run in runs]) for label, runs in rows.items()}
        gains = {label: last_gain(curve) for label, curve in curves.items()}
        differences = {
            f"{a} - {b}": {m: compare([r[m] for r in rows[a]], [r[m] for r in rows[b]]) for m in METRICS}
            for a in arms
            for b in arms
            if a != b
        }
        drops = {label: statistics.fmean(oscillation(run["curve"]) for run in runs) for label, runs in rows.items()}
        further = {label: gain for label, gain in budget_gains(study, everywhere).items() if label in rows}
        studies[study.name] = {
            "budget": study.budget,
            "arms": arms,
            "differences": differences,
            "oscillation": drops,
            "curves": curves,
            "last_gain": gains,
            "budget_gain": further,
            "converged": {label: converged(None if gain is None else gain["gain"]) for label, gain in further.items()},
            "converged_gain": CONVERGED_GAIN,
            "sweep": sweep_summary(study, everywhere),
            "seeds": list(scale.seeds),
        }
    return studies


def percent(value: float) -> str:
    """A fraction as percent with one decimal (``0.1234`` -> ``"12.3"``)."""
    return f"{100 * value:.1f}"


def seed_values(runs: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """One arm's ``metric`` per seed (seed order), in points; ``oscillation`` is computed from each run's curve."""
    ordered = sorted(runs, key=lambda run: run["seed"])
    return [100 * (oscillation(run["curve"]) if metric == "oscillation" else run[metric]) for run in ordered]


def _difference(arms: dict[str, list[dict[str, Any]]], first: str, second: str, metric: str) -> float:
    return statistics.fmean(seed_values(arms[first], metric)) - statistics.fmean(seed_values(arms[second], metric))


def _evidence(claim: Claim, arms: dict[str, list[dict[str, Any]]], rival: str, metric: str, ours: str) -> Evidence:
    """CAT's values per seed against ``rival``'s, or untestable when either arm has a single seed."""
    cat, other = seed_values(arms["CAT"], metric), seed_values(arms[rival], metric)
    if len(cat) < 2 or len(other) < 2:
        return claim.evidence(ours=ours, untestable=FEW_SEEDS)
    return claim.evidence(cat, versus=other, ours=ours)


def _robustness_sentence(arms: dict[str, list[dict[str, Any]]], rival: str) -> str:
    shown = ", ".join(f"{_difference(arms, 'CAT', rival, metric):+.1f} {metric}" for metric in SHOWN)
    minutes = statistics.fmean(run["train_minutes"] for run in arms["CAT"]) / max(
        statistics.fmean(run["train_minutes"] for run in arms[rival]), 1e-12
    )
    passes = statistics.fmean(run["passes"] for run in arms["CAT"]) / max(
        statistics.fmean(run["passes"] for run in arms[rival]), 1e-12
    )
    # Epochs are whole, so the passes each arm makes differ from the planned budget: say by how much.
    return (
        f"{_difference(arms, 'CAT', rival, JUDGED):+.1f} {JUDGED} points (judged); paper's attacks {shown} points; "
        f"at {minutes:.2f}x the training minutes and {passes:.2f}x the gradient passes"
    )


def _measured(name: str, arms: dict[str, list[dict[str, Any]]], rival: str) -> str:
    """What a claim of :data:`CLAIMS` measures, CAT against ``rival``, as its ``ours`` sentence."""
    if name in ROBUSTNESS_CLAIMS:
        return _robustness_sentence(arms, rival)
    if name == "clean-vs-pgd-at":
        return f"{_difference(arms, 'CAT', rival, 'clean'):+.1f} points (margin -{CLEAN_MARGIN:g})"
    if name == "jcd-vs-ce":
        shown = ", ".join(f"{_difference(arms, 'CAT', rival, m):+.1f} {m}" for m in ("pgd", "worst"))
        return f"{_difference(arms, 'CAT', rival, JUDGED):+.1f} {JUDGED} points (judged); {shown} points"
    drops = {label: statistics.fmean(seed_values(arms[label], "oscillation")) for label in ("CAT", rival)}
    return (
        f"total per-epoch drop of robust accuracy, mean over seeds: CAT {drops['CAT']:.1f}, "
        f"{rival} {drops[rival]:.1f} points ({drops['CAT'] - drops[rival]:+.1f})"
    )


def _still_rising(study: Study, gains: dict[str, dict[str, float] | None], labels: Sequence[str]) -> str | None:
    """Why a robustness claim between ``labels`` is untestable: the first arm measured not converged, else None."""
    for label in labels:
        gain = gains.get(label)
        if gain is not None and not converged(gain["gain"]):
            assert study.budget is not None  # a gain is only measured above a budget
            return NOT_CONVERGED.format(arm=label, budget=study.budget, gain=100 * gain["gain"], next=gain["budget"])
    return None


def _gains_sentence(gains: dict[str, dict[str, float] | None], labels: Sequence[str]) -> str:
    # The robust gain each arm made at the next budget, where it was measured: the claim's convergence check.
    measured = [(label, gain) for label in labels if (gain := gains.get(label)) is not None]
    if not measured:
        return "; convergence not measured"
    said = ", ".join(f"{label} {100 * gain['gain']:+.1f} at {gain['budget']:g}" for label, gain in measured)
    return f"; AutoAttack gain at the next budget: {said} points"


def study_evidence(study: Study, runs: Sequence[dict[str, Any]]) -> list[Evidence]:
    """The evidence for every claim of :data:`CLAIMS` from ``study``'s runs (every budget), in its order.

    Claims are judged on the runs at the study's budget. A claim whose arms (CAT and its rival,
    :data:`CLAIM_RIVALS`) were not both run is untestable, and so is a robustness claim against
    :data:`RIVALS` when CAT or the rival had not converged (:func:`budget_gains`, :data:`CONVERGED_GAIN`).
    """
    arms: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["budget"] == study.budget:
            arms.setdefault(run["arm"], []).append(run)
    gains = budget_gains(study, runs)
    found = []
    for name, claim in CLAIMS.items():
        rival = CLAIM_RIVALS[name]
        if "CAT" not in arms or rival not in arms:
            found.append(claim.evidence(ours="not run", untestable=f"no runs of CAT and {rival}"))
            continue
        ours = _measured(name, arms, rival)
        rising = None
        if name in ROBUSTNESS_CLAIMS:
            ours += _gains_sentence(gains, ("CAT", rival))
            rising = _still_rising(study, gains, ("CAT", rival))
        if rising is not None:
            found.append(claim.evidence(ours=ours, untestable=rising))
        else:
            found.append(_evidence(claim, arms, rival, CLAIM_METRICS.get(name, JUDGED), ours))
    return found


def _sweep_evidence(claim: Claim, runs: Sequence[dict[str, Any]], rival: str, budget: float) -> Evidence:
    """CAT's AutoAttack values at ``budget`` against ``rival``'s (untestable without the runs or with one seed)."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("budget") == budget:
            arms.setdefault(run["arm"], []).append(run)
    if "CAT" not in arms or rival not in arms:
        return claim.evidence(ours="not run", untestable=f"no runs of CAT and {rival} at this budget")
    updates = {label: statistics.fmean(run["updates"] for run in arms[label]) for label in ("CAT", rival)}
    ours = (
        f"{_difference(arms, 'CAT', rival, JUDGED):+.1f} {JUDGED} points (judged); weight updates per example: "
        f"CAT {updates['CAT']:.3g}, {rival} {updates[rival]:.3g}"
    )
    return _evidence(claim, arms, rival, JUDGED, ours)


def sweep_evidence(study: Study, runs: Sequence[dict[str, Any]]) -> list[Evidence]:
    """The evidence for every claim of :func:`sweep_claims` from ``study``'s runs at every budget."""
    return [_sweep_evidence(sweep_claim(rival, budget), runs, rival, budget) for budget, rival in _sweep_pairs(study)]


def _in_study(item: Evidence, study: str) -> Evidence:
    # Claim names must be distinct within a run: with several studies each claim is named after its study.
    claim = dataclasses.replace(item.claim, name=f"{study}/{item.claim.name}", claim=f"{item.claim.claim} [{study}]")
    return dataclasses.replace(item, claim=claim)


def run_evidence(runs: Sequence[dict[str, Any]], scale: Scale) -> list[Evidence]:
    """The evidence for every claim of every study of ``scale`` from ``runs`` (every budget): one Holm family.

    Per study, the claims of :data:`CLAIMS` (from the runs at its own budget) come first, then the
    sweep's. With several studies, each claim's name and text carry its study's name.
    """
    several = len(scale.studies) > 1
    evidence = []
    for study in scale.studies:
        everywhere = [run for run in runs if run["study"] == study.name]
        found = study_evidence(study, everywhere)
        found += sweep_evidence(study, everywhere)
        evidence += [_in_study(item, study.name) if several else item for item in found]
    return evidence
