"""Fig. 4: adversarial training data from few images. HMCAM's S samples of d images against d S images of others.

Section 5.4.3: adversarial examples of d = 50 training images, S samples each from one HMCAM chain
(N = S T), against one example each of d' = d S training images from FGSM, BIM (I-FGSM) and PGD,
crafted on the naturally trained source model. Each set is mixed into a fixed clean training subset
and the source model is fine-tuned on the mixture (:func:`fine_tune`, seeded); the retrained model
is then attacked by M-PGD on the test images. Lower M-PGD success is more robust; the paper's claim
is that HMCAM's d images reach the robustness the others need d S images for: one non-inferiority
claim per other generator, judged per test image (:mod:`hmcam.experiments.claims`), pooled over S and seeds.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmcam.attacks import ChainAttack
from hmcam.core.batching import fetch
from hmcam.data import load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.claims import Claim, Evidence
from hmcam.experiments.framework import Context, Summary
from hmcam.experiments.setup import AttackScale, Bench, adversarial_examples, image_differences
from hmcam.experiments.zoo_experiment import attack_experiment
from hmcam.reporting.figures import save_curve_panels
from hmcam.reporting.tables import markdown_table

#: The images d whose adversarial examples are mixed in (the paper: 50).
IMAGES = 50


@dataclass(frozen=True)
class Settings:
    """Fig. 4 at one scale: the sample counts S swept (the paper: 1 .. 100), the clean training images, the epochs."""

    sweep: tuple[int, ...]
    clean: int
    epochs: int


#: The settings per scale.
SETTINGS = {
    "smoke": Settings(sweep=(1, 2), clean=256, epochs=1),
    "small": Settings(sweep=(1, 5, 20), clean=4000, epochs=2),
    "paper": Settings(sweep=(1, 2, 5, 10, 20, 50, 100), clean=50000, epochs=5),
}
GENERATORS = ("fgsm", "ifgsm", "pgd", "hmcam")
LABELS = {"fgsm": "FGSM", "ifgsm": "BIM", "pgd": "PGD", "hmcam": "HMCAM", "clean": "clean only"}
#: The success curves.
FIGURE = "few_sample.png"
#: Non-inferiority margin, points of M-PGD success: the margin the comparison always had (within 2 points of
#: the others), small against the tens of points between clean-only and adversarial fine-tuning.
ROBUST_MARGIN = 2.0
#: Per (generator, S): M-PGD's hits on the retrained models and their clean-correct images ([seeds, images] each).
Outcomes: TypeAlias = Mapping[tuple[str, int], Mapping[str, Tensor]]
#: The claims of Fig. 4, declared before any run: HMCAM's d images against each other generator's d S images.
CLAIMS = {
    claim.name: claim
    for claim in (
        Claim(
            experiment="few-sample",
            name=f"robust-as-{generator}",
            claim=f"HMCAM's samples of d images make the model as robust as {LABELS[generator]}'s d S images (Fig. 4)",
            paper="comparable with two orders of magnitude fewer natural images",
            statistic=f"{LABELS[generator]} minus HMCAM M-PGD success on the retrained models, points, per test "
            "image averaged over S and seeds, among the images both retrained models classify correctly "
            "(above 0: HMCAM's model is the more robust)",
            unit="images",
            direction="noninferior",
            margin=ROBUST_MARGIN,
        )
        for generator in GENERATORS
        if generator != "hmcam"
    )
}


def fine_tune(
    model: nn.Module, images: Tensor, labels: Tensor, *, epochs: int, seed: int, lr: float = 0.01
) -> nn.Module:
    """A copy of ``model`` trained further with SGD (momentum 0.9, batch 128) on ``images``, seeded throughout.

    The batch order and the dropout masks both follow ``seed``: dropout draws from torch's global
    generator, so it is seeded inside a forked state, leaving the caller's random state untouched.
    """
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(epochs):
            for batch in torch.split(torch.randperm(len(images), generator=generator), 128):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(tuned(images[batch]), labels[batch]).backward()  # type: ignore[no-untyped-call]
                optimizer.step()
    return tuned.eval()


def adversarial_set(
    model: nn.Module, scale: AttackScale, generator: str, samples: int, images: Tensor, labels: Tensor, seed: int
) -> tuple[Tensor, Tensor]:
    """HMCAM: S samples of each of the first d images; the others: one example of each of the first d S images."""
    if generator == "hmcam":
        steps = max(1, scale.budget // samples)
        attack = scale.settings("hmcam", seed, steps=steps, samples=samples).build(model)
        assert isinstance(attack, ChainAttack)
        drawn = attack.sample(images[:IMAGES], labels[:IMAGES]).samples  # [S, d, ...]
        return drawn.flatten(0, 1), labels[:IMAGES].repeat(samples)
    count = IMAGES * samples
    crafted = adversarial_examples(
        model, scale.settings(generator, seed), images[:count], labels[:count], scale.batch_size
    )
    return crafted, labels[:count]


def _success(found: dict[str, Tensor]) -> float:
    """M-PGD success (%) among each seed's clean-correct images, averaged over seeds."""
    hits, correct = found["hits"].bool(), found["correct"].bool()
    return 100 * statistics.fmean(float(hits[i][correct[i]].float().mean()) for i in range(len(hits)))


