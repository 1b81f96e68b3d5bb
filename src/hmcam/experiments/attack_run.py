"""Run one attack over a dataset in batches, summarize it and write its run folder.

:func:`run_attack` attacks a dataset slice batch by batch and measures what the paper reports
(success, acceptance, norms, time, the sampling diagnostics of chain attacks) into an
:class:`AttackRun`; :func:`write_attack_folder` writes the examples, the summary, the figures and
the report through a :class:`~hmcam.reporting.run_folder.RunFolder` of kind ``attack``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hmcam.attacks import ATTACK_REGISTRY, Attack, ChainAttack, ChainResult, attack_mode
from hmcam.attacks.norms import NORMS
from hmcam.core import builder
from hmcam.core.storage import save_tensors
from hmcam.evaluation import predict
from hmcam.evaluation.sampling import ChainDiagnostics, diagnose
from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_chain_grid
from hmcam.reporting.run_folder import CONFIG_FILE, PAGE_FILE, REPORT_FILE, RESULTS_FILE, TABLE_FILE, RunFolder
from hmcam.reporting.tables import markdown_table


@dataclass(frozen=True)
class AttackSettings:
    """What to run: an attack name from :data:`hmcam.attacks.ATTACKS` and its hyper-parameters.

    ``steps`` is the attack's T; for chain attacks (HMCAM, HMC) ``samples`` is S, so N = S * T,
    ``chains`` is C, the chains per example, and ``momentum_refresh`` HMCAM's random initial
    momentum (0: the paper's chain). ``options`` holds any further keyword arguments of the attack
    class. Which field goes to which attack is decided by :meth:`arguments`: a field the attack does
    not take is left out when it holds its default, and is an error naming it otherwise.
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
    seed: int | None = 0
    options: tuple[tuple[str, Any], ...] = ()

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the attack: each field it takes, then ``options``.

        What an attack takes is what :data:`~hmcam.attacks.ATTACK_REGISTRY` accepts for it: ``eps``
        and ``norm`` go to the attacks with an eps-ball (not CW), ``samples`` and ``chains`` to the
        chain attacks (HMCAM, HMC), ``momentum_refresh`` to HMCAM, ``steps`` to all but FGSM and
        ``alpha`` to the iterative attacks; ``targeted`` and ``seed`` to every attack. A field the
        attack does not take is left out when it holds its default (``steps`` also at 1, the one
        step FGSM takes) and passed otherwise, so that the builder refuses the value set, by name.
        """
        accepted = ATTACK_REGISTRY.accepts(self.name)
        arguments: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("name", "options"):
                continue
            unused = value == field.default or (field.name == "steps" and value == 1)
            if field.name in accepted or not unused:
                arguments[field.name] = value
        return {**arguments, **dict(self.options)}

    def build(self, model: nn.Module) -> Attack:
        """The attack for ``model`` with :meth:`arguments`; TypeError naming a set value the attack cannot take."""
        return builder.build(ATTACK_REGISTRY, self.name, model, **self.arguments())


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
    """Adversarial examples for a dataset slice, the full chains when the attack samples, and a summary.

    ``traces`` (chain attacks) is every example's chain statistics, without the samples' pixels.
    """

    adversarial: Tensor
    samples: Tensor | None
    summary: dict[str, Any]
    traces: ChainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary, as ``results.json`` holds it beside the checkpoint, the data and the ``run`` record."""
        return dict(self.summary)

    def rows(self) -> list[dict[str, Any]]:
        """The summary as the one row of ``results.csv`` (columns :data:`SUMMARY_COLUMNS`)."""
        return [self.summary]

    def markdown(self, settings: AttackSettings, subject: str = "the model") -> str:
        """The report of the run of ``settings`` on ``subject`` (the checkpoint): settings, summary, figures.

        It shows the figures :func:`write_attack_folder` draws: the grid of examples, and the chain
        when the samples were kept.
        """
        shown_columns = [column for column in SUMMARY_COLUMNS if self.summary.get(column) is not None]
        figures = [f"![originals, perturbations and adversarial examples]({GRID_FIGURE})", ""]
        if self.samples is not None:
            figures += [f"![the chain of samples]({CHAIN_FIGURE})", ""]
        lines = [
            f"# Attack: {settings.name} on {subject}",
            "",
            f"{self.summary['examples']} examples, {settings.norm} eps {settings.eps}, {settings.steps} steps"
            + (f", {settings.samples} samples x {settings.chains} chain(s)" if "chains" in self.summary else "")
            + (", targeted at (label + 1) mod classes" if settings.targeted else "")
            + f", seed {settings.seed}. Success counts among the correctly classified examples.",
            "",
            markdown_table(self.rows(), shown_columns),
            *figures,
            f"The examples: `{EXAMPLES_FILE}`; the summary: `{RESULTS_FILE}`, `{TABLE_FILE}`.",
            "",
        ]
        return "\n".join(lines)


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
    traces: list[ChainResult] = []
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
        traces.append(replace(result, samples=result.samples.new_empty(*result.accepted.shape, 0)))
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
    joined = ChainResult.concatenate(traces) if traces else None
    return AttackRun(adversarial=adversarial_images, samples=samples, summary=summary, traces=joined)


#: The examples (and the samples of a chain attack), the grid of examples and the chain, in an attack folder.
EXAMPLES_FILE, GRID_FIGURE, CHAIN_FIGURE = "adversarial.safetensors", "grid.png", "chain.png"
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
    folder = RunFolder(out, "attack", started=started, device=str(images.device))
    tensors = {"adversarial": run.adversarial, "labels": labels}
    if run.samples is not None:
        tensors["samples"] = run.samples
    save_tensors(folder.file(EXAMPLES_FILE), tensors, {**extra, **run.summary})
    folder.write_config({**extra, **asdict(settings)})
    folder.write_results({**extra, **run.to_dict()})
    folder.write_table(run.rows(), SUMMARY_COLUMNS)
    clean_prediction = predict(model, images)
    adversarial_prediction = predict(model, run.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    title = f"{settings.name}, {settings.norm} eps = {settings.eps}"
    save_adversarial_grid(
        folder.file(GRID_FIGURE),
        images[shown].cpu(),
        run.adversarial[shown].cpu(),
        clean_prediction[shown].cpu(),
        adversarial_prediction[shown].cpu(),
        class_names,
        title,
    )
    files = [EXAMPLES_FILE, CONFIG_FILE, RESULTS_FILE, TABLE_FILE, GRID_FIGURE]
    if run.samples is not None:
        # [S, B, ...] or [S, C, B, ...]: the first chain of the first four shown examples.
        chain = run.samples if run.samples.dim() == images.dim() + 1 else run.samples[:, 0]
        picked = chain[:, shown[:4].to(chain.device)]
        save_chain_grid(
            folder.file(CHAIN_FIGURE),
            images[shown[:4]].cpu(),
            picked.cpu(),
            predict(model, picked, sample_dims=1).cpu(),
            class_names,
            f"{settings.name} chain: one row per image, one column per sample",
        )
        files.append(CHAIN_FIGURE)
    folder.write_report(run.markdown(settings, str(extra.get("checkpoint", "the model"))))
    return [*files, REPORT_FILE, PAGE_FILE]
