"""The embedded demo: train a small CNN on Fashion-MNIST, attack 1000 test images, write a report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hmcam.data import ImageDataset, load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackSettings, run_attack
from hmcam.models import load_checkpoint
from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_bar_chart, save_chain_grid
from hmcam.reporting.tables import markdown_table, write_csv
from hmcam.storage import atomic_write, atomic_write_json
from hmcam.training import TrainConfig, train

EPS = 0.1
BUDGET = 20  # gradient evaluations for every iterative attack (HMCAM: S = 2 transitions of T = 10)
COLUMNS = (
    "attack",
    "steps",
    "samples",
    "success_rate",
    "robust_accuracy",
    "acceptance_rate",
    "any_sample_success_rate",
    "mean_linf",
    "seconds",
)


def demo_attacks(seed: int) -> list[AttackSettings]:
    """FGSM, PGD, M-PGD, AI-FGSM and HMCAM at eps = 0.1 with the same gradient budget."""
    return [
        AttackSettings("fgsm", eps=EPS, steps=1, seed=seed),
        AttackSettings("pgd", eps=EPS, steps=BUDGET, seed=seed),
        AttackSettings("mpgd", eps=EPS, steps=BUDGET, seed=seed),
        AttackSettings("aifgsm", eps=EPS, steps=BUDGET, seed=seed),
        AttackSettings("hmcam", eps=EPS, steps=BUDGET // 2, samples=2, seed=seed),
    ]


def run_demo(
    out: str | Path = "runs/demo",
    *,
    examples: int = 1000,
    epochs: int = 2,
    seed: int = 0,
    data_root: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) the demo model, run the attacks, and write results, figures and ``report.md``.

    The model is trained through the resumable trainer into ``out/model``: a second run finds the
    finished run and skips training, and a killed run continues where it stopped.
    """
    out = Path(out)
    config = TrainConfig(
        dataset="fashion-mnist",
        model="smallcnn",
        method="natural",
        epochs=epochs,
        batch_size=128,
        lr=0.05,
        schedule="cosine",
        seed=seed,
        data_root=data_root,
        eval_subset=200,
        eval_steps=10,
        out=str(out / "model"),
        progress=progress,
    )
    started = time.perf_counter()
    training = train(config, resume=True)
    model, metadata = load_checkpoint(out / "model" / "last.safetensors")
    test = load_dataset("fashion-mnist", split="test", root=data_root, limit=examples)
    assert isinstance(test, ImageDataset)  # Fashion-MNIST is held in memory
    images, labels = test.images, test.labels
    records = []
    runs = {}
    for settings in demo_attacks(seed):
        run = run_attack(model, settings, images, labels, progress=progress)
        runs[settings.name] = run
        records.append(run.summary)
    names = test.info.class_names
    write_csv(out / "results.csv", records, COLUMNS)
    atomic_write_json(out / "results.json", {"training": training, "attacks": records, "model": metadata})
    save_bar_chart(
        out / "success.png",
        [r["attack"] for r in records],
        [r["success_rate"] for r in records],
        "success rate",
        f"Fashion-MNIST, smallcnn, eps = {EPS}, {examples} test images",
    )
    hmcam = runs["hmcam"]
    assert hmcam.samples is not None  # HMCAM is a chain attack, so its run keeps the samples
    clean_prediction = predict(model, images)
    adversarial_prediction = predict(model, hmcam.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    save_adversarial_grid(
        out / "grid.png",
        images[shown],
        hmcam.adversarial[shown],
        clean_prediction[shown],
        adversarial_prediction[shown],
        names,
        f"HMCAM (S=2, T=10), eps = {EPS}",
    )
    save_chain_grid(
        out / "chain.png",
        images[shown[:4]],
        hmcam.samples[:, shown[:4]],
        predict(model, hmcam.samples[:, shown[:4]], sample_dims=1),
        names,
        "HMCAM chain: one row per image",
    )
    final = training["final"]
    report = [
        "# hmcam demo: Fashion-MNIST\n",
        f"Model: `smallcnn`, {training['epochs']} epochs of natural training "
        f"(clean test accuracy {final['clean_accuracy']:.3f}).",
        f"Attacks: L-inf, eps = {EPS}, {examples} test images, {BUDGET} gradient evaluations for every iterative "
        "attack (HMCAM: S = 2 transitions of T = 10 steps). "
        "Success rate counts the images the model classified correctly.\n",
        markdown_table(records, COLUMNS),
        "![success rates](success.png)\n",
        "![HMCAM examples](grid.png)\n",
        "![HMCAM chains](chain.png)\n",
        f"Total time: {time.perf_counter() - started:.0f} s. "
        "Machine-readable results: `results.json`, `results.csv`.\n",
    ]
    atomic_write(out / "report.md", "\n".join(report).encode())
    return {"out": str(out), "records": records, "training": training}


def main_summary(result: dict[str, Any]) -> str:
    """The lines the command prints when the demo finishes."""
    out = Path(result["out"])
    table = markdown_table(result["records"], COLUMNS)
    return (
        f"{table}\n"
        f"report:  {out / 'report.md'}\n"
        f"results: {out / 'results.json'}, {out / 'results.csv'}\n"
        f"figures: {out / 'grid.png'}, {out / 'chain.png'}, {out / 'success.png'}\n" + json.dumps({"out": str(out)})
    )
