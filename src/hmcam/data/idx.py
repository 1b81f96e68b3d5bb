"""Reader for the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. Every size is checked against the bytes
actually present, so a truncated download or a file of the wrong kind is an error naming the file
rather than a silently short or garbled array.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

import numpy as np

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

#: An opened IDX file: decompressing or plain.
_Stream: TypeAlias = gzip.GzipFile | io.BufferedReader


@contextmanager
def _open(path: Path) -> Iterator[_Stream]:
    # The gzip magic decides, not the file name: people gunzip files and keep the name, or not.
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    handle: _Stream = gzip.open(path, "rb") if compressed else open(path, "rb")
    try:
        yield handle
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is a corrupt or truncated gzip file: {error}") from error
    finally:
        handle.close()


def _read_exact(stream: _Stream, size: int, path: Path, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{path} is truncated: expected {size} bytes of {what}, found {len(data)}")
    return data


def _read_header(stream: _Stream, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = _read_exact(stream, 4, path, "magic number")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES or magic[3] == 0:
        raise ValueError(
            f"{path} is not an IDX file: magic number {magic.hex()} (expected 0000 followed by a type "
            f"code in {sorted(hex(c) for c in IDX_DTYPES)} and a nonzero dimension count)"
        )
    ndim = magic[3]
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "dimension sizes"))
    return IDX_DTYPES[magic[2]], tuple(dims)


def idx_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The array shape declared in the header of the IDX file at ``path``, reading nothing else."""
    path = Path(path)
    with _open(path) as stream:
        return _read_header(stream, path)[1]


def read_idx(path: str | os.PathLike[str], limit: int | None = None) -> np.ndarray:
    """Read the IDX file at ``path`` (gzip detected from its first bytes) into a native-endian array.

    With ``limit=n`` only the header and the first ``n`` records along the first axis are read (and
    decompressed). Without it the whole file is read and must hold exactly the declared number of
    values; a plain file is also checked against its length on disk in both cases. Raises
    :class:`ValueError` for a bad magic number, a truncated or oversized file or corrupt gzip data.
    """
    path = Path(path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    with _open(path) as stream:
        dtype, dims = _read_header(stream, path)
        record_bytes = math.prod(dims[1:]) * dtype.itemsize
        declared = 4 + 4 * len(dims) + dims[0] * record_bytes
        if not isinstance(stream, gzip.GzipFile):
            size = os.fstat(stream.fileno()).st_size
            if size != declared:
                raise ValueError(
                    f"{path} is {'truncated' if size < declared else 'oversized'}: header declares "
                    f"shape {dims} ({declared} bytes) but the file has {size} bytes"
                )
        count = dims[0] if limit is None else min(limit, dims[0])
        body = _read_exact(stream, count * record_bytes, path, f"{count} records of shape {dims[1:]}")
        if count == dims[0] and stream.read(1):
            raise ValueError(f"{path} has data beyond the {declared} bytes its header {dims} declares")
    array = np.frombuffer(body, dtype=dtype).reshape((count, *dims[1:]))
    return array.astype(dtype.newbyteorder("="), copy=False)
