"""IDX reader on files written here: plain and gzipped, limits, and every kind of bad file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from hmcam.data.idx import idx_shape, read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_uint8(tmp_path, write_idx, compress):
    array = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
    path = write_idx(tmp_path / "images.idx", array, compress)
    result = read_idx(path)
    assert result.dtype == np.uint8
    assert result.shape == (5, 3, 4)
    np.testing.assert_array_equal(result, array)
    assert idx_shape(path) == (5, 3, 4)


@pytest.mark.parametrize("compress", [False, True])
def test_limit_reads_first_records(tmp_path, write_idx, compress):
    array = np.arange(10, dtype=np.uint8) * 7
    path = write_idx(tmp_path / "labels.idx", array, compress)
    np.testing.assert_array_equal(read_idx(path, limit=3), [0, 7, 14])
    assert read_idx(path, limit=100).shape == (10,)


def test_big_endian_int32_and_float32_become_native(tmp_path, write_idx):
    ints = np.array([[1, -2], [70000, 3]], dtype=">i4")
    floats = np.array([0.5, -1.25], dtype=">f4")
    read_ints = read_idx(write_idx(tmp_path / "i.idx", ints))
    read_floats = read_idx(write_idx(tmp_path / "f.idx", floats, compress=True))
    assert read_ints.dtype == np.dtype("=i4") and read_floats.dtype == np.dtype("=f4")
    assert read_ints.tolist() == [[1, -2], [70000, 3]]
    assert read_floats.tolist() == [0.5, -1.25]


def test_gzip_detected_from_content_not_name(tmp_path, write_idx):
    array = np.full((2, 2), 9, dtype=np.uint8)
    path = write_idx(tmp_path / "plain-name-but-gzipped", array, compress=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_bad_magic_number(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(ValueError, match="magic number 00000701"):
        read_idx(path)


@pytest.mark.parametrize("limit", [None, 4])
def test_truncated_plain_file(tmp_path, write_idx, limit):
    path = write_idx(tmp_path / "short.idx", np.zeros((4, 2, 2), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path, limit=limit)


def test_oversized_plain_file(tmp_path, write_idx):
    path = write_idx(tmp_path / "long.idx", np.zeros((4,), dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="oversized"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "header.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="dimension sizes"):
        read_idx(path)


def test_gzip_with_fewer_values_than_declared(tmp_path, write_idx):
    path = write_idx(tmp_path / "short.idx.gz", np.zeros((4, 2), dtype=np.uint8))
    path.write_bytes(gzip.compress(path.read_bytes()[:-1]))
    with pytest.raises(ValueError, match="truncated: expected 8 bytes"):
        read_idx(path)


def test_gzip_with_trailing_values(tmp_path, write_idx):
    path = write_idx(tmp_path / "long.idx.gz", np.zeros((4,), dtype=np.uint8))
    path.write_bytes(gzip.compress(path.read_bytes() + b"\x01"))
    with pytest.raises(ValueError, match="data beyond"):
        read_idx(path)


def test_cut_gzip_stream(tmp_path, write_idx):
    path = write_idx(tmp_path / "cut.idx.gz", np.arange(200, dtype=np.uint8), compress=True)
    compressed = path.read_bytes()
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_negative_limit_rejected(tmp_path, write_idx):
    path = write_idx(tmp_path / "x.idx", np.zeros((2,), dtype=np.uint8))
    with pytest.raises(ValueError, match="limit"):
        read_idx(path, limit=-1)
