"""The embedded demo: what the paper is about, on Fashion-MNIST, in a few minutes on a CPU.

Two networks of different designs are trained (a small CNN, the *source*, and LeNet, the
*target*). eps is calibrated first, as in the experiments (:mod:`hmcam.experiments.calibration`):
PGD on held-out test images over :data:`GRID`, and the eps whose white-box success is closest to the
paper's 92.7% is used. Five attacks with the same gradient budget craft adversarial examples on the
source at that radius; each gets a white-box column (success on the
source) and a black-box column (the same examples sent to the target, which the attacker never
saw), and HMCAM also the success of *any* sample of its sequence. HMCAM's sequence is then drawn
with several chains per image, with and without momentum refresh, and diagnosed as a Markov chain:
acceptance, distinct labels reached, effective sample size and R-hat of the loss. The demo's claims
(:data:`CLAIMS`: HMCAM fools more images than M-PGD, white-box and black-box) are judged per image by
the claims engine (:func:`hmcam.experiments.claims.judge`). Everything ends in one run folder with a
self-contained ``report.html``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hmcam.data import ImageDataset, load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackRun, AttackSettings, run_attack
from hmcam.experiments.calibration import Calibration, choose_eps, pgd_success
from hmcam.experiments.claims import FIELDS as CLAIM_FIELDS
from hmcam.experiments.claims import Claim, Evidence, judge
from hmcam.experiments.setup import CLAIMS_TABLE, calibration_markdown, claim_table, image_differences
from hmcam.models import load_checkpoint
from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_bar_chart, save_chain_grid
from hmcam.reporting.run_folder import REPORT_FILE, RESULTS_FILE, TABLE_FILE, RunFolder
from hmcam.reporting.tables import markdown_table
from hmcam.training import TrainConfig, train
from hmcam.training.trainer import LAST_FILE

#: The eps grid of the calibration, and the held-out test images (after the attacked ones) it runs on.
GRID = (0.03, 0.05, 0.075, 0.1, 0.15)
CALIBRATION_IMAGES = 300
BUDGET = 20  # gradient evaluations for every iterative attack (HMCAM: S = 2 transitions of T = 10)
#: The two networks: the attacker's (white-box) and the one it never sees (black-box).
SOURCE, TARGET = "smallcnn", "lenet"
#: The HMCAM sequence drawn for the diagnostics: chains per image, transitions, steps per transition (the T
#: of the table's HMCAM), images.
CHAINS, SAMPLES, CHAIN_STEPS, CHAIN_IMAGES = 4, 10, BUDGET // 2, 200
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
#: The table of the HMCAM sequence, and the figures: success per attack, HMCAM's examples, one refreshed chain.
SEQUENCE_TABLE = "sequence.csv"
SUCCESS_FIGURE, GRID_FIGURE, CHAIN_FIGURE = "success.png", "grid.png", "chain.png"
#: The demo's claims: Table 2's ordering of HMCAM over M-PGD at the same gradient budget. The paper's numbers
#: are CIFAR-10's (eps 2/255): means over sources of the white-box column and over natural source/target pairs
#: of the black-box ones.
CLAIMS: dict[str, Claim] = {
    claim.name: claim
    for claim in (
        Claim(
            experiment="demo",
            name="hmcam-vs-mpgd-white",
            claim="HMCAM fools more than M-PGD at the same budget (white-box)",
            paper="+1.9 points (Table 2, CIFAR-10)",
            statistic=f"HMCAM minus M-PGD success on {SOURCE}, points, per image {SOURCE} classifies correctly",
            unit="images",
            direction="greater",
        ),
        Claim(
            experiment="demo",
            name="hmcam-vs-mpgd-black",
            claim="HMCAM transfers better than M-PGD at the same budget (black-box)",
            paper="+3.2 points (Table 2, CIFAR-10)",
            statistic=f"HMCAM minus M-PGD success on {TARGET} (examples crafted on {SOURCE}), points, per image "
            f"{TARGET} classifies correctly",
            unit="images",
            direction="greater",
        ),
    )
}
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


def demo_attacks(seed: int, eps: float) -> list[AttackSettings]:
    """FGSM, PGD, M-PGD, AI-FGSM and HMCAM at ``eps`` with the same gradient budget."""
    return [
        AttackSettings("fgsm", eps=eps, steps=1, seed=seed),
        AttackSettings("pgd", eps=eps, steps=BUDGET, seed=seed),
        AttackSettings("mpgd", eps=eps, steps=BUDGET, seed=seed),
        AttackSettings("aifgsm", eps=eps, steps=BUDGET, seed=seed),
        AttackSettings("hmcam", eps=eps, steps=BUDGET // 2, samples=2, seed=seed),
    ]


def calibrate_demo(models: dict[str, nn.Module], images: Tensor, labels: Tensor, start: int) -> Calibration:
    """PGD's success over :data:`GRID` on the held-out ``images`` (test indices from ``start``); eps chosen."""
    white, black = pgd_success(models, GRID, BUDGET, images, labels)
    held_out = (start, start + len(labels))
    return Calibration(GRID, tuple(white), tuple(black), choose_eps(GRID, white), held_out, BUDGET)


