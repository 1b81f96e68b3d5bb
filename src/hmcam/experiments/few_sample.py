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
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmcam.attacks import ChainAttack
from hmcam.core.batching import fetch
from hmcam.core.validate import choose
from hmcam.data import load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.claims import Claim, Evidence, judge
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.setup import (
    AttackScale,
    adversarial_examples,
    bench,
    cache_file,
    claim_table,
    finish_experiment,
    image_differences,
    jobs,
)
from hmcam.reporting.figures import save_curve_panels
from hmcam.reporting.tables import markdown_table

#: The images d whose adversarial examples are mixed in (the paper: 50).
IMAGES = 50
#: Per scale: the sample counts S swept (the paper: 1 .. 100), the clean training images and fine-tuning epochs.
SIZES = {
    "smoke": ((1, 2), 256, 1),
    "small": ((1, 5, 20), 4000, 2),
    "paper": ((1, 2, 5, 10, 20, 50, 100), 50000, 5),
}
GENERATORS = ("fgsm", "ifgsm", "pgd", "hmcam")
LABELS = {"fgsm": "FGSM", "ifgsm": "BIM", "pgd": "PGD", "hmcam": "HMCAM", "clean": "clean only"}
#: The success curves.
FIGURE = "few_sample.png"
#: Non-inferiority margin, points of M-PGD success: the margin the comparison always had (within 2 points of
#: the others), small against the tens of points between clean-only and adversarial fine-tuning.
ROBUST_MARGIN = 2.0
#: Per (generator, S): M-PGD's hits on the retrained models and their clean-correct images ([seeds, images] each).
Outcomes: TypeAlias = dict[tuple[str, int], dict[str, Tensor]]
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
    """A copy of ``model`` trained further with SGD (momentum 0.9, batch 128) on ``images``, in a seeded order."""
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
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


def run_few_sample(scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run Fig. 4 at ``scale`` into ``out``: M-PGD success on each retrained model against S, curves and report."""
    folder = options.run_folder()
    setup = bench(scale, options)
    sweep, clean_count, epochs = choose("scale", scale.name, SIZES)
    largest = IMAGES * max(sweep)
    train = load_dataset(scale.dataset, "train", root=options.data_root, limit=clean_count + largest)
    images, labels = (t.to(setup.images.device) for t in fetch(train, range(len(train.labels))))
    # The clean subset and the images the attacks start from are disjoint: the first d S are attacked.
    pool_images, pool_labels = images[:largest], labels[:largest]
    clean_images, clean_labels = images[largest:], labels[largest:]
    source = setup.models[setup.sources[0]]

    def attacked(model: nn.Module, seed: int) -> tuple[Tensor, Tensor]:
        """M-PGD's hits (prediction not the label) per test image, and the images the model classifies correctly."""
        settings = scale.settings("mpgd", seed)
        crafted = adversarial_examples(model, settings, setup.images, setup.labels, scale.batch_size)
        return predict(model, crafted) != setup.labels, predict(model, setup.images) == setup.labels

    outcomes: Outcomes = {}
    runs = [("clean", 0)] + [(generator, samples) for generator in GENERATORS for samples in sweep]
    for generator, samples in jobs(runs, "few-sample", options.progress):

        def compute(generator: str = generator, samples: int = samples) -> dict[str, Tensor]:
            hits, correct = [], []
            for seed in scale.seeds:
                if generator == "clean":
                    extra_images, extra_labels = clean_images[:0], clean_labels[:0]
                else:
                    extra_images, extra_labels = adversarial_set(
                        source, scale, generator, samples, pool_images, pool_labels, seed
                    )
                mixed = torch.cat([clean_images, extra_images.to(clean_images.dtype)])
                tuned = fine_tune(source, mixed, torch.cat([clean_labels, extra_labels]), epochs=epochs, seed=seed)
                hit, right = attacked(tuned, seed)
                hits.append(hit.cpu())
                correct.append(right.cpu())
            return {"hits": torch.stack(hits), "correct": torch.stack(correct)}

        # Per-image outcomes (the claims' unit), under a name the earlier per-seed rates did not use.
        outcomes[(generator, samples)] = folder.cached(cache_file(f"{generator}-{samples}-images"), compute)
    success = {key: _success(found) for key, found in outcomes.items()}
    rows = [
        {"generator": LABELS[generator], "S": samples, "mpgd_success": round(success[(generator, samples)], 2)}
        for generator, samples in runs
    ]
    panels = {
        "M-PGD success on the retrained model": {
            LABELS[generator]: ([success[(generator, s)] for s in sweep], generator == "hmcam")
            for generator in GENERATORS
        }
    }
    save_curve_panels(
        folder.file(FIGURE),
        list(sweep),
        panels,
        xlabel="samples S (HMCAM: per image of d = 50; others: d S images)",
        ylabel="M-PGD success (%)",
        title=f"clean-only fine-tuning: {success[('clean', 0)]:.1f}%",
        log_x=True,
    )
    judged = claim_evidence(outcomes, sweep)
    claims = judge(judged)
    report = "\n".join(
        [
            "## Few samples (Fig. 4)",
            "",
            f"{scale.dataset}: source {setup.sources[0]} fine-tuned for {epochs} epoch(s) on {len(clean_images)} clean "
            f"training images plus the adversarial set; d = {IMAGES}; M-PGD (N = {scale.budget}, eps {scale.eps:.4g}) "
            f"success (%) on {scale.images} test images, seeds {list(scale.seeds)}. Lower is more robust. Each claim "
            f"is judged per test image, pooled over S and seeds, with a non-inferiority margin of {ROBUST_MARGIN:g} "
            "points.",
            "",
            markdown_table(rows, ["generator", "S", "mpgd_success"]),
            claim_table(claims),
            f"![few samples]({FIGURE})",
            "",
        ]
    )
    results = {"rows": rows, "claims": claims}
    return finish_experiment(folder, options, "few-sample", scale, results, (rows, list(rows[0])), report, judged)
