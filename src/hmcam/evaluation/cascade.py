"""The engine of a robust evaluation: each chunk of examples through its stages, then the summary.

:class:`Cascade` runs what :class:`~hmcam.evaluation.config.EvaluationConfig` lists: for every chunk
of this process, the clean pass, each attack's runs on the examples still robust, the standalone
completions and the gradient-masking checks (:mod:`hmcam.evaluation.masking`), saving the
:class:`~hmcam.evaluation.state.EvaluationState` as it goes; then it gathers every process's chunks
and summarizes them in a :class:`~hmcam.evaluation.result.RobustEvaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn
from tqdm.auto import tqdm

from hmcam.core.distributed import DistributedContext, all_gather_bytes
from hmcam.evaluation.config import DERIVED_SETTINGS, EvaluationConfig
from hmcam.evaluation.masking import (
    black_box_warning,
    one_step_warnings,
    restart_warning,
    steps_warning,
    tolerance,
    transfer_warning,
)
from hmcam.evaluation.result import AttackReport, RobustEvaluation, fraction
from hmcam.evaluation.stages import Chunk, Models, Stage, plan
from hmcam.evaluation.state import EvaluationState, load_states

#: Attacks that read only the model's scores: beating the gradient attacks, they signal gradient masking.
BLACK_BOX_ATTACKS = ("square",)
#: The state file of each process in the state folder.
STATE_FILE_FORMAT = "rank{rank}.safetensors"


class Cascade:
    """One call of :func:`~hmcam.evaluation.evaluate_robustness`: the state, the stages of each chunk and the summary.

    ``model`` is evaluated on ``images`` (on its device) and ``labels`` under ``config``; ``source``
    crafts the transfer examples, ``context`` says which chunks are this process's, ``state_dir``
    (if any) holds the resumable state, ``progress`` shows a bar on the main process,
    ``callback(chunk, stage)`` is called after each stage and ``margin`` sets the checks' tolerance.
    """

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
        self.stages = plan(config)
        self.models = Models(model, source)
        self.state = EvaluationState.empty(
            config.to_dict(), config.examples, len(config.attacks), config.chunks, len(self.stages)
        )

    def bounds(self, chunk: int) -> tuple[int, int]:
        """The examples ``[low, high)`` of ``chunk``."""
        size = self.config.batch_size
        return chunk * size, min(self.config.examples, (chunk + 1) * size)

    def run_stage(self, stage: Stage, chunk: int) -> int:
        """Run ``stage`` on ``chunk``, record what it found and return its input-gradient evaluations."""
        low, high = self.bounds(chunk)
        view = Chunk(
            index=chunk,
            low=low,
            high=high,
            correct=self.state.clean_prediction[low:high] == self.labels_cpu[low:high],
            checked=torch.arange(low, high) < self.config.check_examples,
        )
        return stage.run(self.config, self.state, view, self.models, self.images[low:high], self.labels[low:high])

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
                    cumulative_robust_accuracy=fraction(correct & ~fooled[: index + 1].any(dim=0)),
                    standalone_robust_accuracy=(fraction(correct & ~standalone[index]) if config.standalone else None),
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
        gradient_free = {index for index, spec in enumerate(config.specs) if spec.attack in BLACK_BOX_ATTACKS}
        for index in sorted(gradient_free):
            earlier = [name for position, name in enumerate(config.attacks[:index]) if position not in gradient_free]
            message = black_box_warning(
                config.attacks[index],
                reports[index].fooled,
                config.examples,
                tolerance(config.examples, self.margin),
                earlier,
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
        if config.half is not None:
            index = config.attacks.index(config.half.label)
            half_steps, full_steps = int(config.half.options["steps"]), int(config.specs[index].options["steps"])
            half_robust, full_robust = robust_count(state.half_fooled), robust_count(single[index])
            checks["half_steps"] = {
                "attack": config.half.label,
                "steps": half_steps,
                "robust_accuracy": half_robust / subset,
                "full_steps": full_steps,
                "full_steps_robust_accuracy": full_robust / subset,
            }
            message = steps_warning(
                config.half.label, half_steps, half_robust, full_steps, full_robust, subset, slack, where
            )
            if message:
                warnings.append(message)
        if config.transfer is not None:
            transfer_robust, white_robust = robust_count(state.transfer_fooled), int((robust & checked).sum())
            checks["transfer"] = {
                "attack": config.transfer.label,
                "robust_accuracy": transfer_robust / subset,
                "white_box_robust_accuracy": white_robust / subset,
            }
            message = transfer_warning(config.transfer.label, transfer_robust, white_robust, subset, slack, where)
            if message:
                warnings.append(message)
        return checks, warnings
