"""The embedded demo: what the paper is about, on Fashion-MNIST, in a few minutes on a CPU.

Two networks of different designs are trained (a small CNN, the *source*, and LeNet, the
*target*). eps is calibrated first, as in the experiments (:mod:`hmcam.experiments.calibration`):
PGD on held-out test images over the settings' grid, and the eps whose white-box success is closest to
the paper's 92.7% is used. Five attacks with the same gradient budget craft adversarial examples on the
source at that radius; each gets a white-box column (success on the
source) and a black-box column (the same examples sent to the target, which the attacker never
saw), and HMCAM also the success of *any* sample of its sequence. HMCAM's sequence is then drawn
with several chains per image, with and without momentum refresh, and diagnosed as a Markov chain:
acceptance, distinct labels reached, effective sample size and R-hat of the loss. The demo's claims
(:data:`CLAIMS`: HMCAM fools more images than M-PGD, white-box and black-box) are judged per image by
the claims engine (:func:`hmcam.experiments.claims.judge`). Everything ends in one run folder with a
self-contained ``report.html``; its tables, figures and text are :mod:`hmcam.experiments.demo_report`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from hmcam.data import ImageDataset, load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackSettings, run_attack
from hmcam.experiments.calibration import Calibration, choose_eps, pgd_success
from hmcam.experiments.claims import Claim
from hmcam.experiments.demo_report import (
    SEQUENCES,
    SOURCE,
    TARGET,
    DemoBench,
    DemoJob,
    DemoScale,
    Settings,
    demo_summary,
)
from hmcam.experiments.demo_report import main_summary as main_summary
from hmcam.experiments.framework import Context, Experiment, RunOptions, Summary
from hmcam.models import load_checkpoint
from hmcam.training import TrainConfig, train
from hmcam.training.trainer import LAST_FILE

#: The sizes the demo runs at: ``smoke`` for the tests, ``small`` what ``hmcam demo`` runs (its flags replace
#: fields of it).
SCALES = {
    "smoke": DemoScale("smoke", examples=32, epochs=1, seed=0, train_limit=1000, calibration_images=64),
    "small": DemoScale("small", examples=1000, epochs=2, seed=0, train_limit=None, calibration_images=300),
}
#: The demo's design, the same at every scale: eps grid, gradient budget (HMCAM: S = 2 transitions of T =
#: budget / 2), and the HMCAM sequence drawn for the diagnostics.
DESIGN = Settings(
    grid=(0.03, 0.05, 0.075, 0.1, 0.15), budget=20, chains=4, samples=10, chain_steps=10, chain_images=200
)
SETTINGS = dict.fromkeys(SCALES, DESIGN)
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
#: The run summary fields a job keeps (as 0-d tensors), those it lacks being None.
SUMMARY_FIELDS = (
    "steps",
    "samples",
    "acceptance_rate",
    "distinct_labels",
    "loss_ess_median",
    "loss_rhat_median",
    "success_rate",
    "any_sample_success_rate",
    "mean_linf",
    "seconds",
)

DemoContext: TypeAlias = Context[DemoScale, Settings, DemoBench]


def demo_attacks(seed: int, eps: float, budget: int) -> list[AttackSettings]:
    """FGSM, PGD, M-PGD, AI-FGSM and HMCAM at ``eps`` with the same gradient ``budget``."""
    return [
        AttackSettings("fgsm", eps=eps, steps=1, seed=seed),
        AttackSettings("pgd", eps=eps, steps=budget, seed=seed),
        AttackSettings("mpgd", eps=eps, steps=budget, seed=seed),
        AttackSettings("aifgsm", eps=eps, steps=budget, seed=seed),
        AttackSettings("hmcam", eps=eps, steps=budget // 2, samples=2, seed=seed),
    ]


def calibrate_demo(
    models: dict[str, nn.Module], images: Tensor, labels: Tensor, start: int, settings: Settings
) -> Calibration:
    """PGD's success over the settings' grid on the held-out ``images`` (test indices from ``start``); eps chosen."""
    white, black = pgd_success(models, settings.grid, settings.budget, images, labels)
    held_out = (start, start + len(labels))
    return Calibration(
        settings.grid, tuple(white), tuple(black), choose_eps(settings.grid, white), held_out, settings.budget
    )


def _train(architecture: str, role: str, scale: DemoScale, options: RunOptions) -> Any:
    config = TrainConfig(
        dataset="fashion-mnist",
        model=architecture,
        method="natural",
        epochs=scale.epochs,
        batch_size=128,
        lr=0.05,
        schedule="cosine",
        seed=scale.seed,
        eval_subset=200,
        eval_steps=10,
        out=str(options.out / role),
        data_root=options.data_root,
        train_limit=scale.train_limit,
        progress=options.progress,
    )
    return train(config, resume=True)


def prepare(scale: DemoScale, settings: Settings, options: RunOptions) -> DemoBench:
    """Train (or reuse) the two models, load the attacked and the held-out test images, calibrate eps.

    The models are trained through the resumable trainer into ``out/source`` and ``out/target`` (on
    the first ``train_limit`` training images if given): a second run finds the finished runs and
    skips training, and a killed run continues where it stopped.
    """
    training = {
        role: _train(architecture, role, scale, options)
        for role, architecture in (("source", SOURCE), ("target", TARGET))
    }
    source, _ = load_checkpoint(options.out / "source" / LAST_FILE)
    target, _ = load_checkpoint(options.out / "target" / LAST_FILE)
    examples, held_out = scale.examples, scale.calibration_images
    test = load_dataset("fashion-mnist", split="test", root=options.data_root, limit=examples + held_out)
    assert isinstance(test, ImageDataset)  # Fashion-MNIST is held in memory
    if len(test.labels) < examples + held_out:
        raise ValueError(f"the demo needs {examples} + {held_out} test images; the test set has fewer")
    images, labels = test.images[:examples], test.labels[:examples]
    calibration = calibrate_demo(
        {SOURCE: source, TARGET: target}, test.images[examples:], test.labels[examples:], examples, settings
    )
    clean_prediction = predict(source, images)
    correct = {"source": clean_prediction == labels, "target": predict(target, images) == labels}
    names = list(test.info.class_names or [str(i) for i in range(test.info.num_classes)])
    return DemoBench(source, target, images, labels, clean_prediction, correct, calibration, training, names)


def jobs(context: DemoContext) -> list[DemoJob]:
    """The five attacks on every image, then HMCAM's sequence without and with momentum refresh."""
    eps, seed, settings = context.bench.calibration.chosen, context.scale.seed, context.settings
    attacks = [DemoJob(attack.name, attack) for attack in demo_attacks(seed, eps, settings.budget)]
    sequences = [
        DemoJob(
            key,
            AttackSettings(
                "hmcam",
                eps=eps,
                steps=settings.chain_steps,
                samples=settings.samples,
                chains=settings.chains,
                momentum_refresh=refresh,
                seed=seed,
            ),
            chain=name,
        )
        for key, (name, refresh) in SEQUENCES.items()
    ]
    return attacks + sequences


