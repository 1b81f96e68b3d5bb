"""Downloads against a local http.server: verified files appear, anything wrong leaves nothing behind."""

from __future__ import annotations

import hashlib

import pytest

from hmcam.data.download import DownloadError, download_file, download_from_mirrors, verify_file

PAYLOAD = bytes(range(256)) * 1000


@pytest.fixture
def served(http_root):
    folder, base = http_root
    (folder / "blob.bin").write_bytes(PAYLOAD)
    return base


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_correct_md5_gives_the_file(tmp_path, served):
    target = tmp_path / "out" / "blob.bin"
    assert download_file(served + "blob.bin", target, md5=_md5(PAYLOAD)) == target
    assert target.read_bytes() == PAYLOAD
    assert sorted(p.name for p in target.parent.iterdir()) == ["blob.bin"]


def test_correct_sha256_gives_the_file(tmp_path, served):
    target = tmp_path / "blob.bin"
    download_file(served + "blob.bin", target, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert verify_file(target, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert not verify_file(target, md5="0" * 32)


def test_wrong_checksum_leaves_nothing(tmp_path, served):
    folder = tmp_path / "out"
    with pytest.raises(DownloadError, match=f"has md5 {_md5(PAYLOAD)}, expected {'0' * 32}"):
        download_file(served + "blob.bin", folder / "blob.bin", md5="0" * 32)
    assert list(folder.iterdir()) == []


def test_wrong_checksum_keeps_an_existing_file_intact(tmp_path, served):
    target = tmp_path / "out" / "blob.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_file(served + "blob.bin", target, md5="0" * 32)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]


def test_truncated_response_leaves_nothing(tmp_path, served):
    folder = tmp_path / "out"
    with pytest.raises(DownloadError, match=f"received {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        download_file(served + "truncated/blob.bin", folder / "blob.bin", md5=_md5(PAYLOAD))
    assert list(folder.iterdir()) == []


def test_http_error_leaves_nothing(tmp_path, served):
    folder = tmp_path / "out"
    with pytest.raises(DownloadError, match="404"):
        download_file(served + "missing.bin", folder / "missing.bin", md5=_md5(PAYLOAD))
    assert list(folder.iterdir()) == []


def test_mirrors_tried_in_order(tmp_path, http_root, served):
    _, base = http_root
    dead = base + "nowhere/"
    path = download_from_mirrors([dead, base], "blob.bin", tmp_path, md5=_md5(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"nowhere/blob.bin failed.*; .*truncated/blob.bin stopped early"):
        download_from_mirrors([dead, base + "truncated/"], "blob.bin", tmp_path / "again", md5=_md5(PAYLOAD))


def test_checksum_is_required_and_validated(tmp_path, served):
    with pytest.raises(ValueError, match="exactly one of md5= or sha256="):
        download_file(served + "blob.bin", tmp_path / "x")
    with pytest.raises(ValueError, match="exactly one"):
        download_file(served + "blob.bin", tmp_path / "x", md5=_md5(PAYLOAD), sha256="0" * 64)
    with pytest.raises(ValueError, match="md5 must be 32 hex digits"):
        download_file(served + "blob.bin", tmp_path / "x", md5="abc")
    assert not (tmp_path / "x").exists()


def test_only_http_urls(tmp_path):
    source = tmp_path / "local.bin"
    source.write_bytes(PAYLOAD)
    with pytest.raises(ValueError, match="only http"):
        download_file(source.as_uri(), tmp_path / "copy.bin", md5=_md5(PAYLOAD))
