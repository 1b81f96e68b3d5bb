"""Robust evaluation: clean accuracy, robust accuracy per attack and the per-example worst case.

:func:`evaluate_robustness` answers, for every example, "does any of these attacks find a point of
the eps-ball that the model misclassifies?". It is built for speed and for trust:

- **Cascade** (AutoAttack's order): attacks run cheapest first (FGSM, one gradient, before the
  iterative ones), each only on the examples that are classified correctly and that no earlier
  attack (or earlier restart) fooled; an iterative attack also stops attacking an example at its
  first fooling iterate (:mod:`hmcam.evaluation.runner`). The worst case is exact: an example is
  robust only if every attack and every restart ran on it and failed.
- **Honest per-attack numbers**: an attack's ``robust_accuracy_among_reached`` is robust accuracy
  under that attack among the examples that reached it, not the attack's standalone number;
  ``standalone=True`` completes each attack's outcome on the examples an earlier attack had
  already fooled, so that ``standalone_robust_accuracy`` is what the attack alone would report.
- **Gradient-masking checks** on the first ``check_examples`` examples (:mod:`.checks`): one-step
  against iterative, half the steps against all of them, transfer from a ``source`` model against
  white-box; the verdicts are ``warnings``.
- **Processes and resume**: the examples are cut into fixed chunks of ``batch_size``; random
  starts are seeded by (seed, chunk, stage), so K processes (``context``; chunk c goes to rank
  c mod K) and a resumed run compute exactly what one uninterrupted process computes. With
  ``state_dir`` the per-example state is saved after every stage (:mod:`.state`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn
from tqdm.auto import tqdm

from hmcam.attacks import get_attack
from hmcam.attacks.norms import NORMS
from hmcam.core.storage import atomic_write, atomic_write_json
from hmcam.core.validate import check_positive_float, check_positive_int
from hmcam.evaluation.masking import one_step_warnings, restart_warning, steps_warning, tolerance, transfer_warning
from hmcam.evaluation.metrics import predict
from hmcam.evaluation.runner import (
    Outcome,
    attack_and_verify,
    build_attack,
    derive_seed,
    gradient_cost,
    is_iterative,
    is_random,
)
from hmcam.evaluation.state import EvaluationState, load_states

if TYPE_CHECKING:
    # Imported where used: hmcam.training imports half the library, and may one day import this module.
    from hmcam.core.distributed import DistributedContext

#: The attacks of ``hmcam eval`` by default, as given (they run cheapest first).
DEFAULT_ATTACKS = ("fgsm", "pgd", "mpgd", "cwlinf")
#: What the per-attack numbers of a cascade mean; written into every result.
PER_ATTACK_NOTE = (
    "attacks run cheapest first, each only on the examples still robust: robust_accuracy_among_reached is "
    "robust accuracy under this attack among the examples that reached it (classified correctly and not fooled "
    "by an earlier attack), cumulative_robust_accuracy is robust accuracy over all examples after this attack "
    "and every earlier one; standalone_robust_accuracy is the attack run alone on every example (only with "
    "standalone=True / --standalone, otherwise null); robust_accuracy is the per-example worst case over all "
    "attacks"
)
#: The attack whose step count the masking check halves, when the evaluation includes it.
HALF_STEPS_ATTACK = "pgd"
#: The attack that crafts transfer examples on the source model.
TRANSFER_ATTACK = "pgd"
STATE_FILE_FORMAT = "rank{rank}.safetensors"
#: Configuration keys that follow from the others (and from the attack classes).
DERIVED_SETTINGS = ("runs", "iterative", "costs", "half_attack", "half_steps", "transfer_attack")


@dataclass(frozen=True)
class Stage:
    """One step of a chunk's evaluation: the clean pass, a cascade run, a standalone completion or a check.

    ``kind`` is ``"clean"``, ``"attack"`` (restart ``restart`` of attack ``attack``, an index into
    the run order, in the cascade), ``"complete"`` (the same run on the examples that an earlier
    attack had fooled), ``"half"`` (the half-steps check of attack ``attack``) or ``"transfer"``.
    """

    kind: str
    attack: int = -1
    restart: int = 0

    def label(self, attacks: Sequence[str]) -> str:
        """A readable, stable name of the stage (also an input of its seed)."""
        if self.kind in ("clean", "transfer"):
            return self.kind
        return f"{self.kind}:{attacks[self.attack]}:{self.restart}"


@dataclass(frozen=True)
class EvaluationConfig:
    """The resolved settings of one evaluation; a saved state must have been made with the same.

    ``attacks`` is the run order (cheapest first, ties in the order given), ``requested`` the order
    given; ``runs`` is each attack's number of runs (``restarts`` for attacks with randomness, 1 for
    deterministic ones such as FGSM), ``iterative`` and ``costs`` (gradients per run) describe them.
    ``fingerprints`` identify the data, the model and the source model.
    """

    attacks: tuple[str, ...]
    requested: tuple[str, ...]
    runs: tuple[int, ...]
    iterative: tuple[bool, ...]
    costs: tuple[int, ...]
    eps: float
    norm: str
    steps: int
    restarts: int
    alpha: float | None
    batch_size: int
    seed: int
    standalone: bool
    check_examples: int
    half_attack: str | None
    half_steps: int
    transfer_attack: str | None
    examples: int
    fingerprints: dict[str, str | None]

    @property
    def chunks(self) -> int:
        """The number of fixed chunks of ``batch_size`` examples."""
        return math.ceil(self.examples / self.batch_size)

    def stages(self) -> list[Stage]:
        """The stages every chunk goes through, in order."""
        stages = [Stage("clean")]
        for index, runs in enumerate(self.runs):
            stages += [Stage("attack", index, restart) for restart in range(runs)]
        if self.standalone or self.check_examples > 0:
            # The first attack reached every correctly classified example; there is nothing to complete.
            for index, runs in enumerate(self.runs[1:], start=1):
                stages += [Stage("complete", index, restart) for restart in range(runs)]
        if self.check_examples > 0 and self.half_attack is not None:
            stages.append(Stage("half", self.attacks.index(self.half_attack)))
        if self.check_examples > 0 and self.transfer_attack is not None:
            stages.append(Stage("transfer"))
        return stages

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        return {
            "attacks": list(self.attacks),
            "requested": list(self.requested),
            "runs": list(self.runs),
            "iterative": list(self.iterative),
            "costs": list(self.costs),
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "restarts": self.restarts,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "standalone": self.standalone,
            "check_examples": self.check_examples,
            "half_attack": self.half_attack,
            "half_steps": self.half_steps,
            "transfer_attack": self.transfer_attack,
            "examples": self.examples,
            "fingerprints": dict(self.fingerprints),
        }


@dataclass(frozen=True)
class AttackReport:
    """The numbers of one attack in an evaluation (see :data:`PER_ATTACK_NOTE` for their meaning).

    ``steps`` is the gradient steps of one run (1 for a one-step attack), ``runs`` the runs given
    to each example, ``fooled_per_run`` how many examples each run fooled first, and
    ``gradient_evaluations`` / ``seconds`` the work and time of the attack's cascade and
    standalone-completion stages, summed over chunks (over processes too).
    """

    name: str
    iterative: bool
    steps: int
    runs: int
    reached: int
    fooled: int
    robust_accuracy_among_reached: float | None
    cumulative_robust_accuracy: float
    standalone_robust_accuracy: float | None
    fooled_per_run: tuple[int, ...]
    gradient_evaluations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "name": self.name,
            "iterative": self.iterative,
            "steps": self.steps,
            "runs": self.runs,
            "reached": self.reached,
            "fooled": self.fooled,
            "robust_accuracy_among_reached": self.robust_accuracy_among_reached,
            "cumulative_robust_accuracy": self.cumulative_robust_accuracy,
            "standalone_robust_accuracy": self.standalone_robust_accuracy,
            "fooled_per_run": list(self.fooled_per_run),
            "gradient_evaluations": self.gradient_evaluations,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class RobustEvaluation:
    """The result of :func:`evaluate_robustness`: summary numbers, per-attack reports and per-example facts.

    Per example (CPU tensors of length N): ``labels``, ``clean_prediction``, ``robust`` (the worst
    case: correct and not fooled by any attack), ``fooled_by`` (index into ``config.attacks`` of the
    attack that fooled it first, -1 if none), ``adversarial_prediction`` and ``perturbation`` (of
    the example that fooled it), and ``outcomes`` [A, N] with 0 = not reached, 1 = survived,
    2 = fooled in the cascade; ``standalone`` [A, N] is each attack's own verdict (True = fooled)
    where it is known. ``checks`` holds the gradient-masking comparisons and ``warnings`` their
    verdicts. ``seconds`` is this call's wall time; ``resumed`` says whether saved progress was used.
    """

    config: EvaluationConfig
    labels: Tensor
    clean_prediction: Tensor
    robust: Tensor
    fooled_by: Tensor
    adversarial_prediction: Tensor
    perturbation: Tensor
    outcomes: Tensor
    standalone: Tensor
    attacks: tuple[AttackReport, ...]
    checks: dict[str, Any]
    warnings: tuple[str, ...]
    world_size: int
    resumed: bool
    seconds: float

    @property
    def clean_accuracy(self) -> float:
        """Fraction of examples the model classifies correctly."""
        return _fraction(self.clean_prediction == self.labels)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of examples that survive every attack (the per-example worst case)."""
        return _fraction(self.robust)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-example tensors, as JSON-ready values (``results.json``)."""
        fooled = self.fooled_by >= 0
        return {
            "examples": self.config.examples,
            "eps": self.config.eps,
            "norm": self.config.norm,
            "steps": self.config.steps,
            "restarts": self.config.restarts,
            "mode": "standalone" if self.config.standalone else "cascade",
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "per_attack_note": PER_ATTACK_NOTE,
            "attacks": [report.to_dict() for report in self.attacks],
            "checks": self.checks,
            "warnings": list(self.warnings),
            "max_perturbation": float(self.perturbation[fooled].max()) if bool(fooled.any()) else 0.0,
            "gradient_evaluations": sum(report.gradient_evaluations for report in self.attacks)
            + int(self.checks.get("gradient_evaluations", 0)),
            "world_size": self.world_size,
            "resumed": self.resumed,
            "seconds": self.seconds,
            "config": self.config.to_dict(),
        }

    def attack_rows(self) -> list[dict[str, Any]]:
        """One row per attack for ``results.csv`` (run order)."""
        rows = []
        for order, report in enumerate(self.attacks):
            row = report.to_dict()
            row["fooled_per_run"] = " ".join(map(str, report.fooled_per_run))
            rows.append({"order": order, **row})
        return rows

    def example_rows(self) -> list[dict[str, Any]]:
        """One row per example for ``examples.csv``: labels, the worst case and each attack's verdict."""
        names = self.config.attacks
        words = {0: "skipped", 1: "survived", 2: "fooled"}
        rows = []
        for index in range(self.config.examples):
            label, clean = int(self.labels[index]), int(self.clean_prediction[index])
            first = int(self.fooled_by[index])
            row: dict[str, Any] = {
                "index": index,
                "label": label,
                "clean_prediction": clean,
                "clean_correct": int(clean == label),
                "robust": int(self.robust[index]),
                "fooled_by": names[first] if first >= 0 else "",
                "adversarial_prediction": int(self.adversarial_prediction[index]),
                "perturbation": f"{float(self.perturbation[index]):.6g}",
            }
            for attack, name in enumerate(names):
                row[name] = words[int(self.outcomes[attack, index])]
                if self.config.standalone:
                    row[f"{name}_standalone"] = int(self.standalone[attack, index]) if clean == label else ""
            rows.append(row)
        return rows

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> dict[str, str]:
        """Write the run folder: ``config.json``, ``results.json``, ``results.csv``, ``examples.csv``, the reports.

        ``config.json`` holds the evaluation's settings with ``extra`` (e.g. the checkpoint),
        ``results.json`` the summary (:meth:`to_dict`, ``extra`` first) with its ``run`` record,
        ``results.csv`` one row per attack, ``examples.csv`` one row per example, ``robustness.png``
        the accuracies as bars, and ``report.md`` / ``report.html`` all of it for people. Returns
        the paths written, by kind.
        """
        from hmcam.reporting.page import write_run_page
        from hmcam.reporting.provenance import run_record

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "config": folder / "config.json",
            "json": folder / "results.json",
            "attacks_csv": folder / "results.csv",
            "examples_csv": folder / "examples.csv",
            "figure": folder / "robustness.png",
            "report": folder / "report.md",
            "page": folder / "report.html",
        }
        started = time.time() - self.seconds
        atomic_write_json(paths["config"], {"kind": "evaluation", **(extra or {}), **self.config.to_dict()})
        run = run_record("evaluation", started, str(self.labels.device))
        atomic_write_json(paths["json"], {**(extra or {}), **self.to_dict(), "run": run})
        atomic_write(paths["attacks_csv"], _csv(self.attack_rows()))
        atomic_write(paths["examples_csv"], _csv(self.example_rows()))
        self._write_report(folder, extra or {})
        write_run_page(folder)
        return {key: str(path) for key, path in paths.items()}

    def _write_report(self, folder: Path, extra: dict[str, Any]) -> None:
        from hmcam.reporting.figures import save_bar_chart
        from hmcam.reporting.tables import markdown_table

        names = ["clean", *(report.name for report in self.attacks), "worst case"]
        values = [
            self.clean_accuracy,
            *(report.cumulative_robust_accuracy for report in self.attacks),
            self.robust_accuracy,
        ]
        subject = extra.get("checkpoint", "the model")
        title = f"{self.config.norm} eps {self.config.eps:.4g}, {self.config.examples} examples"
        save_bar_chart(folder / "robustness.png", names, values, "accuracy (%)", title)
        columns = ["name", "steps", "runs", "reached", "fooled", "cumulative_robust_accuracy"]
        columns += ["standalone_robust_accuracy", "gradient_evaluations", "seconds"]
        lines = [
            f"# Robust evaluation of {subject}",
            "",
            f"{self.config.examples} examples, {self.config.norm} eps {self.config.eps:.4g}, {self.config.steps} "
            f"steps, {self.config.restarts} restart(s), attacks run cheapest first, each on the examples the "
            f"previous ones left ({'and each alone' if self.config.standalone else 'cascade'}). Clean accuracy "
            f"**{self.clean_accuracy:.4f}**, robust accuracy (the per-example worst case) "
            f"**{self.robust_accuracy:.4f}**.",
            "",
            markdown_table([report.to_dict() for report in self.attacks], columns),
            "![accuracy after each attack](robustness.png)",
            "",
        ]
        if self.warnings:
            lines += ["Warnings about gradient masking:", "", *(f"- {warning}" for warning in self.warnings), ""]
        else:
            lines += ["No sign of gradient masking in the checks that ran.", ""]
        lines += [
            f"How to read the table: {PER_ATTACK_NOTE}",
            "",
            "Per attack: `results.csv`; per example: `examples.csv`.",
            "",
        ]
        atomic_write(folder / "report.md", "\n".join(lines).encode())


