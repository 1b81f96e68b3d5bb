"""Running an attack over a dataset slice: batching does not change results, and the summary is right."""

from __future__ import annotations

import pytest
import torch

from hmcam.attacks import IFGSM
from hmcam.experiments.attack_run import AttackSettings, run_attack


def test_batched_run_equals_one_call_and_summary_counts(digits_correct, digits_model) -> None:
    x, y = digits_correct
    settings = AttackSettings("pgd", eps=0.15, steps=5, seed=None)
    run = run_attack(digits_model, settings, x[:40], y[:40], batch_size=40, progress=False)
    again = run_attack(
        digits_model, AttackSettings("ifgsm", eps=0.15, steps=5), x[:40], y[:40], batch_size=7, progress=False
    )
    torch.testing.assert_close(again.adversarial, IFGSM(digits_model, 0.15, steps=5)(x[:40], y[:40]))
    assert run.samples is None and "acceptance_rate" not in run.summary  # PGD draws no samples
    with pytest.raises(TypeError, match=r"attack 'pgd' takes no argument\(s\) \['samples'\]"):
        AttackSettings("pgd", eps=0.15, steps=5, samples=4).build(digits_model)  # a set value is never dropped
    assert run.summary["clean_accuracy"] == 1.0  # digits_correct holds correctly classified examples
    assert abs(run.summary["success_rate"] - (1 - run.summary["robust_accuracy"])) < 1e-6  # float32 means


def test_chain_attacks_report_acceptance_and_sequence_success(digits_correct, digits_model) -> None:
    x, y = digits_correct
    run = run_attack(
        digits_model, AttackSettings("hmcam", eps=0.15, steps=3, samples=3), x[:32], y[:32], progress=False
    )
    assert run.samples.shape == (3, 32, 1, 8, 8)
    assert (
        run.summary["any_sample_success_rate"] >= run.summary["success_rate"] >= run.summary["all_samples_success_rate"]
    )
    assert 0 <= run.summary["acceptance_rate"] <= 1


def test_targeted_runs_aim_at_the_next_class(digits_correct, digits_model) -> None:
    x, y = digits_correct
    run = run_attack(
        digits_model, AttackSettings("pgd", eps=0.3, steps=20, targeted=True), x[:32], y[:32], progress=False
    )
    assert run.summary["success_rate"] > 0.7


def test_parallel_chains_keep_their_samples_and_report_mcmc_diagnostics(digits_correct, digits_model) -> None:
    x, y = digits_correct
    settings = AttackSettings("hmcam", eps=0.15, steps=2, samples=4, chains=3, momentum_refresh=0.5)
    run = run_attack(digits_model, settings, x[:20], y[:20], batch_size=8, progress=False)
    assert run.samples.shape == (4, 3, 20, 1, 8, 8)
    summary = run.summary
    assert summary["chains"] == 3 and len(summary["acceptance_per_transition"]) == 4
    assert summary["loss_ess_median"] > 0 and summary["loss_rhat_median"] > 0
    assert 1 <= summary["distinct_labels"] <= 10 and 0 < summary["distinct_samples"] <= 1
    # Any sample of any chain counts for the any-sample rate, all of them for the every-sample rate.
    assert summary["any_sample_success_rate"] >= summary["success_rate"] >= summary["all_samples_success_rate"]


def test_streamed_samples_are_the_kept_samples_written_in_chunks(tmp_path, digits_correct, digits_model) -> None:
    from hmcam.core.storage import load_tensors

    x, y = digits_correct
    settings = AttackSettings("hmcam", eps=0.15, steps=2, samples=5, chains=2, momentum_refresh=0.5)
    kept = run_attack(digits_model, settings, x[:12], y[:12], batch_size=8, progress=False)
    streamed = run_attack(
        digits_model, settings, x[:12], y[:12], batch_size=8, progress=False, stream_to=tmp_path, chunk=2
    )
    assert streamed.samples is None
    files = sorted(path.name for path in tmp_path.glob("*.safetensors"))
    # Two batches (8 + 4 images), five transitions in chunks of two: files from transitions 0, 2 and 4.
    assert files == [f"samples-{b:05d}-{s:05d}.safetensors" for b in (0, 1) for s in (0, 2, 4)]
    for batch, images in ((0, slice(0, 8)), (1, slice(8, 12))):
        parts = [load_tensors(tmp_path / f"samples-{batch:05d}-{s:05d}.safetensors")[0]["samples"] for s in (0, 2, 4)]
        assert torch.equal(torch.cat(parts), kept.samples[:, :, images])
    torch.testing.assert_close(streamed.adversarial, kept.adversarial)
    for key in ("acceptance_rate", "loss_ess_median", "any_sample_success_rate", "all_samples_success_rate"):
        assert streamed.summary[key] == kept.summary[key]
    assert streamed.summary["mean_pairwise_l2"] is None and kept.summary["mean_pairwise_l2"] > 0
