"""Safe tar extraction: plain archives extract, escaping or linking members are refused with nothing left."""

from __future__ import annotations

import io
import tarfile

import pytest

from hmcam.data.archive import UnsafeArchiveError, extract_tar


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = data.decode()
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_extracts_files_and_directories(tmp_path):
    archive = _tar(
        tmp_path / "a.tar.gz",
        [
            ("cifar-10-batches-py", b"", tarfile.DIRTYPE),
            ("cifar-10-batches-py/data_batch_1", b"one", tarfile.REGTYPE),
            ("cifar-10-batches-py/sub/readme", b"two", tarfile.REGTYPE),
        ],
    )
    out = tmp_path / "out"
    assert extract_tar(archive, out) == [out / "cifar-10-batches-py"]
    assert (out / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"one"
    assert (out / "cifar-10-batches-py" / "sub" / "readme").read_bytes() == b"two"
    assert sorted(p.name for p in out.iterdir()) == ["cifar-10-batches-py"]


def test_replaces_an_incomplete_earlier_extraction(tmp_path):
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    (out / "d" / "stale").write_bytes(b"x")
    extract_tar(_tar(tmp_path / "a.tgz", [("d/fresh", b"y", tarfile.REGTYPE)]), out)
    assert [p.name for p in (out / "d").iterdir()] == ["fresh"]


@pytest.mark.parametrize(
    "member, message",
    [
        (("/etc/evil", b"x", tarfile.REGTYPE), "absolute path"),
        (("ok/../../evil", b"x", tarfile.REGTYPE), "leaves the destination"),
        (("link", b"/etc/passwd", tarfile.SYMTYPE), "link or special file"),
    ],
)
def test_dangerous_members_refused_and_nothing_left(tmp_path, member, message):
    archive = _tar(tmp_path / "bad.tar.gz", [("good/file", b"fine", tarfile.REGTYPE), member])
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_tar(archive, out)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_corrupt_archive(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    data = _tar(tmp_path / "ok.tar.gz", [("f", b"z" * 5000, tarfile.REGTYPE)]).read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="not a readable tar archive"):
        extract_tar(archive, out)
    assert list(out.iterdir()) == []
