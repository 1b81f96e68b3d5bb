"""Class-per-folder ImageNet reader on PNG/JPEG files written here."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hmcam.data import dataset_info, load_dataset
from hmcam.data.imagenet import ImageFolder, has_split, resize_and_center_crop

INFO = dataset_info("imagenet")


def _save(path, array, format):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=format)


def test_resize_shorter_side_then_center_crop_sizes():
    landscape = resize_and_center_crop(Image.new("RGB", (300, 200)), 256, 224)
    portrait = resize_and_center_crop(Image.new("RGB", (199, 401)), 256, 224)
    assert landscape.size == (224, 224) and portrait.size == (224, 224)


def test_center_crop_offset_matches_torchvision_rounding():
    # Shorter side already 256, so the resize keeps every pixel and the crop offset is visible.
    y, x = np.mgrid[0:300, 0:256]
    array = np.stack([(x + y) % 256, x % 256, y % 256], axis=-1).astype(np.uint8)
    cropped = np.asarray(resize_and_center_crop(Image.fromarray(array), 256, 224))
    left, top = 16, 38  # round((256 - 224) / 2), round((300 - 224) / 2)
    assert cropped[0, 0].tolist() == [(left + top) % 256, left, top]
    np.testing.assert_array_equal(cropped, array[top : top + 224, left : left + 224])


def test_folder_order_labels_and_decoding(tmp_path):
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    gray = np.full((50, 50), 128, np.uint8)
    _save(tmp_path / "n02" / "b.png", red, "PNG")
    _save(tmp_path / "n02" / "a.jpg", np.full((30, 30, 3), 200, np.uint8), "JPEG")
    _save(tmp_path / "n01" / "x.png", gray, "PNG")
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path, INFO, resize=32, crop=24)
    assert folder.info.class_names == ("n01", "n02")
    assert folder.info.num_classes == 2 and folder.info.input_shape == (3, 24, 24)
    assert [p.name for p in folder.samples] == ["x.png", "a.jpg", "b.png"]
    assert folder.labels.tolist() == [0, 1, 1] and folder.labels.dtype == torch.int64
    image, label = folder[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and int(label) == 0
    torch.testing.assert_close(image, torch.full((3, 24, 24), 128 / 255))
    jpeg, _ = folder[1]
    assert (jpeg - 200 / 255).abs().max() <= 3 / 255  # JPEG is lossy
    png, _ = folder[2]
    assert png[0].min() == 1.0 and png[1:].max() == 0.0
    assert not hasattr(folder, "images")


def test_limit_and_dataloader(tmp_path):
    for index in range(3):
        _save(tmp_path / f"c{index}" / "img.png", np.full((8, 8, 3), index * 50, np.uint8), "PNG")
    folder = ImageFolder(tmp_path, INFO, resize=8, crop=8, limit=2)
    assert len(folder) == 2
    images, labels = next(iter(DataLoader(folder, batch_size=2)))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]
    assert images[1].mean().item() == pytest.approx(50 / 255)


def test_undecodable_file_named(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    folder = ImageFolder(tmp_path, INFO)
    with pytest.raises(ValueError, match="broken.jpg"):
        folder[0]


def test_empty_trees_rejected(tmp_path):
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path, INFO)
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path, INFO)
    with pytest.raises(ValueError, match="must not exceed"):
        ImageFolder(tmp_path, INFO, resize=100, crop=200)


def test_load_dataset_requires_all_1000_classes(tmp_path, isolated):
    png = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(png, format="PNG")
    val = tmp_path / "imagenet" / "val"
    for index in range(3):
        (val / f"n{index:08d}").mkdir(parents=True)
        (val / f"n{index:08d}" / "img.png").write_bytes(png.getvalue())
    assert has_split(tmp_path / "imagenet", "val") and not has_split(tmp_path / "imagenet", "train")
    with pytest.raises(ValueError, match="has 3 class folders; ImageNet needs all 1000"):
        load_dataset("imagenet", "val", root=tmp_path)
    for index in range(3, 1000):
        (val / f"n{index:08d}").mkdir()
        (val / f"n{index:08d}" / "img.png").write_bytes(png.getvalue())
    data = load_dataset("imagenet", "val", root=tmp_path, limit=2)
    assert len(data) == 2 and data.info.num_classes == 1000
    assert data.info.class_names[999] == "n00000999"
    image, label = data[1]
    assert image.shape == (3, 224, 224) and int(label) == 1
    torch.testing.assert_close(image, torch.full((3, 224, 224), 90 / 255))
