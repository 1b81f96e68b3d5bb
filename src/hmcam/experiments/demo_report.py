"""The demo's report side: the bench and jobs it reads, and its tables, figures, claims' evidence and text.

:mod:`hmcam.experiments.demo` declares the experiment (scales, claims, training, calibration, jobs);
this module turns the jobs' outcomes into the :class:`~hmcam.experiments.framework.Summary` of the run:
the table of five attacks (white-box and black-box), the table of HMCAM's sequence, the per-image
evidence of the claims, three figures and the report, and the lines ``hmcam demo`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackSettings
from hmcam.experiments.calibration import Calibration
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import CLAIMS_TABLE, Context, Summary, claim_table
from hmcam.experiments.setup import calibration_markdown, image_differences
from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_bar_chart, save_chain_grid
from hmcam.reporting.run_folder import PAGE_FILE, REPORT_FILE, RESULTS_FILE, TABLE_FILE
from hmcam.reporting.tables import markdown_table

#: The two networks: the attacker's (white-box) and the one it never sees (black-box).
SOURCE, TARGET = "smallcnn", "lenet"
#: HMCAM's sequence drawn for the diagnostics, by job key: its name in the table and its momentum refresh.
SEQUENCES = {"sequence-paper": ("paper's chain", 0.0), "sequence-refresh": ("momentum refresh", 1.0)}
COLUMNS = (
    "attack",
    "steps",
    "samples",
    "white_box_success",
    "black_box_success",
    "any_sample_black_box",
    "acceptance_rate",
    "mean_linf",
    "seconds",
)
SEQUENCE_COLUMNS = (
    "chain",
    "momentum_refresh",
    "acceptance_rate",
    "distinct_labels",
    "loss_ess_median",
    "loss_rhat_median",
    "white_box_success",
    "any_sample_white_box",
    "any_sample_black_box",
)
#: The table of the HMCAM sequence, and the figures: success per attack, HMCAM's examples, one refreshed chain.
SEQUENCE_TABLE = "sequence.csv"
SUCCESS_FIGURE, GRID_FIGURE, CHAIN_FIGURE = "success.png", "grid.png", "chain.png"


@dataclass(frozen=True)
class DemoScale:
    """A size of the demo: test images attacked, training epochs and images, seed, held-out calibration images."""

    name: str
    examples: int
    epochs: int
    seed: int
    train_limit: int | None
    calibration_images: int


@dataclass(frozen=True)
class Settings:
    """The demo's design: the eps grid, the gradient budget of every iterative attack, HMCAM's diagnosed sequence.

    The sequence has ``chains`` chains per image of ``samples`` transitions of ``chain_steps`` steps (the T of
    the table's HMCAM), on the first ``chain_images`` images.
    """

    grid: tuple[float, ...]
    budget: int
    chains: int
    samples: int
    chain_steps: int
    chain_images: int


@dataclass(frozen=True)
class DemoBench:
    """What every job starts from: the two trained models, the attacked images, and the calibrated eps.

    ``correct`` says per role (``source``, ``target``) which images that network classifies correctly;
    ``training`` holds the two training runs' results, ``names`` the class names.
    """

    source: nn.Module
    target: nn.Module
    images: Tensor
    labels: Tensor
    clean_prediction: Tensor
    correct: dict[str, Tensor]
    calibration: Calibration
    training: dict[str, Any]
    names: list[str]


@dataclass(frozen=True)
class DemoJob:
    """One attack run on the source: one of the five attacks, or (``chain`` names it) a diagnosed sequence."""

    key: str
    attack: AttackSettings
    chain: str | None = None


def _rate(fooled: Tensor, eligible: Tensor) -> float:
    return float(fooled[eligible].float().mean()) if bool(eligible.any()) else float("nan")


def _value(outcome: Mapping[str, Tensor], name: str) -> Any:
    """A summary field of a job's outcome as a Python number, None if the run had none."""
    return outcome[name].item() if name in outcome else None


def _attack_row(name: str, outcome: Mapping[str, Tensor], correct: dict[str, Tensor]) -> dict[str, Any]:
    row = {field: _value(outcome, field) for field in ("steps", "samples", "acceptance_rate", "mean_linf")}
    row = {"attack": name, **row, "seconds": round(outcome["seconds"].item(), 2)}
    # run_attack counts success among the images the attacked (source) model classifies correctly.
    row["white_box_success"] = _value(outcome, "success_rate")
    row["black_box_success"] = _rate(outcome["target"], correct["target"])
    if "any_sample_target" in outcome:
        row["any_sample_black_box"] = _rate(outcome["any_sample_target"], correct["target"])
    return row


def _sequence_row(name: str, refresh: float, outcome: Mapping[str, Tensor], correct: Tensor) -> dict[str, Any]:
    fields = ("acceptance_rate", "distinct_labels", "loss_ess_median", "loss_rhat_median")
    return {
        "chain": name,
        "momentum_refresh": refresh,
        **{field: _value(outcome, field) for field in fields},
        "white_box_success": _value(outcome, "success_rate"),
        "any_sample_white_box": _value(outcome, "any_sample_success_rate"),
        "any_sample_black_box": _rate(outcome["any_sample_target"], correct[: len(outcome["any_sample_target"])]),
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _claim_evidence(claim: Claim, box: str, first: Tensor, second: Tensor, eligible: Tensor) -> Evidence:
    """HMCAM's hits ``first`` against M-PGD's ``second`` per eligible image (one seed, one network pair)."""
    if not bool(eligible.any()):
        return claim.evidence(ours=f"{box}: no image to count", untestable="the network classifies no image correctly")
    ours = (
        f"{box}: HMCAM {_percent(_rate(first, eligible))} against M-PGD {_percent(_rate(second, eligible))} "
        f"of {int(eligible.sum())} images"
    )
    # image_differences works on the CPU.
    pair = (first[None].cpu(), second[None].cpu(), eligible.cpu())
    return claim.evidence(image_differences([pair]).numpy(), ours=ours)


def findings(rows: Sequence[dict[str, Any]], sequence: Sequence[dict[str, Any]], budget: int, chains: int) -> list[str]:
    """The report's and the command's findings: HMCAM against M-PGD, and what its sequence does."""
    by_name = {row["attack"]: row for row in rows}
    hmcam, mpgd = by_name["hmcam"], by_name["mpgd"]
    paper, refreshed = sequence
    return [
        f"- White-box, HMCAM fools {_percent(hmcam['white_box_success'])} of the source's correctly classified "
        f"images against M-PGD's {_percent(mpgd['white_box_success'])} at the same {budget} gradient evaluations.",
        f"- Black-box, on {TARGET} that the attacker never queried, its last sample fools "
        f"{_percent(hmcam['black_box_success'])} (M-PGD {_percent(mpgd['black_box_success'])}), and at least one "
        f"of its samples {_percent(hmcam['any_sample_black_box'])}.",
        f"- The sequence: the paper's chain accepts {_percent(paper['acceptance_rate'])} of its proposals; its "
        f"{chains} chains per image reach {paper['distinct_labels']:.2f} labels on average, with loss R-hat "
        f"{paper['loss_rhat_median']:.3f} (1.00 when chains agree). With momentum refresh: acceptance "
        f"{_percent(refreshed['acceptance_rate'])}, {refreshed['distinct_labels']:.2f} labels, R-hat "
        f"{refreshed['loss_rhat_median']:.3f}; any sample of any chain transfers for "
        f"{_percent(refreshed['any_sample_black_box'])} of the images (paper's chain "
        f"{_percent(paper['any_sample_black_box'])}).",
    ]


def demo_summary(
    context: Context[DemoScale, Settings, DemoBench],
    outcomes: Mapping[DemoJob, Mapping[str, Any]],
    claims: Mapping[str, Claim],
) -> Summary:
    """The demo's summary: attack and sequence tables, the figures, the evidence of ``claims``, the report text."""
    bench = context.bench
    by_key = {job.key: outcome for job, outcome in outcomes.items()}
    rows = [_attack_row(job.key, outcome, bench.correct) for job, outcome in outcomes.items() if job.chain is None]
    sequence = [
        _sequence_row(name, refresh, by_key[key], bench.correct["target"]) for key, (name, refresh) in SEQUENCES.items()
    ]
    hmcam, mpgd = by_key["hmcam"], by_key["mpgd"]
    evidence = [
        _claim_evidence(
            claims["hmcam-vs-mpgd-white"], "white-box", hmcam["source"], mpgd["source"], bench.correct["source"]
        ),
        _claim_evidence(
            claims["hmcam-vs-mpgd-black"], "black-box", hmcam["target"], mpgd["target"], bench.correct["target"]
        ),
    ]
    accuracy = {role: float(flags.float().mean()) for role, flags in bench.correct.items()}
    found = findings(rows, sequence, context.settings.budget, context.settings.chains)
    eps = bench.calibration.chosen
    figures: dict[str, Callable[[Path], Any]] = {
        SUCCESS_FIGURE: partial(_success_figure, rows=rows, eps=eps, examples=len(bench.images)),
        GRID_FIGURE: partial(_grid_figure, bench=bench, adversarial=hmcam["adversarial"], eps=eps),
        CHAIN_FIGURE: partial(_chain_figure, bench=bench, chain=by_key["sequence-refresh"]["chain"]),
    }
    return Summary(
        rows=rows,
        columns=COLUMNS,
        text=_text(context, rows, sequence, accuracy, found),
        evidence=evidence,
        figures=figures,
        tables={SEQUENCE_TABLE: (sequence, SEQUENCE_COLUMNS)},
        results={
            "eps": eps,
            "calibration": bench.calibration.to_dict(),
            "attacks": rows,
            "sequence": sequence,
            "clean_accuracy": accuracy,
            "training": bench.training,
            "findings": found,
        },
    )


def _text(
    context: Context[DemoScale, Settings, DemoBench],
    rows: Sequence[dict[str, Any]],
    sequence: Sequence[dict[str, Any]],
    accuracy: dict[str, float],
    found: Sequence[str],
) -> str:
    """The report before its claims table and figures: the setting, the findings, both tables, the calibration."""
    settings, examples, calibration = context.settings, context.scale.examples, context.bench.calibration
    lines = [
        "# hmcam demo: white-box, black-box and the HMCAM sequence on Fashion-MNIST",
        "",
        f"The attacker crafts on `{SOURCE}` (clean accuracy {_percent(accuracy['source'])}); the same examples "
        f"are then sent to `{TARGET}` (clean accuracy {_percent(accuracy['target'])}), a network of another design "
        f"that the attacker never queried. L-inf eps = {calibration.chosen:.4g} (calibrated on held-out images, "
        f"see below), {examples} test images, {settings.budget} gradient evaluations per iterative attack "
        f"(HMCAM: S = 2 transitions of T = {settings.budget // 2} steps). Success counts among the images the "
        "attacked network classifies correctly.",
        "",
        *found,
        "",
        "## Five attacks, white-box and black-box",
        "",
        markdown_table(rows, COLUMNS),
        "## The HMCAM sequence as a Markov chain",
        "",
        f"{settings.chains} chains per image, {settings.samples} transitions of {settings.chain_steps} steps each, "
        f"on the first {min(settings.chain_images, examples)} images. Acceptance is the Metropolis-Hastings rate; "
        "distinct labels the classes an image's samples are predicted as; ESS and R-hat (rank-normalized, split "
        "chains) of each image's loss trace, median over images: R-hat near 1 means the chains agree.",
        "",
        markdown_table(sequence, SEQUENCE_COLUMNS),
        f"Machine-readable: `{RESULTS_FILE}`, `{TABLE_FILE}` (attacks), `{SEQUENCE_TABLE}` (chains), "
        f"`{CLAIMS_TABLE}` (claims).",
        "",
        calibration_markdown(calibration.to_dict()),
        "",
        "The claims below compare HMCAM with M-PGD per image (difference of success in points, one seed): "
        "estimate with its 95% bootstrap interval, sign-flip permutation p-value Holm-adjusted over both claims.",
    ]
    return "\n".join(lines)


def _success_figure(path: Path, rows: Sequence[dict[str, Any]], eps: float, examples: int) -> None:
    save_bar_chart(
        path,
        [row["attack"] for row in rows],
        {
            f"white-box ({SOURCE})": [row["white_box_success"] for row in rows],
            f"black-box ({TARGET})": [row["black_box_success"] for row in rows],
        },
        "success rate (%)",
        f"Fashion-MNIST, eps = {eps:.4g}, {examples} test images",
    )


def _grid_figure(path: Path, bench: DemoBench, adversarial: Tensor, eps: float) -> None:
    adversarial_prediction = predict(bench.source, adversarial)
    shown = first_changed(bench.clean_prediction, adversarial_prediction, 8)
    save_adversarial_grid(
        path,
        bench.images[shown],
        adversarial[shown],
        bench.clean_prediction[shown],
        adversarial_prediction[shown],
        bench.names,
        f"HMCAM (S=2, T=10), eps = {eps:.4g}",
    )


def _chain_figure(path: Path, bench: DemoBench, chain: Tensor) -> None:
    save_chain_grid(
        path,
        bench.images[:4],
        chain,
        predict(bench.source, chain, sample_dims=1),
        bench.names,
        "HMCAM sequence with momentum refresh: one row per image, one column per sample",
    )


def main_summary(result: dict[str, Any]) -> str:
    """The lines ``hmcam demo`` prints when the demo finishes: the tables, the findings, the claims, the page."""
    out = Path(result["out"])
    return (
        f"eps {result['eps']:.4g}, calibrated: white-box PGD closest to the paper's 92.7% on held-out images\n"
        f"{markdown_table(result['attacks'], COLUMNS)}\n{markdown_table(result['sequence'], SEQUENCE_COLUMNS)}\n"
        + "\n".join(result["findings"])
        + f"\n\n{claim_table(result['claims'])}\n"
        + f"\nreport page: {out / PAGE_FILE}\n"
        f"report:      {out / REPORT_FILE}\n"
        f"results:     {out / RESULTS_FILE}, {out / TABLE_FILE}, {out / SEQUENCE_TABLE}, {out / CLAIMS_TABLE}\n"
    )
