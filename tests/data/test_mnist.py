"""The MNIST file layout: split file names, gzipped or plain files, and header cross-checks."""

from __future__ import annotations

import numpy as np
import pytest

from hmcam.data import mnist


def _write_split(folder, write_idx, split, images, labels, compress=True):
    image_name, label_name = mnist.split_filenames(split)
    suffix = ".gz" if compress else ""
    write_idx(folder / (image_name + suffix), images, compress)
    write_idx(folder / (label_name + suffix), labels, compress)


def test_split_filenames():
    assert mnist.split_filenames("train") == ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    assert mnist.split_filenames("test") == ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="splits"):
        mnist.split_filenames("val")


@pytest.mark.parametrize("compress", [True, False])
def test_load_split_adds_channel_axis(tmp_path, write_idx, compress):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([4, 0, 9], dtype=np.uint8)
    _write_split(tmp_path, write_idx, "test", images, labels, compress)
    assert mnist.has_split(tmp_path, "test") and not mnist.has_split(tmp_path, "train")
    pixels, read_labels = mnist.load_split(tmp_path, "test")
    assert pixels.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(pixels[:, 0], images)
    assert read_labels.tolist() == [4, 0, 9]
    pixels, read_labels = mnist.load_split(tmp_path, "test", limit=2)
    assert pixels.shape == (2, 1, 28, 28) and read_labels.tolist() == [4, 0]


def test_count_mismatch_is_an_error(tmp_path, write_idx):
    _write_split(tmp_path, write_idx, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="holds 3 images but .* holds 2 labels"):
        mnist.load_split(tmp_path, "train")


def test_images_must_be_three_dimensional(tmp_path, write_idx):
    _write_split(tmp_path, write_idx, "train", np.zeros((3, 784), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"should hold \[N, H, W\] images"):
        mnist.load_split(tmp_path, "train")


def test_labels_must_be_uint8(tmp_path, write_idx):
    _write_split(tmp_path, write_idx, "train", np.zeros((2, 28, 28), np.uint8), np.zeros(2, ">i4"))
    with pytest.raises(ValueError, match="stores int32"):
        mnist.load_split(tmp_path, "train")


def test_missing_file_named(tmp_path, write_idx):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8), True)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        mnist.load_split(tmp_path, "train")
