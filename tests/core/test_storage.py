"""Atomic writes: the permissions an ordinary file would get, a durable rename, the tensor file written last."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from hmcam.core.storage import atomic_write, current_umask, load_tensors, save_tensors, sidecar_path
from hmcam.data import ImageDataset, dataset_info
from hmcam.evaluation.state import EvaluationState, load_states
from hmcam.training import TrainConfig, train
from hmcam.training import datasets as training_datasets
from hmcam.training.trainer_state import TrainerState


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_umasks_default_mode(tmp_path: Path, mask: int) -> None:
    previous = os.umask(mask)
    try:
        assert current_umask() == mask
        atomic_write(tmp_path / "file.bin", b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "file.bin").stat().st_mode) == 0o666 & ~mask
    assert (tmp_path / "file.bin").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temporary file left


def test_the_folder_is_synced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(f"{kind}:{(tmp_path / 'x').exists()}")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    atomic_write(tmp_path / "x", b"1")
    assert synced == ["file:False", "folder:True"]


def test_the_sidecar_is_written_before_the_tensor_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    replace = os.replace

    def recording(source: str, target: str) -> None:
        replace(source, target)
        order.append(Path(target).name)

    monkeypatch.setattr(os, "replace", recording)
    save_tensors(tmp_path / "state.safetensors", {"a": torch.ones(2)}, {"epoch": 1})
    assert order == ["state.json", "state.safetensors"]
    tensors, meta = load_tensors(tmp_path / "state.safetensors")
    assert meta == {"epoch": 1} and torch.equal(tensors["a"], torch.ones(2))


class FullDisk:
    """Makes writing a file named ``name`` fail half-way with ENOSPC, as a full disk does (``failures`` times)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, failures: int = 1) -> None:
        self.name, self.failures, self.partial = name, failures, []
        names: dict[int, str] = {}
        mkstemp, fdopen = tempfile.mkstemp, os.fdopen

        def recording_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
            fd, tmp = mkstemp(*args, **kwargs)
            names[fd] = tmp
            return fd, tmp

        def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = fdopen(fd, *args, **kwargs)
            tmp = names.pop(fd, "")
            if Path(tmp).name.startswith(f".{self.name}.") and self.failures > 0:
                self.failures -= 1
                self.partial.append(Path(tmp))
                write = handle.write

                def half_then_full(data: bytes) -> int:
                    write(data[: len(data) // 2])
                    handle.flush()
                    assert Path(tmp).stat().st_size == len(data) // 2 > 0  # part of it is on disk
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

                handle.write = half_then_full
            return handle

        monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
        monkeypatch.setattr(os, "fdopen", failing_fdopen)


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atomic_write(tmp_path / "results.json", b'{"old": true}')
    disk = FullDisk(monkeypatch, "results.json", failures=2)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "results.json", b'{"new": true, "padding": "' + b"x" * 1000 + b'"}')
    assert (tmp_path / "results.json").read_bytes() == b'{"old": true}'
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "new" / "results.json", b"[1, 2, 3]")
    assert len(disk.partial) == 2 and not any(path.exists() for path in disk.partial)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["new", "results.json"]


def test_a_tensor_file_that_fails_half_way_leaves_the_old_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.safetensors"
    save_tensors(path, {"a": torch.ones(4)}, {"epoch": 1})
    FullDisk(monkeypatch, "state.safetensors")
    with pytest.raises(OSError, match="No space left"):
        save_tensors(path, {"a": torch.zeros(4096)}, {"epoch": 2})
    tensors, meta = load_tensors(path)
    # The sidecar was written to disk first, but renamed only once the tensor file was on disk too.
    assert meta == {"epoch": 1} and torch.equal(tensors["a"], torch.ones(4))
    assert json.loads(sidecar_path(path).read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.safetensors"]


def test_an_evaluation_resumes_from_the_last_state_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"attacks": ["pgd"], "eps": 0.1}
    state = EvaluationState.empty(config, examples=4, attacks=1, chunks=2, stages=2)
    state.clean_prediction[:2], state.completed[0] = torch.tensor([3, 5]), 1
    state.save(tmp_path / "rank0.safetensors")
    later = state.copy()
    later.clean_prediction[2:], later.completed[1] = torch.tensor([7, 1]), 1
    FullDisk(monkeypatch, "rank0.safetensors")
    with pytest.raises(OSError, match="No space left"):
        later.save(tmp_path / "rank0.safetensors")
    fresh = EvaluationState.empty(config, examples=4, attacks=1, chunks=2, stages=2)
    resumed, progress = load_states(tmp_path, fresh, batch_size=2)
    assert progress and resumed.completed.tolist() == [1, 0]
    assert resumed.clean_prediction.tolist() == [3, 5, -1, -1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.json", "rank0.safetensors"]


def _random_split(name: str, split: str, **kwargs: Any) -> ImageDataset:
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    images = torch.rand(32, 1, 28, 28, generator=generator)
    return ImageDataset(images, torch.randint(0, 10, (32,), generator=generator), dataset_info("fashion-mnist"))


def test_a_training_run_that_fails_writing_its_state_resumes_from_the_last_good_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training_datasets, "load_dataset", _random_split)
    config = dict(
        dataset="fashion-mnist", model="mlp", model_options={"hidden": [8]}, epochs=2, batch_size=8, lr=0.05,
        eval_subset=0, seed=0, progress=False, device="cpu", workers=0,
    )  # fmt: skip
    whole = train(TrainConfig(**config, out=str(tmp_path / "whole")))  # type: ignore[arg-type]
    with monkeypatch.context() as patch:
        disk = FullDisk(patch, "state.safetensors", failures=2)
        disk.failures = 0  # epoch 1 writes its state; epoch 2's write of it fails half-way
        original = TrainerState.save

        def second_fails(self: TrainerState, path: Any) -> None:
            disk.failures = 1 if self.epoch == 2 else 0
            original(self, path)

        patch.setattr(TrainerState, "save", second_fails)
        with pytest.raises(OSError, match="No space left"):
            train(TrainConfig(**config, out=str(tmp_path / "cut")))  # type: ignore[arg-type]
    assert len(disk.partial) == 1 and not disk.partial[0].exists()
    assert TrainerState.load(tmp_path / "cut" / "state.safetensors").epoch == 1
    assert not [path.name for path in (tmp_path / "cut").rglob(".*.tmp")]
    resumed = train(TrainConfig(**config, out=str(tmp_path / "cut")), resume=True)  # type: ignore[arg-type]
    assert resumed["resumed_from_epoch"] == 1 and resumed["steps"] == whole["steps"]
    expected, _ = load_tensors(tmp_path / "whole" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(expected[name], found[name]) for name in expected)
