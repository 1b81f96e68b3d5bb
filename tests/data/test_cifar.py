"""CIFAR-10/100 readers on small files in the published formats, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from hmcam.data import cifar
from hmcam.data.cifar import UnsafePickleError, read_python_batch

PIXELS = 3 * 32 * 32


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, PIXELS), dtype=np.uint8)


def _write_pickle(path, batch, protocol=2):
    # Protocol 2 with bytes keys is what the official Python-2 files decode to.
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)


def _cifar10_python(folder, per_batch=2, protocol=2):
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = {}
    for index, name in enumerate(names):
        data = _images(per_batch, index)
        labels = [(index + j) % 10 for j in range(per_batch)]
        _write_pickle(
            root / name,
            {
                b"batch_label": f"batch {index}".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{index}_{j}.png".encode() for j in range(per_batch)],
            },
            protocol,
        )
        expected[name] = (data, labels)
    return expected


def test_cifar10_python_train_split(tmp_path):
    expected = _cifar10_python(tmp_path)
    assert cifar.has_split(tmp_path, "train", "cifar10")
    pixels, labels = cifar.load_split(tmp_path, "train", "cifar10")
    assert pixels.shape == (10, 3, 32, 32) and pixels.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    first = expected["data_batch_1"][0][0]
    # Channel-major rows: red plane, then green, then blue, each 32x32 row-major.
    assert pixels[0, 1, 2, 5] == first[1024 + 2 * 32 + 5]
    np.testing.assert_array_equal(pixels[3].reshape(-1), expected["data_batch_2"][0][1])


def test_cifar10_python_limit_spans_batches(tmp_path):
    _cifar10_python(tmp_path)
    pixels, labels = cifar.load_split(tmp_path, "train", "cifar10", limit=3)
    assert pixels.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 1]


def test_protocol5_pickles_with_str_keys_also_read(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    data = _images(3, 7)
    _write_pickle(root / "test_batch", {"data": data, "labels": [7, 8, 9]}, protocol=5)
    pixels, labels = cifar.load_split(tmp_path, "test", "cifar10")
    np.testing.assert_array_equal(pixels.reshape(3, -1), data)
    assert labels.tolist() == [7, 8, 9]


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    data = _images(4, 1)
    _write_pickle(
        root / "test",
        {
            b"filenames": [b"a.png"] * 4,
            b"batch_label": b"testing batch 1 of 1",
            b"fine_labels": [99, 0, 42, 17],
            b"coarse_labels": [19, 4, 7, 3],
            b"data": data,
        },
    )
    pixels, labels = cifar.load_split(tmp_path, "test", "cifar100")
    assert labels.tolist() == [99, 0, 42, 17]
    np.testing.assert_array_equal(pixels.reshape(4, -1), data)


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    _write_pickle(path, {b"data": Exploit(), b"labels": [0]})
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
        read_python_batch(path)
    assert not marker.exists()


def test_builtins_eval_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    path = tmp_path / "batch"
    _write_pickle(path, [Exploit()])
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_python_batch(path)


def test_codecs_encode_only_latin1(tmp_path):
    # _codecs.encode("abc", "zlib"), hand-assembled in protocol 2.
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="only latin1"):
        read_python_batch(path)


def test_corrupt_pickle_is_value_error(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable CIFAR batch"):
        read_python_batch(path)


def test_batch_that_is_not_a_dict(tmp_path):
    path = tmp_path / "batch"
    _write_pickle(path, [1, 2, 3])
    with pytest.raises(ValueError, match="should hold a dict"):
        read_python_batch(path)


def test_label_count_must_match(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_pickle(root / "test_batch", {b"data": _images(3, 0), b"labels": [1, 2]})
    with pytest.raises(ValueError, match="holds 3 images but 2 'labels'"):
        cifar.load_split(tmp_path, "test", "cifar10")


def test_wrong_data_shape(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_pickle(root / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]})
    with pytest.raises(ValueError, match=r"uint8 array \[N, 3072\]"):
        cifar.load_split(tmp_path, "test", "cifar10")


def test_cifar10_binary(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    data = {}
    for index in range(1, 6):
        images = _images(2, index)
        labels = np.array([index, 9 - index], dtype=np.uint8)
        records = np.concatenate([labels[:, None], images], axis=1)
        (root / f"data_batch_{index}.bin").write_bytes(records.tobytes())
        data[index] = images
    (root / "test_batch.bin").write_bytes(b"")
    assert cifar.has_split(tmp_path, "train", "cifar10")
    pixels, labels = cifar.load_split(tmp_path, "train", "cifar10")
    assert pixels.shape == (10, 3, 32, 32)
    assert labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    np.testing.assert_array_equal(pixels[9].reshape(-1), data[5][1])
    pixels, labels = cifar.load_split(tmp_path, "train", "cifar10", limit=3)
    assert labels.tolist() == [1, 8, 2]
    with pytest.raises(ValueError, match="not a positive multiple of the 3073-byte record"):
        cifar.load_split(tmp_path, "test", "cifar10")


def test_cifar10_binary_truncated(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    (root / "test_batch.bin").write_bytes(bytes(3073 * 2 - 10))
    with pytest.raises(ValueError, match="truncated or not a CIFAR binary batch"):
        cifar.load_split(tmp_path, "test", "cifar10")


def test_cifar100_binary_takes_fine_label(tmp_path):
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    images = _images(2, 3)
    records = np.concatenate([np.array([[11, 55], [2, 98]], dtype=np.uint8), images], axis=1)
    (root / "test.bin").write_bytes(records.tobytes())
    pixels, labels = cifar.load_split(tmp_path, "test", "cifar100")
    assert labels.tolist() == [55, 98]
    np.testing.assert_array_equal(pixels.reshape(2, -1), images)


def test_python_version_preferred_and_missing_split_reported(tmp_path):
    _cifar10_python(tmp_path)
    assert not cifar.has_split(tmp_path, "test", "cifar100")
    with pytest.raises(FileNotFoundError, match="cifar-100-python or .*cifar-100-binary"):
        cifar.load_split(tmp_path, "test", "cifar100")


def test_numpy1_global_names_accepted(tmp_path):
    # The official batches name numpy.core.multiarray._reconstruct (numpy < 2 spelling).
    data = _images(2, 5)
    payload = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=2)
    legacy = payload.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    assert legacy != payload
    path = tmp_path / "batch"
    path.write_bytes(legacy)
    batch = read_python_batch(path)
    np.testing.assert_array_equal(batch["data"], data)
    assert batch["labels"] == [3, 4]
