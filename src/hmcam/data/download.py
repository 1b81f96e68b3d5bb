"""Checksum-verified downloads with urllib: stream to a temporary file beside the target, verify, rename.

A download that fails for any reason (network error, HTTP error, fewer bytes than Content-Length,
wrong md5/sha256) raises :class:`DownloadError` and leaves neither the target nor the temporary
file behind, so a later run never mistakes half a file for a dataset.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

CHUNK_BYTES = 1 << 20
USER_AGENT = "hmcam-dataset-downloader"


class DownloadError(OSError):
    """A download failed or produced a file that does not match its published size or checksum."""


def _expected_digest(md5: str | None, sha256: str | None) -> tuple[str, str]:
    if md5 is not None and sha256 is None:
        algorithm, digest = "md5", md5
    elif sha256 is not None and md5 is None:
        algorithm, digest = "sha256", sha256
    else:
        raise ValueError("give exactly one of md5= or sha256= so the download can be verified")
    length = 32 if algorithm == "md5" else 64
    if len(digest) != length or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise ValueError(f"{algorithm} must be {length} hex digits, got {digest!r}")
    return algorithm, digest.lower()


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """The hex ``algorithm`` (``md5`` or ``sha256``) digest of the file at ``path``, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], md5: str | None = None, sha256: str | None = None) -> bool:
    """Whether the file at ``path`` exists and has the given md5 or sha256 (exactly one must be given)."""
    algorithm, expected = _expected_digest(md5, sha256)
    return Path(path).is_file() and file_digest(path, algorithm) == expected


def download_file(
    url: str,
    destination: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``destination`` and return it, verified against ``md5`` or ``sha256``.

    The body streams into a hidden temporary file in the destination folder while its digest is
    computed; the byte count is checked against Content-Length and the digest against the expected
    one, and only then is the file fsynced and renamed over ``destination`` (atomic on one file
    system). ``progress=None`` shows a progress bar only on a terminal. Only http and https URLs are
    accepted.
    """
    algorithm, expected = _expected_digest(md5, sha256)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    header = response.headers.get("Content-Length")
                    length = int(header) if header is not None and header.isdigit() else None
                    digest = hashlib.new(algorithm)
                    received = 0
                    with tqdm(
                        total=length,
                        unit="B",
                        unit_scale=True,
                        desc=destination.name,
                        disable=None if progress is None else not progress,
                        leave=False,
                    ) as bar:
                        while chunk := response.read(CHUNK_BYTES):
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                raise DownloadError(f"downloading {url} failed: {error}") from error
            if length is not None and received != length:
                raise DownloadError(
                    f"downloading {url} stopped early: received {received} of {length} bytes (Content-Length)"
                )
            if digest.hexdigest() != expected:
                raise DownloadError(
                    f"{url} has {algorithm} {digest.hexdigest()}, expected {expected}: the file is corrupt "
                    "or not the published one"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return destination


def download_from_mirrors(
    mirrors: Sequence[str],
    filename: str,
    directory: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``filename`` into ``directory`` from the first of ``mirrors`` (base URLs) that serves it intact.

    Raises :class:`DownloadError` naming every URL tried and why each failed.
    """
    if not mirrors:
        raise ValueError(f"no mirror to download {filename} from")
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            return download_file(url, Path(directory) / filename, md5=md5, sha256=sha256, timeout=timeout)
        except DownloadError as error:
            failures.append(str(error))
    raise DownloadError("; ".join(failures))
