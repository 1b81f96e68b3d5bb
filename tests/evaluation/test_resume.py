"""Resume and sharding: a killed evaluation, or one split over processes, ends with one process's numbers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from hmcam.core.distributed import DistributedContext
from hmcam.evaluation import EvaluationState, RobustEvaluation, evaluate_robustness
from hmcam.evaluation.stages import plan

ATTACKS = ["fgsm", "pgd", "cwlinf"]
SETTINGS = dict(eps=0.1, steps=4, restarts=2, batch_size=24, check_examples=30, progress=False)


class Interrupt(Exception):
    """Stands for a kill in the middle of an evaluation."""


def numbers(result: RobustEvaluation) -> dict[str, Any]:
    """Everything an evaluation reports except times and how it was run."""
    summary = result.to_dict()
    for key in ("seconds", "resumed", "world_size"):
        summary.pop(key)
    for row in summary["attacks"]:
        row.pop("seconds")
    tensors = {
        name: getattr(result, name).tolist()
        for name in ("clean_prediction", "robust", "fooled_by", "adversarial_prediction", "perturbation", "outcomes")
    }
    return {**summary, **tensors}


@pytest.fixture(scope="module")
def reference(digits_model, digits) -> tuple[torch.Tensor, torch.Tensor, RobustEvaluation]:
    x, y = digits["x_test"][:72], digits["y_test"][:72]
    return x, y, evaluate_robustness(digits_model, x, y, ATTACKS, **SETTINGS)


def test_an_interrupted_evaluation_resumes_to_the_same_numbers(digits_model, reference, tmp_path) -> None:
    x, y, expected = reference
    stages: list[tuple[int, str]] = []

    def kill_in_chunk_one(chunk: int, stage: str) -> None:
        stages.append((chunk, stage))
        if chunk == 1 and stage == "attack:pgd:0":
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate_robustness(digits_model, x, y, ATTACKS, **SETTINGS, state_dir=tmp_path, callback=kill_in_chunk_one)
    saved = EvaluationState.load(tmp_path / "rank0.safetensors")
    assert saved.completed.tolist()[:2] == [len(plan(expected.config)), 3] and saved.completed[2] == 0
    before = len(stages)

    def record(chunk: int, stage: str) -> None:
        stages.append((chunk, stage))

    result = evaluate_robustness(digits_model, x, y, ATTACKS, **SETTINGS, state_dir=tmp_path, callback=record)
    assert result.resumed
    assert numbers(result) == numbers(expected)
    # Chunk 0 was not redone, and chunk 1 went on after the stage it had saved.
    redone = stages[before:]
    assert all(chunk > 0 for chunk, _ in redone) and (1, "attack:pgd:0") not in redone
    # A finished evaluation reloads its state and does no work.
    again = evaluate_robustness(digits_model, x, y, ATTACKS, **SETTINGS, state_dir=tmp_path, callback=record)
    assert numbers(again) == numbers(expected) and len(stages) == before + len(redone)


def test_a_changed_configuration_is_an_error_naming_the_difference(digits_model, reference, tmp_path) -> None:
    x, y, _ = reference
    x, y = x[:24], y[:24]
    fixed = dict(check_examples=0, progress=False, state_dir=tmp_path)
    evaluate_robustness(digits_model, x, y, ["fgsm"], eps=0.1, **fixed)
    with pytest.raises(ValueError, match=r"holds the state of a different evaluation \(eps: saved 0\.1, now 0\.2\)"):
        evaluate_robustness(digits_model, x, y, ["fgsm"], eps=0.2, **fixed)
    with pytest.raises(ValueError, match=r"attacks: saved \['fgsm'\], now \['fgsm', 'pgd'\]"):
        evaluate_robustness(digits_model, x, y, ["fgsm", "pgd"], eps=0.1, **fixed)
    other = copy.deepcopy(digits_model)
    with torch.no_grad():
        other[-1].bias.add_(1e-3)
    with pytest.raises(ValueError, match="fingerprints: saved"):
        evaluate_robustness(other, x, y, ["fgsm"], eps=0.1, **fixed)
    with pytest.raises(ValueError, match="fingerprints: saved"):
        evaluate_robustness(digits_model, x, (y + 1) % 10, ["fgsm"], eps=0.1, **fixed)


def test_shards_run_by_separate_processes_merge_to_one_process_numbers(digits_model, reference, tmp_path) -> None:
    x, y, expected = reference
    ran: dict[int, set[int]] = {0: set(), 1: set()}
    for rank in (0, 1):
        # Two processes without a process group: each runs its own chunks and saves its own state file.
        context = DistributedContext(rank, 2, rank, torch.device("cpu"), None)
        partial = evaluate_robustness(
            digits_model, x, y, ATTACKS, **SETTINGS, state_dir=tmp_path, context=context,
            callback=lambda chunk, _, rank=rank: ran[rank].add(chunk),
        )  # fmt: skip
        if rank == 0:
            # Without a process group nothing is gathered, and the result says that it is partial. (Rank 1,
            # run second, also loads rank 0's state file, so its result is complete.)
            assert "1 of 3 chunks were not evaluated by this process" in partial.warnings[0]
    assert ran == {0: {0, 2}, 1: {1}}
    assert sorted(path.name for path in tmp_path.glob("*.safetensors")) == ["rank0.safetensors", "rank1.safetensors"]
    calls: list[int] = []
    merged = evaluate_robustness(
        digits_model, x, y, ATTACKS, **SETTINGS, state_dir=tmp_path, callback=lambda chunk, _: calls.append(chunk)
    )
    assert calls == [] and merged.resumed
    assert numbers(merged) == numbers(expected)