def _train(architecture: str, folder: Path, epochs: int, seed: int, options: dict[str, Any]) -> Any:
    config = TrainConfig(
        dataset="fashion-mnist",
        model=architecture,
        method="natural",
        epochs=epochs,
        batch_size=128,
        lr=0.05,
        schedule="cosine",
        seed=seed,
        eval_subset=200,
        eval_steps=10,
        out=str(folder),
        **options,
    )
    return train(config, resume=True)


def _rate(fooled: Tensor, eligible: Tensor) -> float:
    return float(fooled[eligible].float().mean()) if bool(eligible.any()) else float("nan")


def _any_fooled(model: nn.Module, samples: Tensor, labels: Tensor, sample_dims: int) -> Tensor:
    """Per image: whether any of its samples (the leading ``sample_dims`` dimensions) fools ``model``."""
    predictions = predict(model, samples, sample_dims=sample_dims)
    return (predictions != labels).flatten(0, sample_dims - 1).any(0)


def _hits(models: dict[str, nn.Module], run: AttackRun, labels: Tensor) -> dict[str, Tensor]:
    """Per role (``source``, ``target``): which images the attack's final examples fool on that network."""
    return {role: predict(model, run.adversarial) != labels for role, model in models.items()}


def _attack_row(
    run: AttackRun, hits: dict[str, Tensor], target: nn.Module, labels: Tensor, correct: dict[str, Tensor]
) -> dict[str, Any]:
    summary = run.summary
    row = {key: summary.get(key) for key in ("attack", "steps", "samples", "acceptance_rate", "mean_linf")}
    row["seconds"] = round(summary["seconds"], 2)
    # run_attack counts success among the images the attacked (source) model classifies correctly.
    row["white_box_success"] = summary["success_rate"]
    row["black_box_success"] = _rate(hits["target"], correct["target"])
    if run.samples is not None:
        row["any_sample_black_box"] = _rate(_any_fooled(target, run.samples, labels, 1), correct["target"])
    return row


