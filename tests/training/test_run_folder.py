"""The run folder: the state is each epoch's last write, resume rebuilds the rest, damaged states are named."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hmcam.core.storage import load_tensors, save_tensors
from hmcam.training import TrainConfig, train


def test_the_state_is_the_last_file_of_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_train_config: dict[str, Any]
) -> None:
    written: list[str] = []
    replace = os.replace

    def recording(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        replace(source, target)
        written.append(Path(target).name)

    monkeypatch.setattr(os, "replace", recording)
    train(TrainConfig(**tiny_train_config, out=str(tmp_path / "run")))
    assert written[0] == "config.json"
    epochs = "|".join(written[1:]).split("state.safetensors")
    # After the last state only the finished run's files, which no resume needs.
    assert epochs[-1].strip("|").split("|") == ["results.json", "results.csv", "report.md", "report.html"]
    for epoch in epochs[:-1]:
        assert {"metrics.jsonl", "curves.png", "last.safetensors", "state.json"} <= set(epoch.strip("|").split("|"))


def test_resume_rewrites_metrics_and_curves_from_the_state(tmp_path: Path, tiny_train_config: dict[str, Any]) -> None:
    out = tmp_path / "run"
    summary = train(TrainConfig(**tiny_train_config, out=str(out)))
    metrics = (out / "metrics.jsonl").read_text()
    # A kill after the metrics of a third epoch but before its state; the curves lost.
    (out / "metrics.jsonl").write_text(metrics + '{"epoch": 3, "train_loss": 0.1}\n')
    (out / "curves.png").unlink()
    again = train(TrainConfig(**tiny_train_config, out=str(out)), resume=True)
    assert again["final"] == summary["final"]
    assert (out / "metrics.jsonl").read_text() == metrics
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rewrite(path: Path, tensors: dict, meta: dict) -> None:
    save_tensors(path, tensors, meta)


def test_a_damaged_state_is_a_value_error_naming_the_file(tmp_path: Path, tiny_train_config: dict[str, Any]) -> None:
    out = tmp_path / "run"
    config = TrainConfig(**tiny_train_config, out=str(out))
    train(config)
    state = out / "state.safetensors"
    tensors, meta = load_tensors(state)

    def damaged(tensors: dict, meta: dict, match: str) -> None:
        _rewrite(state, tensors, meta)
        with pytest.raises(ValueError, match=match) as raised:
            train(config, resume=True)
        assert str(state) in str(raised.value)

    damaged(tensors, {k: v for k, v in meta.items() if k != "history"}, "its metadata lacks 'history'")
    damaged(tensors, {**meta, "epoch": "2"}, "metadata 'epoch' has the wrong type")
    damaged(tensors, {**meta, "ranks": []}, "does not hold the RNG state of 1 processes")
    damaged(tensors, {**meta, "optimizer": {}}, "optimizer metadata is incomplete")
    damaged(tensors, {**meta, "best": {"epoch": 1}}, "lacks an epoch or a value")
    damaged(tensors, {**meta, "history": meta["history"][:1]}, "one record per epoch")
    damaged({k: v for k, v in tensors.items() if k != "rank0.rng.numpy"}, meta, r"RNG tensors \['rng.numpy'\]")
    damaged({k: v for k, v in tensors.items() if k != "model.model.layers.0.bias"}, meta, "model tensors differ")
    wrong = {**tensors, "model.model.layers.0.bias": torch.zeros(3)}
    damaged(wrong, meta, "have the wrong shape")
    broken = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    broken["optimizer.state.99.momentum_buffer"] = torch.zeros(1)
    damaged(broken, meta, "is damaged or does not match this run")
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file") as raised:
        train(config, resume=True)
    assert str(state) in str(raised.value)

    # The intact state still resumes.
    _rewrite(state, tensors, meta)
    assert train(config, resume=True)["resumed_from_epoch"] == 2
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
