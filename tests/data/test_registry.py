"""load_dataset end to end: real Fashion-MNIST, downloads from a local server, and the not-found message."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hmcam.data import DATASETS, DatasetNotFoundError, dataset_info, find_dataset, load_dataset, registry
from hmcam.data.registry import RemoteFile

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)


@pytest.fixture
def no_user_data(tmp_path, monkeypatch):
    """Hide the user's cache and $HMCAM_DATA but keep the real system folders."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HMCAM_DATA", raising=False)


@needs_debian_fashion
def test_real_fashion_mnist(no_user_data):
    assert find_dataset("fashion-mnist") == DEBIAN_FASHION
    train = load_dataset("fashion-mnist", "train", download=False)
    test = load_dataset("fashion-mnist", "test", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.min().item() == 0.0 and train.images.max().item() == 1.0
    assert int(train.labels[0]) == 9 and int(test.labels[0]) == 9  # both start with an ankle boot
    assert train.info.class_names[9] == "Ankle boot"
    # Pixels are exact multiples of 1/255 and the registry statistics are those of this split.
    assert torch.equal(train.images[:100] * 255, (train.images[:100] * 255).round())
    assert train.images.double().mean().item() == pytest.approx(train.info.mean[0], abs=1e-4)
    assert train.images.double().std().item() == pytest.approx(train.info.std[0], abs=1e-4)
    first = load_dataset("fashion-mnist", "train", download=False, limit=10)
    assert len(first) == 10
    assert torch.equal(first.images, train.images[:10]) and torch.equal(first.labels, train.labels[:10])
    image, label = train[0]
    assert image.shape == (1, 28, 28) and int(label) == 9
    images, labels = next(iter(DataLoader(test, batch_size=32)))
    assert images.shape == (32, 1, 28, 28) and torch.equal(labels, test.labels[:32])


def test_dataset_table():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet"]
    assert dataset_info("CIFAR10").input_shape == (3, 32, 32)
    assert dataset_info("cifar10").class_names[0] == "airplane"
    cifar100 = dataset_info("cifar100").class_names
    assert len(cifar100) == 100 and list(cifar100) == sorted(cifar100)  # the meta file's order
    assert dataset_info("mnist").mean == (0.1307,) and dataset_info("mnist").std == (0.3081,)
    assert dataset_info("imagenet").num_classes == 1000 and dataset_info("imagenet").class_names == ()
    assert registry.SOURCES["imagenet"].splits == ("train", "val")


def test_bad_arguments(isolated):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known datasets: mnist, fashion-mnist"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match=r"imagenet has splits \['train', 'val'\], got 'test'"):
        load_dataset("imagenet", "test")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_dataset("mnist", limit=0)
    with pytest.raises(TypeError, match="dataset name must be a string"):
        dataset_info(3)


def test_not_found_message_names_every_place(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("HMCAM_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", "test", root=tmp_path / "mine", download=False)
    message = str(caught.value)
    for folder in (tmp_path / "mine", tmp_path / "env", isolated["cache"], isolated["system"]):
        assert f"  - {folder / 'fashion-mnist'}  (" in message
    assert "download=False" in message
    assert "--data-root DIR" in message and "HMCAM_DATA=DIR" in message
    assert "sudo apt install dataset-fashion-mnist" in message
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_imagenet_is_never_downloaded(isolated):
    with pytest.raises(DatasetNotFoundError, match="(?s)cannot be downloaded automatically.*image-net.org"):
        load_dataset("imagenet", "val")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def mnist_server(http_root, write_idx, monkeypatch):
    """Serve a 3-example MNIST test split and point the registry entry at the local server."""
    served, base = http_root
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28).astype(np.uint8)
    write_idx(served / "t10k-images-idx3-ubyte.gz", images, True)
    write_idx(served / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1], np.uint8), True)
    md5s = {name: _md5(served / name) for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    files = {"train": (), "test": tuple(RemoteFile(name, md5=md5) for name, md5 in md5s.items())}
    official = registry.SOURCES["mnist"]
    assert official.mirrors == ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
    monkeypatch.setitem(registry.SOURCES, "mnist", dataclasses.replace(official, mirrors=(base,), files=files))
    return served, images


def test_download_then_load(isolated, mnist_server):
    served, images = mnist_server
    data = load_dataset("mnist", "test")
    folder = isolated["cache"] / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert data.labels.tolist() == [7, 2, 1]
    torch.testing.assert_close(data.images[:, 0], torch.from_numpy(images).float() / 255)
    for path in served.iterdir():
        path.unlink()
    assert load_dataset("mnist", "test", download=False).labels.tolist() == [7, 2, 1]


def test_download_goes_to_root_when_given(tmp_path, isolated, mnist_server):
    load_dataset("mnist", "test", root=tmp_path / "data", limit=1)
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not isolated["cache"].exists()


def test_failed_download_reported_and_nothing_left(isolated, mnist_server, monkeypatch):
    source = registry.SOURCES["mnist"]
    bad = {"train": (), "test": (RemoteFile("t10k-images-idx3-ubyte.gz", md5="0" * 32),)}
    monkeypatch.setitem(registry.SOURCES, "mnist", dataclasses.replace(source, files=bad))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)Looked in:.*Downloading into .* failed: .* expected 0{32}"):
        load_dataset("mnist", "test")
    assert list((isolated["cache"] / "mnist").iterdir()) == []


def _cifar10_tarball(path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as tar:
        for index, name in enumerate(names):
            batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [index, 9 - index]}
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_tarball_downloaded_extracted_and_removed(isolated, http_root, monkeypatch):
    served, base = http_root
    _cifar10_tarball(served / "cifar-10-python.tar.gz")
    official = registry.SOURCES["cifar10"]
    assert official.files["train"][0].md5 == "c58f30108f718f92721af3b95e74349a"
    remote = RemoteFile("cifar-10-python.tar.gz", md5=_md5(served / "cifar-10-python.tar.gz"), archive=True)
    monkeypatch.setitem(
        registry.SOURCES,
        "cifar10",
        dataclasses.replace(official, mirrors=(base,), files={"train": (remote,), "test": (remote,)}),
    )
    train = load_dataset("cifar10", "train", limit=3)
    assert train.labels.tolist() == [0, 9, 1] and train.images.shape == (3, 3, 32, 32)
    folder = isolated["cache"] / "cifar10"
    assert [p.name for p in folder.iterdir()] == ["cifar-10-batches-py"]
    assert load_dataset("cifar10", "test", download=False).labels.tolist() == [5, 4]
