"""Atomic writes: the permissions an ordinary file would get, a durable rename, the tensor file written last."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from hmcam.core.storage import atomic_write, current_umask, load_tensors, save_tensors


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
