"""Run one attack over a dataset in batches and summarize it (success, acceptance, norms, time)."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hmcam.attacks import Attack, ChainAttack, attack_mode, get_attack
from hmcam.attacks.norms import NORMS
from hmcam.core.storage import save_tensors
from hmcam.evaluation import predict
from hmcam.evaluation.sampling import ChainDiagnostics, diagnose


@dataclass(frozen=True)
class AttackSettings:
    """What to run: an attack name from :data:`hmcam.attacks.ATTACKS` and its hyper-parameters.

    ``steps`` is the attack's T; for chain attacks (HMCAM, HMC) ``samples`` is S, so N = S * T,
    ``chains`` is C, the chains per example, and ``momentum_refresh`` HMCAM's random initial
    momentum (0: the paper's chain). Options the attack does not take (``samples`` for PGD, say) are
    not passed to it; ``options`` holds any further keyword arguments of the attack class.
    """

    name: str
    eps: float = 0.1
    steps: int = 10
    samples: int = 1
    chains: int = 1
    momentum_refresh: float = 0.0
    alpha: float | None = None
    norm: str = "linf"
    targeted: bool = False
    seed: int = 0
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, model: nn.Module) -> Attack:
        """Instantiate the attack for ``model``, passing only the arguments its class accepts."""
        attack_class = get_attack(self.name)
        accepted: set[str] = set()
        for klass in attack_class.__mro__:
            if "__init__" in vars(klass):
                accepted |= set(inspect.signature(vars(klass)["__init__"]).parameters)
        wanted = {
            "eps": self.eps,
            "steps": self.steps,
            "samples": self.samples,
            "chains": self.chains,
            "momentum_refresh": self.momentum_refresh,
            "alpha": self.alpha,
            "norm": self.norm,
            "targeted": self.targeted,
            "seed": self.seed,
            **dict(self.options),
        }
        if not attack_class.uses_eps:
            wanted.pop("eps")
            wanted.pop("norm")
        return attack_class(
            model, **{key: value for key, value in wanted.items() if key in accepted and value is not None}
        )


class ChunkWriter:
    """Writes one batch's chain samples to ``folder``, ``chunk`` transitions per file, keeping only the last sample.

    Files are ``samples-BATCH-FIRST.safetensors`` (BATCH and FIRST, the batch and its first
    transition, zero-padded), each a tensor ``samples`` of [transitions, (C,) b, ...].
    """

    def __init__(self, folder: Path, batch: int, chunk: int) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 transition, got {chunk}")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.batch, self.chunk = folder, batch, chunk
        self.pending: list[Tensor] = []
        self.first = 0
        self.last: Tensor | None = None

    def add(self, index: int, sample: Tensor) -> None:
        """Take the sample of transition ``index``; write the pending ones once there are ``chunk``."""
        self.pending.append(sample)
        self.last = sample
        if len(self.pending) == self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write the pending samples, if any."""
        if not self.pending:
            return
        path = self.folder / f"samples-{self.batch:05d}-{self.first:05d}.safetensors"
        save_tensors(path, {"samples": torch.stack(self.pending)}, {"batch": self.batch, "first": self.first})
        self.first += len(self.pending)
        self.pending = []


@dataclass(frozen=True)
class AttackRun:
    """Adversarial examples for a dataset slice, the full chains when the attack samples, and a summary."""

    adversarial: Tensor
    samples: Tensor | None
    summary: dict[str, Any]


def run_attack(
    model: nn.Module,
    settings: AttackSettings,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 128,
    progress: bool = True,
    stream_to: str | Path | None = None,
    chunk: int = 16,
) -> AttackRun:
    """Attack ``images`` batch by batch and measure what the paper reports.

    Success rate is counted among the examples the model classifies correctly (untargeted) or as
    target hits (targeted; targets are ``(label + 1) mod classes``). For chain attacks the summary
    adds the any-sample and every-sample success rates over all chains and samples, and the sampling
    diagnostics of :mod:`hmcam.evaluation.sampling` (acceptance per transition, ESS and R-hat of the
    loss and success traces, diversity); ``adversarial`` is the last state of the first chain.

    ``stream_to`` (chain attacks): write the samples to that folder as they are drawn, ``chunk``
    transitions per file (``samples-BATCH-FIRST.safetensors``, a tensor ``samples`` of
    [transitions, (C,) b, ...]), never holding more than ``chunk`` transitions of one batch; the
    run's ``samples`` is then None and the distance-based diversity is not measured.
    """
    attack = settings.build(model)
    wanted = labels
    if settings.targeted:
        with attack_mode(model), torch.no_grad():
            wanted = (labels + 1) % model(images[:1]).shape[1]
    adversarial, chains, diagnostics, successes = [], [], [], []
    started = time.perf_counter()
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc=settings.name, unit="batch", disable=not progress):
        x = images[start : start + batch_size]
        y = wanted[start : start + batch_size]
        if not isinstance(attack, ChainAttack):
            adversarial.append(attack(x, y))
            continue
        writer = ChunkWriter(Path(stream_to), start // batch_size, chunk) if stream_to is not None else None
        result = attack.sample(x, y) if writer is None else attack.sample(x, y, sink=writer.add)
        if writer is None:
            chains.append(result.samples)
            last = result.samples[-1]
        else:
            writer.flush()
            assert writer.last is not None  # samples >= 1
            last = writer.last
        adversarial.append(last[0] if result.chains > 1 else last)
        diagnostics.append(diagnose(result))
        # [S, B] or [S, C, B]: every sample of every chain counts for the any- and every-sample rates.
        successes.append(result.success.flatten(0, 1) if result.chains > 1 else result.success)
    seconds = time.perf_counter() - started
    adversarial_images = torch.cat(adversarial)
    # Chain samples are [S, B, ...], or [S, C, B, ...] with C > 1 chains: the batch is after the sample dimensions.
    sample_dims = 1 if getattr(attack, "chains", 1) == 1 else 2
    samples = torch.cat(chains, dim=sample_dims) if chains else None
    clean_prediction = predict(model, images)
    adversarial_prediction = predict(model, adversarial_images)
    correct = clean_prediction == labels
    if settings.targeted:
        hits = adversarial_prediction == wanted
        eligible = torch.ones_like(correct)
    else:
        hits = adversarial_prediction != labels
        eligible = correct
    delta = adversarial_images - images
    summary: dict[str, Any] = {
        "attack": settings.name,
        "eps": settings.eps if attack.uses_eps else None,
        "norm": attack.norm.name,
        "steps": settings.steps,
        "samples": settings.samples if successes else None,
        "targeted": settings.targeted,
        "examples": len(images),
        "clean_accuracy": float(correct.float().mean()),
        "robust_accuracy": float((adversarial_prediction == labels).float().mean()),
        "success_rate": float(hits[eligible].float().mean()) if eligible.any() else None,
        "seconds": seconds,
        "mean_linf": float(NORMS["linf"].measure(delta).mean()),
        "mean_l2": float(NORMS["l2"].measure(delta).mean()),
    }
    if successes:
        sample_hits = torch.cat(successes, dim=1)
        summary["chains"] = getattr(attack, "chains", 1)
        summary["streamed_to"] = None if stream_to is None else str(stream_to)
        summary.update(ChainDiagnostics.join(diagnostics).summary())
        summary["any_sample_success_rate"] = (
            float(sample_hits.any(0)[eligible].float().mean()) if eligible.any() else None
        )
        summary["all_samples_success_rate"] = (
            float(sample_hits.all(0)[eligible].float().mean()) if eligible.any() else None
        )
    return AttackRun(adversarial=adversarial_images, samples=samples, summary=summary)


#: The summary fields ``results.csv`` of an attack folder holds, in order (chain-only ones empty otherwise).
SUMMARY_COLUMNS = (
    "attack",
    "eps",
    "norm",
    "steps",
    "samples",
    "chains",
    "targeted",
    "examples",
    "clean_accuracy",
    "robust_accuracy",
    "success_rate",
    "any_sample_success_rate",
    "acceptance_rate",
    "distinct_labels",
    "loss_ess_median",
    "loss_rhat_median",
    "mean_linf",
    "mean_l2",
    "seconds",
)


def write_attack_folder(
    out: Path,
    model: nn.Module,
    settings: AttackSettings,
    run: AttackRun,
    images: Tensor,
    labels: Tensor,
    class_names: list[str],
    extra: dict[str, Any],
    started: float,
) -> list[str]:
    """Write an attack's run folder; returns the names of the files written.

    ``adversarial.safetensors`` (examples, labels, the samples of a chain attack), ``config.json``
    (the settings with ``extra``, e.g. the checkpoint and data), ``results.json`` (the summary with
    its ``run`` record; ``started`` is when the invocation began), ``results.csv`` (the summary as
    one row), ``grid.png``, ``chain.png`` for a chain attack whose samples are kept, ``report.md`` and
    ``report.html``.
    """
    import dataclasses

    from hmcam.core.storage import atomic_write, atomic_write_json
    from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_chain_grid
    from hmcam.reporting.page import write_run_page
    from hmcam.reporting.provenance import run_record
    from hmcam.reporting.tables import markdown_table, write_csv

    tensors = {"adversarial": run.adversarial, "labels": labels}
    if run.samples is not None:
        tensors["samples"] = run.samples
    save_tensors(out / "adversarial.safetensors", tensors, {**extra, **run.summary})
    atomic_write_json(out / "config.json", {"kind": "attack", **extra, **dataclasses.asdict(settings)})
    record = run_record("attack", started, str(images.device))
    atomic_write_json(out / "results.json", {**extra, **run.summary, "run": record})
    write_csv(out / "results.csv", [run.summary], SUMMARY_COLUMNS)
    clean_prediction = predict(model, images)
    adversarial_prediction = predict(model, run.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    title = f"{settings.name}, {settings.norm} eps = {settings.eps}"
    save_adversarial_grid(
        out / "grid.png",
        images[shown].cpu(),
        run.adversarial[shown].cpu(),
        clean_prediction[shown].cpu(),
        adversarial_prediction[shown].cpu(),
        class_names,
        title,
    )
    files = ["adversarial.safetensors", "config.json", "results.json", "results.csv", "grid.png"]
    figures = ["![originals, perturbations and adversarial examples](grid.png)", ""]
    if run.samples is not None:
        # [S, B, ...] or [S, C, B, ...]: the first chain of the first four shown examples.
        chain = run.samples if run.samples.dim() == images.dim() + 1 else run.samples[:, 0]
        picked = chain[:, shown[:4].to(chain.device)]
        save_chain_grid(
            out / "chain.png",
            images[shown[:4]].cpu(),
            picked.cpu(),
            predict(model, picked, sample_dims=1).cpu(),
            class_names,
            f"{settings.name} chain: one row per image, one column per sample",
        )
        files.append("chain.png")
        figures += ["![the chain of samples](chain.png)", ""]
    shown_columns = [column for column in SUMMARY_COLUMNS if run.summary.get(column) is not None]
    lines = [
        f"# Attack: {settings.name} on {extra.get('checkpoint', 'the model')}",
        "",
        f"{run.summary['examples']} examples, {settings.norm} eps {settings.eps}, {settings.steps} steps"
        + (f", {settings.samples} samples x {settings.chains} chain(s)" if "chains" in run.summary else "")
        + (", targeted at (label + 1) mod classes" if settings.targeted else "")
        + f", seed {settings.seed}. Success counts among the correctly classified examples.",
        "",
        markdown_table([run.summary], shown_columns),
        *figures,
        "The examples: `adversarial.safetensors`; the summary: `results.json`, `results.csv`.",
        "",
    ]
    atomic_write(out / "report.md", "\n".join(lines).encode())
    write_run_page(out)
    return [*files, "report.md", "report.html"]
