"""The dataset table (shapes, classes, statistics, official sources) and :func:`load_dataset`.

Every dataset is looked for with :mod:`hmcam.data.locate`; when absent and ``download=True`` its
official files are fetched with checksum verification (:mod:`hmcam.data.download`) into the first
writable base folder, and tarballs are extracted safely (:mod:`hmcam.data.archive`). Anything that
still fails ends in one :class:`DatasetNotFoundError` naming every folder searched and every way to
provide the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hmcam.data import cifar, imagenet, mnist
from hmcam.data.archive import extract_tar
from hmcam.data.dataset import ImageDataset
from hmcam.data.download import DownloadError, download_from_mirrors, verify_file
from hmcam.data.imagenet import ImageFolder
from hmcam.data.info import DatasetInfo
from hmcam.data.locate import ENV_VAR, DatasetNotFoundError, download_base, locate

# One row per ten classes, in label order.
CIFAR100_CLASSES = tuple(
    """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle
    bowl boy bridge bus butterfly camel can castle caterpillar cattle
    chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
    dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
    lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain
    mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket
    rose sea seal shark shrew skunk skyscraper snail snake spider
    squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm
    """.split()
)

# mean/std: per-channel statistics of each training split in [0, 1] pixel scale, rounded to 4
# places (ImageNet: the customary 3-place values every pretrained torchvision model expects).
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, tuple(str(d) for d in range(10)), (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        (1, 28, 28),
        10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,),
        (0.3530,),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        (3, 32, 32),
        10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100, CIFAR100_CLASSES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    # Class names are the WordNet-id folder names, filled in when the folders are read.
    "imagenet": DatasetInfo("imagenet", (3, 224, 224), 1000, (), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name on the mirrors, its published checksum, and whether it is a tarball to extract."""

    filename: str
    md5: str | None = None
    sha256: str | None = None
    archive: bool = False


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives on disk and on the web.

    ``subfolders`` are tried under each base folder (the first is where downloads go; ``"."`` means
    the base itself, torchvision's CIFAR layout). ``files`` lists, per split, what to download from
    ``mirrors`` (base URLs tried in order); an empty ``mirrors`` means the dataset cannot be
    downloaded and ``layout`` plus ``hint`` tell people how to provide it.
    """

    splits: tuple[str, ...]
    subfolders: tuple[str, ...]
    layout: str
    mirrors: tuple[str, ...] = ()
    files: dict[str, tuple[RemoteFile, ...]] = field(default_factory=dict)
    hint: str = ""


def _idx_files(md5s: dict[str, str]) -> dict[str, tuple[RemoteFile, ...]]:
    return {
        split: tuple(RemoteFile(f"{stem}.gz", md5=md5s[f"{stem}.gz"]) for stem in mnist.split_filenames(split))
        for split in mnist.SPLIT_PREFIXES
    }


_IDX_LAYOUT = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz (gzipped or not)"
)
_CIFAR10_TARBALL = RemoteFile("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a", archive=True)
_CIFAR100_TARBALL = RemoteFile("cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85", archive=True)

SOURCES: dict[str, DatasetSource] = {
    # torchvision's mirror of LeCun's files, with the md5s torchvision publishes for them.
    "mnist": DatasetSource(
        splits=("train", "test"),
        subfolders=("mnist", "MNIST/raw"),
        layout=_IDX_LAYOUT,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        files=_idx_files(
            {
                "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            }
        ),
    ),
    # Zalando's own bucket and the md5s from the Fashion-MNIST README. The bucket's website
    # endpoint serves plain http only; the md5 check is what guards integrity.
    "fashion-mnist": DatasetSource(
        splits=("train", "test"),
        subfolders=("fashion-mnist", "FashionMNIST/raw"),
        layout=_IDX_LAYOUT,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=_idx_files(
            {
                "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            }
        ),
        hint="on Debian/Ubuntu: sudo apt install dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist)",
    ),
    "cifar10": DatasetSource(
        splits=("train", "test"),
        subfolders=("cifar10", "."),
        layout=(
            "cifar-10-batches-py/ (data_batch_1..5, test_batch) or "
            "cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin)"
        ),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files={"train": (_CIFAR10_TARBALL,), "test": (_CIFAR10_TARBALL,)},
    ),
    "cifar100": DatasetSource(
        splits=("train", "test"),
        subfolders=("cifar100", "."),
        layout="cifar-100-python/ (train, test) or cifar-100-binary/ (train.bin, test.bin)",
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files={"train": (_CIFAR100_TARBALL,), "test": (_CIFAR100_TARBALL,)},
    ),
    "imagenet": DatasetSource(
        splits=imagenet.SPLITS,
        subfolders=("imagenet",),
        layout="train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, one folder per class for all 1000 classes",
        hint=(
            "ImageNet cannot be downloaded automatically (its licence requires registration): get "
            "ILSVRC2012 from https://image-net.org/download.php and sort the validation images into "
            "one folder per WordNet id (e.g. with the ground-truth labels of the devkit)"
        ),
    ),
}

_PRESENT: dict[str, Callable[[Path, str], bool]] = {
    "mnist": mnist.has_split,
    "fashion-mnist": mnist.has_split,
    "cifar10": lambda folder, split: cifar.has_split(folder, split, "cifar10"),
    "cifar100": lambda folder, split: cifar.has_split(folder, split, "cifar100"),
    "imagenet": imagenet.has_split,
}


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {name!r}")
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (one of :data:`DATASETS`, case-insensitive)."""
    return DATASETS[_check_name(name)]


def find_dataset(name: str, root: str | os.PathLike[str] | None = None, split: str | None = None) -> Path | None:
    """The folder holding ``split`` of ``name`` (any split when None), or None; never downloads.

    Folders are searched in the order of :mod:`hmcam.data.locate`.
    """
    key = _check_name(name)
    source = SOURCES[key]
    splits = source.splits if split is None else (_check_split(key, split),)
    folder, _ = locate(source.subfolders, lambda f: any(_PRESENT[key](f, s) for s in splits), root)
    return folder


def _check_split(key: str, split: str) -> str:
    splits = SOURCES[key].splits
    if split not in splits:
        raise ValueError(f"{key} has splits {list(splits)}, got {split!r}")
    return split


def _download(key: str, split: str, folder: Path) -> None:
    source = SOURCES[key]
    for remote in source.files[split]:
        target = folder / remote.filename
        # A verified file from an interrupted earlier run (e.g. killed during extraction) is reused.
        if not verify_file(target, md5=remote.md5, sha256=remote.sha256):
            download_from_mirrors(source.mirrors, remote.filename, folder, md5=remote.md5, sha256=remote.sha256)
        if remote.archive:
            extract_tar(target, folder)
            target.unlink()


def _not_found(key: str, split: str, searched: list[tuple[Path, str]], download_note: str) -> DatasetNotFoundError:
    source = SOURCES[key]
    lines = [f"dataset {key!r} (split {split!r}) was not found. Looked in:"]
    lines += [f"  - {folder}  ({why})" for folder, why in searched]
    lines.append(download_note)
    lines.append("To provide it, do one of:")
    lines.append(
        f"  - put the files in DIR/{source.subfolders[0]}/ ({source.layout}) and pass --data-root DIR "
        f"(root=DIR in Python) or set {ENV_VAR}=DIR"
    )
    if source.mirrors:
        urls = ", ".join(m + f.filename for f in source.files[split] for m in source.mirrors[:1])
        lines.append(f"  - let hmcam download it (download=True, needs network): {urls}")
    if source.hint:
        lines.append(f"  - {source.hint}")
    return DatasetNotFoundError("\n".join(lines))


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    limit: int | None = None,
) -> ImageDataset | ImageFolder:
    """Load ``split`` of dataset ``name`` as float32 images in [0, 1] and int64 labels.

    The files are searched in ``root``, ``$HMCAM_DATA``, ``~/.cache/hmcam`` and system folders, in
    that order; if absent and ``download`` is true the official files are downloaded (checksums
    verified) into the first writable of the first three. ``limit=n`` keeps only the first ``n``
    examples and reads only what they need. MNIST, Fashion-MNIST and CIFAR return an in-memory
    :class:`ImageDataset` (``.images`` ``[N, C, H, W]``, ``.labels``, ``.info``); ImageNet returns a
    lazily decoded :class:`ImageFolder`, which has ``.labels`` and ``.info`` but no ``.images``.
    Raises :class:`DatasetNotFoundError` when the split cannot be found or fetched.
    """
    key = _check_name(name)
    _check_split(key, split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    source = SOURCES[key]

    def present(candidate: Path) -> bool:
        return _PRESENT[key](candidate, split)

    folder, searched = locate(source.subfolders, present, root)
    if folder is None:
        if not download:
            note = "Download was not attempted (download=False)."
        elif not source.mirrors:
            note = f"{key} cannot be downloaded automatically."
        elif (base := download_base(root)) is None:
            note = "No writable folder to download into (root, $HMCAM_DATA and ~/.cache/hmcam are all read-only)."
        else:
            target = base / source.subfolders[0]
            try:
                _download(key, split, target)
            except (DownloadError, ValueError) as error:
                note = f"Downloading into {target} failed: {error}"
            else:
                note = f"Downloaded into {target}, but the files there are incomplete."
                folder = target if present(target) else None
        if folder is None:
            raise _not_found(key, split, searched, note)
    return _load(key, folder, split, limit)


def _load(key: str, folder: Path, split: str, limit: int | None) -> ImageDataset | ImageFolder:
    info = DATASETS[key]
    if key == "imagenet":
        dataset = ImageFolder(folder / split, info, limit=limit)
        if dataset.info.num_classes != info.num_classes:
            raise ValueError(
                f"{folder / split} has {dataset.info.num_classes} class folders; ImageNet needs all "
                f"{info.num_classes}, because a label is the index of its folder in sorted order"
            )
        return dataset
    if key in ("mnist", "fashion-mnist"):
        pixels, labels = mnist.load_split(folder, split, limit)
    else:
        pixels, labels = cifar.load_split(folder, split, key, limit)
    return ImageDataset.from_uint8(pixels, labels, info)