def _sequence_row(
    name: str, refresh: float, run: AttackRun, target: nn.Module, labels: Tensor, correct: dict[str, Tensor]
) -> dict[str, Any]:
    assert run.samples is not None  # a chain attack keeps its samples unless streamed
    summary = run.summary
    return {
        "chain": name,
        "momentum_refresh": refresh,
        "acceptance_rate": summary["acceptance_rate"],
        "distinct_labels": summary["distinct_labels"],
        "loss_ess_median": summary["loss_ess_median"],
        "loss_rhat_median": summary["loss_rhat_median"],
        "white_box_success": summary["success_rate"],
        "any_sample_white_box": summary["any_sample_success_rate"],
        "any_sample_black_box": _rate(_any_fooled(target, run.samples, labels, 2), correct["target"]),
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


def judge_claims(hits: dict[str, dict[str, Tensor]], correct: dict[str, Tensor]) -> list[dict[str, Any]]:
    """The demo's :data:`CLAIMS` judged per image: white-box on the source's, black-box on the target's images."""
    hmcam, mpgd = hits["hmcam"], hits["mpgd"]
    return judge(
        [
            _claim_evidence(
                CLAIMS["hmcam-vs-mpgd-white"], "white-box", hmcam["source"], mpgd["source"], correct["source"]
            ),
            _claim_evidence(
                CLAIMS["hmcam-vs-mpgd-black"], "black-box", hmcam["target"], mpgd["target"], correct["target"]
            ),
        ]
    )


def _findings(rows: Sequence[dict[str, Any]], sequence: Sequence[dict[str, Any]]) -> list[str]:
    by_name = {row["attack"]: row for row in rows}
    hmcam, mpgd = by_name["hmcam"], by_name["mpgd"]
    paper, refreshed = sequence
    return [
        f"- White-box, HMCAM fools {_percent(hmcam['white_box_success'])} of the source's correctly classified "
        f"images against M-PGD's {_percent(mpgd['white_box_success'])} at the same {BUDGET} gradient evaluations.",
        f"- Black-box, on {TARGET} that the attacker never queried, its last sample fools "
        f"{_percent(hmcam['black_box_success'])} (M-PGD {_percent(mpgd['black_box_success'])}), and at least one "
        f"of its samples {_percent(hmcam['any_sample_black_box'])}.",
        f"- The sequence: the paper's chain accepts {_percent(paper['acceptance_rate'])} of its proposals; its "
        f"{CHAINS} chains per image reach {paper['distinct_labels']:.2f} labels on average, with loss R-hat "
        f"{paper['loss_rhat_median']:.3f} (1.00 when chains agree). With momentum refresh: acceptance "
        f"{_percent(refreshed['acceptance_rate'])}, {refreshed['distinct_labels']:.2f} labels, R-hat "
        f"{refreshed['loss_rhat_median']:.3f}; any sample of any chain transfers for "
        f"{_percent(refreshed['any_sample_black_box'])} of the images (paper's chain "
        f"{_percent(paper['any_sample_black_box'])}).",
    ]


def run_demo(
    out: str | Path = "runs/demo",
    *,
    examples: int = 1000,
    epochs: int = 2,
    seed: int = 0,
    data_root: str | None = None,
    train_limit: int | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) the two models, calibrate eps, run the attacks and the sequence, and write the run folder.

    The models are trained through the resumable trainer into ``out/source`` and ``out/target`` (on
    the first ``train_limit`` training images if given): a second run finds the finished runs and
    skips training, and a killed run continues where it stopped.
    """
    started = time.time()
    out = Path(out)
    options = {"data_root": data_root, "train_limit": train_limit, "progress": progress}
    trained = {
        role: _train(architecture, out / role, epochs, seed, options)
        for role, architecture in (("source", SOURCE), ("target", TARGET))
    }
    source, _ = load_checkpoint(out / "source" / LAST_FILE)
    target, _ = load_checkpoint(out / "target" / LAST_FILE)
    test = load_dataset("fashion-mnist", split="test", root=data_root, limit=examples + calibration_images)
    assert isinstance(test, ImageDataset)  # Fashion-MNIST is held in memory
    if len(test.labels) < examples + calibration_images:
        raise ValueError(f"the demo needs {examples} + {calibration_images} test images; the test set has fewer")
    images, labels = test.images[:examples], test.labels[:examples]
    calibration = calibrate_demo(
        {SOURCE: source, TARGET: target}, test.images[examples:], test.labels[examples:], examples
    )
    eps = calibration.chosen
    clean_prediction = predict(source, images)
    correct = {"source": clean_prediction == labels, "target": predict(target, images) == labels}
    rows, runs, hits = [], {}, {}
    for settings in demo_attacks(seed, eps):
        runs[settings.name] = run = run_attack(source, settings, images, labels, progress=progress)
        hits[settings.name] = _hits({"source": source, "target": target}, run, labels)
        rows.append(_attack_row(run, hits[settings.name], target, labels, correct))
    claims = judge_claims(hits, correct)
    subset = slice(0, min(CHAIN_IMAGES, examples))
    chain_correct = {role: flags[subset] for role, flags in correct.items()}
    sequence = []
    chain_runs = {}
    for name, refresh in (("paper's chain", 0.0), ("momentum refresh", 1.0)):
        settings = AttackSettings(
            "hmcam", eps=eps, steps=CHAIN_STEPS, samples=SAMPLES, chains=CHAINS, momentum_refresh=refresh, seed=seed
        )
        chain_runs[name] = run = run_attack(source, settings, images[subset], labels[subset], progress=progress)
        sequence.append(_sequence_row(name, refresh, run, target, labels[subset], chain_correct))
    names = list(test.info.class_names or [str(i) for i in range(test.info.num_classes)])
    folder = RunFolder(out, "demo", started=started, device=str(images.device))
    _figures(folder, eps, source, images, clean_prediction, runs["hmcam"], chain_runs["momentum refresh"], rows, names)
    config = {
        "dataset": "fashion-mnist",
        "source": SOURCE,
        "target": TARGET,
        "epochs": epochs,
        "examples": examples,
        "eps_grid": list(GRID),
        "calibration_images": calibration_images,
        "budget": BUDGET,
        "seed": seed,
        "sequence": {"chains": CHAINS, "samples": SAMPLES, "steps": CHAIN_STEPS, "images": CHAIN_IMAGES},
    }
    folder.write_config(config)
    folder.write_table(rows, COLUMNS)
    folder.write_table(sequence, SEQUENCE_COLUMNS, SEQUENCE_TABLE)
    folder.write_table(claims, CLAIM_FIELDS, CLAIMS_TABLE)
    accuracy = {role: float(flags.float().mean()) for role, flags in correct.items()}
    findings = _findings(rows, sequence)
    folder.write_results(
        {
            "eps": eps,
            "calibration": calibration.to_dict(),
            "attacks": rows,
            "sequence": sequence,
            "clean_accuracy": accuracy,
            "training": trained,
            "claims": claims,
        }
    )
    report = [
        "# hmcam demo: white-box, black-box and the HMCAM sequence on Fashion-MNIST",
        "",
        f"The attacker crafts on `{SOURCE}` (clean accuracy {_percent(accuracy['source'])}); the same examples "
        f"are then sent to `{TARGET}` (clean accuracy {_percent(accuracy['target'])}), a network of another design "
        f"that the attacker never queried. L-inf eps = {eps:.4g} (calibrated on held-out images, see the end), "
        f"{examples} test images, {BUDGET} gradient evaluations per iterative attack (HMCAM: S = 2 transitions of "
        "T = 10 steps). Success counts among the images the attacked network classifies correctly.",
        "",
        *findings,
        "",
        "## The claims",
        "",
        "HMCAM against M-PGD per image (difference of success in points, one seed): estimate with its 95% "
        "bootstrap interval, sign-flip permutation p-value Holm-adjusted over both claims.",
        "",
        claim_table(claims),
        "",
        "## Five attacks, white-box and black-box",
        "",
        markdown_table(rows, COLUMNS),
        f"![white-box and black-box success]({SUCCESS_FIGURE})",
        "",
        f"![HMCAM examples]({GRID_FIGURE})",
        "",
        "## The HMCAM sequence as a Markov chain",
        "",
        f"{CHAINS} chains per image, {SAMPLES} transitions of {CHAIN_STEPS} steps each, on the first "
        f"{min(CHAIN_IMAGES, examples)} images. Acceptance is the Metropolis-Hastings rate; distinct labels the "
        "classes an image's samples are predicted as; ESS and R-hat (rank-normalized, split chains) of each "
        "image's loss trace, median over images: R-hat near 1 means the chains agree.",
        "",
        markdown_table(sequence, SEQUENCE_COLUMNS),
        f"![a chain with momentum refresh]({CHAIN_FIGURE})",
        "",
        f"Machine-readable: `{RESULTS_FILE}`, `{TABLE_FILE}` (attacks), `{SEQUENCE_TABLE}` (chains), "
        f"`{CLAIMS_TABLE}` (claims).",
        "",
        calibration_markdown(calibration.to_dict()),
    ]
    page = folder.write_report("\n".join(report))
    return {
        "out": str(out),
        "eps": eps,
        "records": rows,
        "sequence": sequence,
        "claims": claims,
        "findings": findings,
        "page": str(page),
    }


def _figures(
    folder: RunFolder,
    eps: float,
    source: nn.Module,
    images: Tensor,
    clean_prediction: Tensor,
    hmcam: AttackRun,
    chain: AttackRun,
    rows: Sequence[dict[str, Any]],
    names: list[str],
) -> None:
    save_bar_chart(
        folder.file(SUCCESS_FIGURE),
        [row["attack"] for row in rows],
        {
            f"white-box ({SOURCE})": [row["white_box_success"] for row in rows],
            f"black-box ({TARGET})": [row["black_box_success"] for row in rows],
        },
        "success rate (%)",
        f"Fashion-MNIST, eps = {eps:.4g}, {len(images)} test images",
    )
    adversarial_prediction = predict(source, hmcam.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    save_adversarial_grid(
        folder.file(GRID_FIGURE),
        images[shown],
        hmcam.adversarial[shown],
        clean_prediction[shown],
        adversarial_prediction[shown],
        names,
        f"HMCAM (S=2, T=10), eps = {eps:.4g}",
    )
    assert chain.samples is not None
    first_chain = chain.samples[:, 0, :4]  # [S, C, B, ...]: the first chain of the first four images
    save_chain_grid(
        folder.file(CHAIN_FIGURE),
        images[:4],
        first_chain,
        predict(source, first_chain, sample_dims=1),
        names,
        "HMCAM sequence with momentum refresh: one row per image, one column per sample",
    )


def main_summary(result: dict[str, Any]) -> str:
    """The lines the command prints when the demo finishes: the tables, the findings, the claims, the page."""
    out = Path(result["out"])
    return (
        f"eps {result['eps']:.4g}, calibrated: white-box PGD closest to the paper's 92.7% on held-out images\n"
        f"{markdown_table(result['records'], COLUMNS)}\n{markdown_table(result['sequence'], SEQUENCE_COLUMNS)}\n"
        + "\n".join(result["findings"])
        + f"\n\n{claim_table(result['claims'])}\n"
        + f"\nreport page: {result['page']}\n"
        f"report:      {out / REPORT_FILE}\n"
        f"results:     {out / RESULTS_FILE}, {out / TABLE_FILE}, {out / SEQUENCE_TABLE}, {out / CLAIMS_TABLE}\n"
    )
