"""``--data FILE``: images and labels from safetensors or .npz, read without pickle, checked in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hmcam.data.user_file import load_user_data


def pixels(n: int = 6, shape: tuple[int, ...] = (3, 4, 5)) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def test_safetensors_and_npz_give_the_same_dataset(tmp_path) -> None:
    images, labels = pixels(), torch.tensor([0, 1, 2, 3, 0, 1])
    save_file({"images": images, "labels": labels}, str(tmp_path / "d.safetensors"))
    np.savez(tmp_path / "d.npz", images=images.numpy(), labels=labels.numpy())
    for name in ("d.safetensors", "d.npz"):
        data = load_user_data(tmp_path / name)
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
        assert data.info.input_shape == (3, 4, 5) and data.info.num_classes == 4 and data.info.name == name
    limited = load_user_data(tmp_path / "d.npz", limit=2, num_classes=10)
    assert len(limited) == 2 and limited.info.num_classes == 10


def test_channels_last_and_grey_images_are_converted(tmp_path) -> None:
    images = pixels(4, (8, 8, 3))
    np.savez(tmp_path / "nhwc.npz", images=images.numpy(), labels=np.arange(4))
    data = load_user_data(tmp_path / "nhwc.npz")
    assert torch.equal(data.images, images.permute(0, 3, 1, 2))
    np.savez(tmp_path / "grey.npz", images=pixels(4, (8, 8)).numpy(), labels=np.arange(4))
    assert load_user_data(tmp_path / "grey.npz").images.shape == (4, 1, 8, 8)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"images": np.zeros((2, 1, 4, 4), np.float32)}, "has no 'labels' array"),
        ({"labels": np.zeros(2, np.int64)}, "has no 'images' array"),
        ({"images": np.full((2, 1, 4, 4), 2.0, np.float32), "labels": np.zeros(2, np.int64)}, "must lie in [0, 1]"),
        ({"images": np.full((2, 1, 4, 4), 255, np.uint8), "labels": np.zeros(2, np.int64)}, "must be floats"),
        ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.zeros(3, np.int64)}, "2 images but 3 labels"),
        ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.zeros(2, np.float32)}, "must be integers"),
        ({"images": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0, -1])}, "must be >= 0"),
    ],
)
def test_bad_files_are_one_line(tmp_path, arrays, fragment) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as error:
        load_user_data(path)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_labels_beyond_the_classes_and_pickled_arrays_are_refused(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", images=pixels(2).numpy(), labels=np.array([0, 7]))
    with pytest.raises(ValueError, match="label 7 is out of range for 5 classes"):
        load_user_data(tmp_path / "d.npz", num_classes=5)
    np.savez(tmp_path / "objects.npz", images=np.array([object()], dtype=object), labels=np.zeros(1))
    with pytest.raises(ValueError, match="cannot read without unpickling"):
        load_user_data(tmp_path / "objects.npz")
    (tmp_path / "junk.bin").write_bytes(b"not a data file")
    with pytest.raises(ValueError, match="neither a safetensors nor an .npz file"):
        load_user_data(tmp_path / "junk.bin")
    save_file({"pictures": torch.zeros(1)}, str(tmp_path / "keys.safetensors"))
    with pytest.raises(ValueError, match="has no 'images' tensor"):
        load_user_data(tmp_path / "keys.safetensors")
