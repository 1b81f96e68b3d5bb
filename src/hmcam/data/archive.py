"""Safe extraction of downloaded tar archives (the CIFAR tarballs).

Only regular files and directories with relative paths inside the destination are extracted;
absolute paths, ``..`` components, links and device files are refused (they are how a malicious
archive writes outside its folder). Extraction goes into a hidden staging folder that is renamed
into place only when the whole archive has been read, so a failure leaves nothing half-extracted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    """A tar member would escape the destination folder or is not a plain file or directory."""


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ":" in (name.parts[0] if name.parts else ""):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} has an absolute path")
    if ".." in name.parts or "\\" in member.name:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} leaves the destination folder")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link or special file")
    return name


def extract_tar(archive: str | os.PathLike[str], destination: str | os.PathLike[str]) -> list[Path]:
    """Extract ``archive`` (any compression tarfile reads) into ``destination``; return the top-level paths.

    Raises :class:`UnsafeArchiveError` for a dangerous member and :class:`ValueError` for a corrupt
    archive; in both cases ``destination`` is left as it was. Top-level entries that already exist
    in ``destination`` are replaced.
    """
    archive, destination = Path(archive), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination))
    try:
        try:
            # Stream mode: one decompression pass, members checked and written as they arrive.
            with tarfile.open(archive, "r|*") as tar:
                for member in tar:
                    target = staging.joinpath(*_check_member(member, archive).parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None  # regular files always have a payload
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"{archive} is not a readable tar archive: {error}") from error
        extracted = []
        for entry in sorted(staging.iterdir()):
            final = destination / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(entry, final)
            extracted.append(final)
        return extracted
    finally:
        shutil.rmtree(staging, ignore_errors=True)