def key(job: DemoJob) -> str:
    """The job's cache name: the attack, or ``sequence-paper`` / ``sequence-refresh``."""
    return job.key


def _scalar(value: int | float) -> Tensor:
    return torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64)


def compute(job: DemoJob, context: DemoContext) -> dict[str, Tensor]:
    """Run the job's attack on the source and keep what the tables and claims need, as tensors.

    An attack keeps which images its examples fool on each network (``source``, ``target``) and the
    examples; a chain attack also which images any of its samples fools on the target; a sequence
    (the first ``chain_images`` images) also the first chain of the first four images, for the figure.
    """
    bench = context.bench
    count = len(bench.labels) if job.chain is None else min(context.settings.chain_images, len(bench.labels))
    images, labels = bench.images[:count], bench.labels[:count]
    run = run_attack(bench.source, job.attack, images, labels, progress=context.options.progress)
    outcome = {name: _scalar(run.summary[name]) for name in SUMMARY_FIELDS if run.summary.get(name) is not None}
    if job.chain is None:
        outcome["source"] = predict(bench.source, run.adversarial) != labels
        outcome["target"] = predict(bench.target, run.adversarial) != labels
        outcome["adversarial"] = run.adversarial
    if run.samples is not None:
        sample_dims = 1 if job.attack.chains == 1 else 2
        predictions = predict(bench.target, run.samples, sample_dims=sample_dims)
        outcome["any_sample_target"] = (predictions != labels).flatten(0, sample_dims - 1).any(0)
        if job.chain is not None:
            outcome["chain"] = run.samples[:, 0, :4]  # [S, C, B, ...]: the first chain of the first four images
    return outcome


def summarize(context: DemoContext, outcomes: Mapping[DemoJob, Mapping[str, Any]]) -> Summary:
    """The attack and sequence tables, the figures, the claims' evidence and the report text."""
    return demo_summary(context, outcomes, CLAIMS)


#: The demo on the framework protocol (run by ``hmcam demo`` at the small scale).
EXPERIMENT = Experiment(
    name="demo",
    scales=SCALES,
    settings=SETTINGS,
    claims=CLAIMS,
    prepare=prepare,
    jobs=jobs,
    key=key,
    compute=compute,
    summarize=summarize,
)
