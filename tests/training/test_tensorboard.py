"""TensorBoard curves: the epoch scalars in RUN/tensorboard, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from hmcam.cli import main
from hmcam.training import TrainConfig, train
from hmcam.training.tensorboard import TENSORBOARD_DIR, TensorBoardLog, epoch_scalars, require_tensorboard, scalar_tag

pytest.importorskip("tensorboard", reason="the TensorBoard curves need the extra: pip install 'hmcam[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_epoch_scalars_keep_the_finite_numbers_under_sections() -> None:
    record = {"epoch": 3, "step": 12, "batches": 4, "train_loss": 0.5, "clean_accuracy": 0.8, "seconds": 2.0}
    record |= {"robust_accuracy": None, "collapse": "text", "flag": True, "lr": math.nan}
    assert epoch_scalars(record) == {"train/train_loss": 0.5, "eval/clean_accuracy": 0.8, "time/seconds": 2.0}
    assert scalar_tag("passes_total") == "train/passes_total"


def test_training_writes_every_epoch_and_a_resume_shows_each_once(
    tmp_path: Path, tiny_train_config: dict[str, Any]
) -> None:
    out = tmp_path / "run"
    train(TrainConfig(**tiny_train_config, out=str(out), tensorboard=True))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(out / TENSORBOARD_DIR)
    assert {"train/train_loss", "train/train_accuracy", "train/lr", "eval/clean_accuracy", "time/seconds"} <= set(
        scalars
    )
    for tag, key in (("train/train_loss", "train_loss"), ("eval/clean_accuracy", "clean_accuracy")):
        assert [step for step, _ in scalars[tag]] == [1, 2]
        assert [value for _, value in scalars[tag]] == pytest.approx([record[key] for record in history], rel=1e-6)
    # A run killed after logging an epoch 3 it never committed: the resume purges it.
    stray = TensorBoardLog(out / TENSORBOARD_DIR)
    stray.add_epoch({"epoch": 3, "train_loss": 123.0})
    stray.close()
    assert [step for step, _ in read_scalars(out / TENSORBOARD_DIR)["train/train_loss"]] == [1, 2, 3]
    train(TrainConfig(**tiny_train_config, out=str(out), tensorboard=True), resume=True)
    assert [step for step, _ in read_scalars(out / TENSORBOARD_DIR)["train/train_loss"]] == [1, 2]


def test_no_event_files_without_the_option(tmp_path: Path, tiny_train_config: dict[str, Any]) -> None:
    train(TrainConfig(**tiny_train_config, out=str(tmp_path / "run")))
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()


def test_the_flag_and_a_missing_extra(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["train", "--dataset", "fashion-mnist", "--model", "mlp", "--epochs", "1", "--train-limit", "32"]
    argv += ["--test-limit", "16", "--eval-subset", "0", "--batch-size", "16", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--tensorboard"]) == 0
    capsys.readouterr()
    assert len(read_scalars(tmp_path / "run" / TENSORBOARD_DIR)["train/train_loss"]) == 1
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"hmcam\[tensorboard\]"):
        require_tensorboard()
    assert main([*argv, "--out", str(tmp_path / "other"), "--tensorboard"]) == 2
    assert "hmcam[tensorboard]" in capsys.readouterr().err and not (tmp_path / "other").exists()