def claim_evidence(outcomes: Outcomes, sweep: tuple[int, ...]) -> list[Evidence]:
    """Per other generator: its minus HMCAM's M-PGD success per test image (points), pooled over S and seeds."""
    evidence = []
    for generator in (g for g in GENERATORS if g != "hmcam"):
        pairs = []
        for samples in sweep:
            theirs, hmcam = outcomes[(generator, samples)], outcomes[("hmcam", samples)]
            for i in range(len(hmcam["hits"])):
                # One pair per (S, seed): an image counts where both retrained models classify it correctly.
                eligible = theirs["correct"][i].bool() & hmcam["correct"][i].bool()
                pairs.append((theirs["hits"][i : i + 1], hmcam["hits"][i : i + 1], eligible))
        differences = image_differences(pairs)
        claim = CLAIMS[f"robust-as-{generator}"]
        if differences.numel() == 0:
            reason = "no test image is classified correctly by both retrained models"
            evidence.append(claim.evidence(ours="no image counted", untestable=reason))
            continue
        sentence = (
            f"{float(differences.mean()):+.2f} points per image ({LABELS[generator]} minus HMCAM, over S and seeds)"
        )
        evidence.append(claim.evidence(differences.numpy(), ours=sentence))
    return evidence


#: A job: the generator of the adversarial set (``clean``: none) and S (0 for ``clean``).
Job: TypeAlias = tuple[str, int]


def few_sample_jobs(context: Context[AttackScale, Settings, Bench]) -> list[Job]:
    """Clean-only fine-tuning, then every generator at every S."""
    return [("clean", 0)] + [(generator, samples) for generator in GENERATORS for samples in context.settings.sweep]


