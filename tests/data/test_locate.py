"""Search order (root, $HMCAM_DATA, user cache, system folders) and the choice of download folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmcam.data import find_dataset, locate


def _fashion_split(base, write_idx, label):
    folder = base / "fashion-mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8), True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([label], np.uint8), True)
    return folder


def test_search_order_and_sources(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("HMCAM_DATA", str(tmp_path / "env"))
    locations = locate.search_locations(tmp_path / "root")
    paths = [tmp_path / "root", tmp_path / "env", isolated["cache"], isolated["system"]]
    assert [loc.path for loc in locations] == paths
    sources = ["root argument / --data-root", "$HMCAM_DATA", "user cache", "system location"]
    assert [loc.source for loc in locations] == sources
    assert [loc.writable_target for loc in locations] == [True, True, True, False]


def test_duplicates_removed_and_empty_env_ignored(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("HMCAM_DATA", str(tmp_path / "same"))
    assert [loc.source for loc in locate.search_locations(tmp_path / "same")] == [
        "root argument / --data-root",
        "user cache",
        "system location",
    ]
    monkeypatch.setenv("HMCAM_DATA", "")
    assert len(locate.search_locations()) == 2


def test_root_beats_env_beats_cache_beats_system(tmp_path, isolated, monkeypatch, write_idx):
    root = tmp_path / "root"
    env = tmp_path / "env"
    monkeypatch.setenv("HMCAM_DATA", str(env))
    in_system = _fashion_split(isolated["system"], write_idx, 1)
    assert find_dataset("fashion-mnist", root=root) == in_system
    in_cache = _fashion_split(isolated["cache"], write_idx, 2)
    assert find_dataset("fashion-mnist", root=root) == in_cache
    in_env = _fashion_split(env, write_idx, 3)
    assert find_dataset("fashion-mnist", root=root) == in_env
    in_root = _fashion_split(root, write_idx, 4)
    assert find_dataset("fashion-mnist", root=root) == in_root
    assert find_dataset("fashion-mnist", root=root, split="test") is None
    assert find_dataset("fashion-mnist") == in_env


def test_torchvision_layout_found(tmp_path, isolated, write_idx):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(1, np.uint8))
    assert find_dataset("fashion-mnist", root=tmp_path) == raw


def test_locate_reports_every_folder_searched(tmp_path, isolated):
    folder, searched = locate.locate(("mnist", "MNIST/raw"), lambda f: False, tmp_path)
    assert folder is None
    assert searched == [
        (tmp_path / "mnist", "root argument / --data-root"),
        (tmp_path / "MNIST/raw", "root argument / --data-root"),
        (isolated["cache"] / "mnist", "user cache"),
        (isolated["cache"] / "MNIST/raw", "user cache"),
        (isolated["system"] / "mnist", "system location"),
        (isolated["system"] / "MNIST/raw", "system location"),
    ]


def test_download_base_is_first_writable(tmp_path, isolated, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file cannot hold folders")
    monkeypatch.setenv("HMCAM_DATA", str(tmp_path / "env"))
    assert locate.download_base(tmp_path / "root") == tmp_path / "root"
    assert locate.download_base(blocker / "root") == tmp_path / "env"
    monkeypatch.setenv("HMCAM_DATA", str(blocker / "env"))
    assert locate.download_base(blocker / "root") == isolated["cache"]
    monkeypatch.setenv("HOME", str(blocker))
    assert locate.download_base(blocker / "root") is None


def test_is_writable_walks_up_to_an_existing_folder(tmp_path):
    assert locate.is_writable(tmp_path / "does" / "not" / "exist")
    (tmp_path / "f").write_text("")
    assert not locate.is_writable(tmp_path / "f")
    assert not locate.is_writable(tmp_path / "f" / "below")


def test_default_system_location_is_debians():
    assert locate.SYSTEM_DIRS == (Path("/usr/share/datasets"),)


@pytest.mark.parametrize("split", ["val", "TRAIN"])
def test_unknown_split(split, isolated):
    with pytest.raises(ValueError, match="splits"):
        find_dataset("mnist", split=split)