def _fraction(flags: Tensor) -> float:
    # Counts over the number of examples in Python floats: 0.9, not float32's 0.8999999761581421.
    return int(flags.sum()) / flags.numel()


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _digest(named: Sequence[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _model_fingerprint(model: nn.Module) -> str:
    return _digest(sorted(model.state_dict().items()))


def _data_fingerprint(images: Tensor, labels: Tensor) -> str:
    # Per-example sums instead of every pixel: cheap on ImageNet-size data, and any change of examples,
    # order or labels still changes the digest.
    sums = images.detach().flatten(1).double().sum(dim=1)
    return _digest([("images", sums), ("shape", torch.tensor(images.shape)), ("labels", labels)])


def _check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attacks, str) or not isinstance(attacks, Sequence):
        raise TypeError(f"attacks must be a sequence of attack names, got {attacks!r}")
    names = tuple(name.lower() if isinstance(name, str) else name for name in attacks)
    if not names:
        raise ValueError("give at least one attack")
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"attack names must be non-empty strings, got {list(attacks)!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"attacks must be distinct; {repeated} appear more than once")
    return names


def resolve_config(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str],
    *,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    alpha: float | None,
    batch_size: int,
    seed: int,
    standalone: bool,
    check_examples: int,
    source: nn.Module | None,
) -> EvaluationConfig:
    """Check every argument of :func:`evaluate_robustness` and resolve the run order; errors name the argument."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if source is not None and not isinstance(source, nn.Module):
        raise TypeError(f"source must be a torch.nn.Module or None, got {type(source).__name__}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() < 2 or images.shape[0] == 0:
        raise ValueError("images must be a float tensor [N, ...] with N >= 1")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be a 1-D tensor with one label per image ({images.shape[0]})")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    reference = next(model.parameters(), None)
    if reference is not None and reference.device != images.device:
        raise ValueError(f"the model is on {reference.device} but the images are on {images.device}")
    eps = check_positive_float("eps", eps)
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(NORMS)}")
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    batch_size = check_positive_int("batch_size", batch_size)
    alpha = None if alpha is None else check_positive_float("alpha", alpha)
    for name, value in (("seed", seed), ("check_examples", check_examples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if not isinstance(standalone, bool):
        raise TypeError(f"standalone must be True or False, got {standalone!r}")
    requested = _check_attacks(attacks)
    probes = {}
    for name in requested:
        if not get_attack(name).uses_eps:
            raise ValueError(
                f"{name} searches for a minimal perturbation and has no eps, so it has no robust accuracy at eps; "
                "use an attack with a fixed eps (cwlinf for the CW margin)"
            )
        probes[name] = build_attack(name, model, eps=eps, norm=norm, steps=steps, alpha=alpha, seed=0)
    # Cheapest first; sorted() is stable, so equal costs keep the order given.
    order = tuple(sorted(requested, key=lambda name: gradient_cost(probes[name])))
    iterative = tuple(is_iterative(probes[name]) for name in order)
    half_candidates = [name for name, flag in zip(order, iterative, strict=True) if flag]
    half_attack = None
    if steps >= 2 and half_candidates:
        half_attack = HALF_STEPS_ATTACK if HALF_STEPS_ATTACK in order else half_candidates[0]
    return EvaluationConfig(
        attacks=order,
        requested=requested,
        runs=tuple(restarts if is_random(probes[name]) else 1 for name in order),
        iterative=iterative,
        costs=tuple(gradient_cost(probes[name]) for name in order),
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        standalone=standalone,
        check_examples=min(check_examples, images.shape[0]),
        half_attack=half_attack,
        half_steps=max(1, steps // 2),
        transfer_attack=TRANSFER_ATTACK if source is not None else None,
        examples=images.shape[0],
        fingerprints={
            "data": _data_fingerprint(images, labels),
            "model": _model_fingerprint(model),
            "source": None if source is None else _model_fingerprint(source),
        },
    )


class _Evaluation:
    """One call of :func:`evaluate_robustness`: the state, the stages of each chunk and the summary."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        config: EvaluationConfig,
        source: nn.Module | None,
        context: DistributedContext,
        state_dir: Path | None,
        progress: bool,
        callback: Callable[[int, str], None] | None,
        margin: float,
    ) -> None:
        self.model, self.source, self.config, self.context = model, source, config, context
        self.margin = margin
        self.images = images
        self.labels = labels.to(images.device).long()
        self.labels_cpu = labels.detach().cpu().long()
        self.state_dir, self.progress, self.callback = state_dir, progress, callback
        self.stages = config.stages()
        self.state = EvaluationState.empty(
            config.to_dict(), config.examples, len(config.attacks), config.chunks, len(self.stages)
        )

    def bounds(self, chunk: int) -> tuple[int, int]:
        """The examples ``[low, high)`` of ``chunk``."""
        size = self.config.batch_size
        return chunk * size, min(self.config.examples, (chunk + 1) * size)

    def select(self, stage: Stage, chunk: int) -> Tensor:
        """Which examples of ``chunk`` the stage attacks (a CPU bool mask over the chunk)."""
        low, high = self.bounds(chunk)
        state = self.state
        correct = state.clean_prediction[low:high] == self.labels_cpu[low:high]
        checked = torch.arange(low, high) < self.config.check_examples
        if stage.kind == "attack":
            # Attacks later in the order have not run on this chunk yet, so their columns are all -1.
            return correct & (state.cascade_restart[:, low:high] < 0).all(dim=0)
        if stage.kind == "complete":
            scope = correct & ~state.reached[stage.attack, low:high]
            if not self.config.standalone:
                scope &= checked
            return scope & (state.standalone_restart[stage.attack, low:high] < 0)
        return correct & checked

    def run_stage(self, stage: Stage, chunk: int) -> int:
        """Run ``stage`` on ``chunk``, record what it found and return its input-gradient evaluations."""
        config, state = self.config, self.state
        low, high = self.bounds(chunk)
        if stage.kind == "clean":
            prediction = predict(self.model, self.images[low:high], batch_size=config.batch_size).cpu()
            state.clean_prediction[low:high] = prediction
            state.adversarial_prediction[low:high] = prediction
            return 0
        local = self.select(stage, chunk).nonzero().squeeze(1)
        if local.numel() == 0:
            return 0
        index = local + low
        on_device = index.to(self.images.device)
        x, y = self.images[on_device], self.labels[on_device]
        seed = derive_seed(config.seed, chunk, stage.label(config.attacks))
        outcome: Outcome
        if stage.kind == "transfer":
            assert self.source is not None and config.transfer_attack is not None
            attack = build_attack(
                config.transfer_attack,
                self.source,
                eps=config.eps,
                norm=config.norm,
                steps=config.steps,
                alpha=config.alpha,
                seed=seed,
            )
            outcome = attack_and_verify(attack, x, y, target=self.model)
        else:
            steps = config.half_steps if stage.kind == "half" else config.steps
            attack = build_attack(
                config.attacks[stage.attack],
                self.model,
                eps=config.eps,
                norm=config.norm,
                steps=steps,
                alpha=config.alpha,
                seed=seed,
            )
            outcome = attack_and_verify(attack, x, y)
        hit = index[outcome.fooled]
        if stage.kind == "attack":
            if stage.restart == 0:
                state.reached[stage.attack, index] = True
            state.cascade_restart[stage.attack, hit] = stage.restart
            state.adversarial_prediction[hit] = outcome.prediction[outcome.fooled]
            state.perturbation[hit] = outcome.perturbation[outcome.fooled]
        elif stage.kind == "complete":
            if stage.restart == 0:
                state.standalone_tried[stage.attack, index] = True
            state.standalone_restart[stage.attack, hit] = stage.restart
        elif stage.kind == "half":
            state.half_tried[index] = True
            state.half_fooled[hit] = True
        else:
            state.transfer_tried[index] = True
            state.transfer_fooled[hit] = True
        return outcome.gradients

    def run(self) -> RobustEvaluation:
        """Load any saved progress, run this process's chunks, gather every process's and summarize."""
        started = time.perf_counter()
        context, config = self.context, self.config
        resumed = False
        state_path = None
        if self.state_dir is not None:
            self.state, resumed = load_states(self.state_dir, self.state, config.batch_size, DERIVED_SETTINGS)
            state_path = self.state_dir / STATE_FILE_FORMAT.format(rank=context.rank)
        state = self.state
        mine = [chunk for chunk in range(config.chunks) if chunk % context.world_size == context.rank]
        total = sum(len(self.stages) - int(state.completed[chunk]) for chunk in mine)
        with tqdm(total=total, desc="eval", unit="stage", disable=not (self.progress and context.is_main)) as bar:
            for chunk in mine:
                while int(state.completed[chunk]) < len(self.stages):
                    position = int(state.completed[chunk])
                    stage = self.stages[position]
                    label = stage.label(config.attacks)
                    bar.set_postfix_str(f"chunk {chunk} {label}")
                    began = time.perf_counter()
                    gradients = self.run_stage(stage, chunk)
                    state.gradients[position, chunk] = gradients
                    state.seconds[position, chunk] = time.perf_counter() - began
                    state.completed[chunk] = position + 1
                    # Stages that attacked nobody are free to redo, so they are not worth a write.
                    if state_path is not None and (gradients > 0 or position + 1 == len(self.stages)):
                        state.save(state_path)
                    bar.update(1)
                    if self.callback is not None:
                        self.callback(chunk, label)
        if context.enabled:
            from hmcam.core.distributed import all_gather_bytes

            payloads = all_gather_bytes(safetensors_save(state.tensors()), context)
            others = [EvaluationState(config=state.config, **safetensors_load(payload)) for payload in payloads]
            state.merge(others, config.batch_size)
        return self.summarize(resumed, time.perf_counter() - started)

    def summarize(self, resumed: bool, seconds: float) -> RobustEvaluation:
        """The :class:`RobustEvaluation` of a complete state."""
        config, state = self.config, self.state
        labels = self.labels_cpu
        correct = state.clean_prediction == labels
        fooled = state.cascade_restart >= 0
        robust = correct & ~fooled.any(dim=0)
        standalone = fooled | (state.standalone_restart >= 0)
        outcomes = torch.where(fooled, 2, torch.where(state.reached, 1, 0)).to(torch.int8)
        first = fooled.long().argmax(dim=0)
        fooled_by = torch.where(fooled.any(dim=0), first, -1)
        reports = []
        for index, name in enumerate(config.attacks):
            rows = [
                position
                for position, stage in enumerate(self.stages)
                if stage.kind in ("attack", "complete") and stage.attack == index
            ]
            reached = int(state.reached[index].sum())
            survived = int((state.reached[index] & ~fooled[index]).sum())
            reports.append(
                AttackReport(
                    name=name,
                    iterative=config.iterative[index],
                    steps=config.costs[index],
                    runs=config.runs[index],
                    reached=reached,
                    fooled=int(fooled[index].sum()),
                    robust_accuracy_among_reached=survived / reached if reached else None,
                    cumulative_robust_accuracy=_fraction(correct & ~fooled[: index + 1].any(dim=0)),
                    standalone_robust_accuracy=(_fraction(correct & ~standalone[index]) if config.standalone else None),
                    fooled_per_run=tuple(
                        int((state.cascade_restart[index] == run).sum()) for run in range(config.runs[index])
                    ),
                    gradient_evaluations=int(state.gradients[rows].sum()),
                    seconds=float(state.seconds[rows].sum()),
                )
            )
        checks, warnings = self.masking_checks(correct, robust, standalone, reports)
        missing = int((state.completed < len(self.stages)).sum())
        if missing:
            warnings.insert(
                0,
                f"{missing} of {config.chunks} chunks were not evaluated by this process and are counted as "
                "misclassified: the numbers cover part of the examples (several processes without a process group?)",
            )
        return RobustEvaluation(
            config=config,
            labels=labels,
            clean_prediction=state.clean_prediction.clone(),
            robust=robust,
            fooled_by=fooled_by,
            adversarial_prediction=state.adversarial_prediction.clone(),
            perturbation=state.perturbation.clone(),
            outcomes=outcomes,
            standalone=standalone & correct,
            attacks=tuple(reports),
            checks=checks,
            warnings=tuple(warnings),
            world_size=self.context.world_size,
            resumed=resumed,
            seconds=seconds,
        )

    def masking_checks(
        self, correct: Tensor, robust: Tensor, standalone: Tensor, reports: list[AttackReport]
    ) -> tuple[dict[str, Any], list[str]]:
        """The comparisons of :mod:`hmcam.evaluation.masking` on the check subset, and their warnings."""
        config, state = self.config, self.state
        warnings: list[str] = []
        fooled = state.perturbation[state.cascade_restart.max(dim=0).values >= 0]
        if fooled.numel() and float(fooled.max()) > config.eps * (1 + 1e-4) + 1e-6:
            warnings.append(
                f"an adversarial example lies outside the eps-ball ({float(fooled.max()):.6g} > {config.eps}); "
                "the numbers are not trustworthy: please report this as a bug"
            )
        for report in reports:
            message = restart_warning(
                report.name,
                report.runs,
                report.fooled_per_run[-1],
                config.examples,
                tolerance(config.examples, self.margin),
            )
            if message:
                warnings.append(message)
        subset = config.check_examples
        checks: dict[str, Any] = {"examples": subset}
        if subset == 0:
            checks["skipped"] = "check_examples = 0: no gradient-masking checks were run"
            return checks, warnings
        checked = torch.arange(config.examples) < subset
        pool = correct & checked
        slack = tolerance(subset, self.margin)
        where = f"the first {subset} examples"
        rows = [position for position, stage in enumerate(self.stages) if stage.kind in ("half", "transfer")]

        def robust_count(hit: Tensor) -> int:
            return int((pool & ~hit).sum())

        single = (state.cascade_restart == 0) | (state.standalone_restart == 0)
        counts = {name: robust_count(standalone[index]) for index, name in enumerate(config.attacks)}
        checks.update(
            {
                "clean_correct": int(pool.sum()),
                "tolerance": slack,
                "worst_case_robust_accuracy": int((robust & checked).sum()) / subset,
                "standalone_robust_accuracy": {name: count / subset for name, count in counts.items()},
                "gradient_evaluations": int(state.gradients[rows].sum()),
            }
        )
        one_step = {name: counts[name] for name, flag in zip(config.attacks, config.iterative, strict=True) if not flag}
        iterative = {name: counts[name] for name, flag in zip(config.attacks, config.iterative, strict=True) if flag}
        warnings += one_step_warnings(one_step, iterative, subset, slack, where)
        if config.half_attack is not None:
            index = config.attacks.index(config.half_attack)
            half_robust, full_robust = robust_count(state.half_fooled), robust_count(single[index])
            checks["half_steps"] = {
                "attack": config.half_attack,
                "steps": config.half_steps,
                "robust_accuracy": half_robust / subset,
                "full_steps": config.steps,
                "full_steps_robust_accuracy": full_robust / subset,
            }
            message = steps_warning(
                config.half_attack, config.half_steps, half_robust, config.steps, full_robust, subset, slack, where
            )
            if message:
                warnings.append(message)
        if config.transfer_attack is not None:
            transfer_robust, white_robust = robust_count(state.transfer_fooled), int((robust & checked).sum())
            checks["transfer"] = {
                "attack": config.transfer_attack,
                "robust_accuracy": transfer_robust / subset,
                "white_box_robust_accuracy": white_robust / subset,
            }
            message = transfer_warning(config.transfer_attack, transfer_robust, white_robust, subset, slack, where)
            if message:
                warnings.append(message)
        return checks, warnings