def training_split(context: Context[AttackScale, Settings, Bench]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The images the attacks start from (the first d max(S) training images) and the disjoint clean subset after them.

    Returns pool images, pool labels, clean images, clean labels, on the device of the attacked images.
    """
    setup, settings = context.bench, context.settings
    largest = IMAGES * max(settings.sweep)
    train = load_dataset(context.scale.dataset, "train", root=context.options.data_root, limit=settings.clean + largest)
    images, labels = (t.to(setup.images.device) for t in fetch(train, range(len(train.labels))))
    return images[:largest], labels[:largest], images[largest:], labels[largest:]


def attacked(model: nn.Module, context: Context[AttackScale, Settings, Bench], seed: int) -> tuple[Tensor, Tensor]:
    """M-PGD's hits (prediction not the label) per test image, and the images the model classifies correctly."""
    scale, setup = context.scale, context.bench
    crafted = adversarial_examples(model, scale.settings("mpgd", seed), setup.images, setup.labels, scale.batch_size)
    return predict(model, crafted) != setup.labels, predict(model, setup.images) == setup.labels


def compute_retrained(job: Job, context: Context[AttackScale, Settings, Bench]) -> dict[str, Tensor]:
    """Fine-tune the source on the clean subset plus the job's adversarial set, per seed, then attack it with M-PGD.

    Returns ``hits`` and ``correct`` ([seeds, test images] each): the images M-PGD fools and those the
    retrained model classifies correctly.
    """
    generator, samples = job
    scale = context.scale
    pool_images, pool_labels, clean_images, clean_labels = training_split(context)
    source = context.bench.models[context.bench.sources[0]]
    hits, correct = [], []
    for seed in scale.seeds:
        if generator == "clean":
            extra_images, extra_labels = clean_images[:0], clean_labels[:0]
        else:
            extra_images, extra_labels = adversarial_set(
                source, scale, generator, samples, pool_images, pool_labels, seed
            )
        mixed = torch.cat([clean_images, extra_images.to(clean_images.dtype)])
        labels = torch.cat([clean_labels, extra_labels])
        tuned = fine_tune(source, mixed, labels, epochs=context.settings.epochs, seed=seed)
        hit, right = attacked(tuned, context, seed)
        hits.append(hit.cpu())
        correct.append(right.cpu())
    return {"hits": torch.stack(hits), "correct": torch.stack(correct)}


def summarize_few_sample(context: Context[AttackScale, Settings, Bench], outcomes: Mapping[Job, Any]) -> Summary:
    """M-PGD success on each retrained model against S, the curves and the claims' evidence."""
    scale, settings = context.scale, context.settings
    sweep, clean = settings.sweep, len(training_split(context)[2])  # fewer than asked where the split runs out
    success = {job: _success(found) for job, found in outcomes.items()}
    rows = [
        {"generator": LABELS[generator], "S": samples, "mpgd_success": round(success[(generator, samples)], 2)}
        for generator, samples in few_sample_jobs(context)
    ]
    panels = {
        "M-PGD success on the retrained model": {
            LABELS[generator]: ([success[(generator, s)] for s in sweep], generator == "hmcam")
            for generator in GENERATORS
        }
    }
    text = "\n".join(
        [
            "## Few samples (Fig. 4)",
            "",
            f"{scale.dataset}: source {context.bench.sources[0]} fine-tuned for {settings.epochs} epoch(s) on "
            f"{clean} clean training images plus the adversarial set; d = {IMAGES}; M-PGD "
            f"(N = {scale.budget}, eps {scale.eps:.4g}) success (%) on {scale.images} test images, seeds "
            f"{list(scale.seeds)}. Lower is more robust. Each claim is judged per test image, pooled over S and "
            f"seeds, with a non-inferiority margin of {ROBUST_MARGIN:g} points.",
            "",
            markdown_table(rows, ["generator", "S", "mpgd_success"]),
        ]
    )
    return Summary(
        rows=rows,
        columns=["generator", "S", "mpgd_success"],
        text=text,
        evidence=claim_evidence(outcomes, sweep),
        figures={
            FIGURE: lambda path: save_curve_panels(
                path,
                list(sweep),
                panels,
                xlabel=f"samples S (HMCAM: per image of d = {IMAGES}; others: d S images)",
                ylabel="M-PGD success (%)",
                title=f"clean-only fine-tuning: {success[('clean', 0)]:.1f}%",
                log_x=True,
            )
        },
    )


#: Fig. 4 on the protocol of :mod:`hmcam.experiments.framework`.
EXPERIMENT = attack_experiment(
    name="few-sample",
    settings=SETTINGS,
    claims=CLAIMS,
    jobs=few_sample_jobs,
    # Per-image outcomes (the claims' unit), under a name the earlier per-seed rates did not use.
    key=lambda job: f"{job[0]}-{job[1]}-images",
    compute=compute_retrained,
    summarize=summarize_few_sample,
)