def evaluate_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 20,
    restarts: int = 1,
    alpha: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    standalone: bool = False,
    check_examples: int = 500,
    source: nn.Module | None = None,
    margin: float = 0.01,
    state_dir: str | Path | None = None,
    context: DistributedContext | None = None,
    progress: bool = True,
    callback: Callable[[int, str], None] | None = None,
) -> RobustEvaluation:
    """Clean accuracy, robust accuracy per attack and the per-example worst case of ``model`` on ``images``.

    ``images`` are pixels in [0, 1] ([N, ...], on the model's device) and ``labels`` their classes.
    ``attacks`` are names from :data:`hmcam.attacks.ATTACKS` with an eps (not CW-L2); each gets
    ``steps`` gradient steps (``alpha`` overrides its step size) and, if it draws random starts,
    ``restarts`` runs; they run cheapest first, each only on the examples still robust (see the
    module docstring and :data:`PER_ATTACK_NOTE`), and ``standalone=True`` adds each attack's own
    robust accuracy. The first ``check_examples`` examples are also used for the gradient-masking
    checks (with transfer from ``source`` when given); a check warns when it goes the wrong way by
    more than ``margin`` of the examples (at least one). ``batch_size`` fixes the chunks, the unit
    of batching, seeding, process sharding (``context`` from
    :func:`hmcam.core.distributed.setup_distributed`) and saving (``state_dir``: resume from,
    and save to, that folder). ``callback(chunk, stage)`` is called after each saved stage.
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    config = resolve_config(
        model,
        images,
        labels,
        attacks,
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        standalone=standalone,
        check_examples=check_examples,
        source=source,
    )
    if context is None:
        from hmcam.core.distributed import DistributedContext

        context = DistributedContext(0, 1, 0, images.device, None)
    evaluation = _Evaluation(
        model,
        images,
        labels,
        config,
        source,
        context,
        None if state_dir is None else Path(state_dir),
        progress,
        callback,
        float(margin),
    )
    return evaluation.run()
