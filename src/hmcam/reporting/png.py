"""A PNG check without an image library: the figures a report page embeds must decode.

:func:`png_problem` reads a file the way a decoder does: the signature, every chunk's length and
CRC-32, ``IHDR`` first with a valid bit depth and colour type, at least one ``IDAT``, ``IEND`` last with
nothing after it, and the ``IDAT`` stream inflated with zlib to exactly the bytes the header promises,
each scanline starting with a valid filter type. A file that passes decodes in any browser.
"""

from __future__ import annotations

import struct
import zlib

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Channels per colour type, and the bit depths each colour type allows (PNG specification, 11.2.2).
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: Adam7 interlacing: each pass's (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
#: The largest image checked, in pixels: a figure larger than this is not a figure.
MAX_PIXELS = 100_000_000


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(type, payload)`` chunks of ``data`` after the signature; a ValueError on a damaged one."""
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"truncated chunk header at byte {offset}")
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"chunk {kind!r} at byte {offset} is truncated")
        payload = data[offset + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(kind + payload) != crc:
            raise ValueError(f"chunk {kind!r} at byte {offset} fails its CRC check")
        chunks.append((kind, payload))
        offset = end + 4
        if kind == b"IEND":
            break
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes follow the IEND chunk")
    return chunks


def _expected_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> list[tuple[int, int]]:
    """The ``(rows, bytes per row without its filter byte)`` of each pass of the image."""
    if not interlaced:
        return [(height, (width * bits_per_pixel + 7) // 8)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        columns, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if columns > 0 and rows > 0:
            passes.append((rows, (columns * bits_per_pixel + 7) // 8))
    return passes


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a PNG that decodes (one short phrase), or None when it is one."""
    if not data.startswith(PNG_SIGNATURE):
        return "no PNG signature"
    try:
        chunks = _chunks(data)
    except ValueError as error:
        return str(error)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        return "the first chunk is not a valid IHDR"
    if chunks[-1][0] != b"IEND":
        return "no IEND chunk"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if not 0 < width * height <= MAX_PIXELS:
        return f"an image of {width} x {height} pixels"
    if colour not in _CHANNELS or depth not in _DEPTHS[colour] or compression or filtering or interlace > 1:
        return "an invalid IHDR (bit depth, colour type, compression, filter or interlace method)"
    if colour == 3 and not any(kind == b"PLTE" for kind, _ in chunks):
        return "a palette image without a PLTE chunk"
    stream = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    if not stream:
        return "no IDAT chunk"
    passes = _expected_size(width, height, depth * _CHANNELS[colour], bool(interlace))
    expected = sum(rows * (1 + row_bytes) for rows, row_bytes in passes)
    inflater = zlib.decompressobj()
    try:
        pixels = inflater.decompress(stream, expected + 1)
    except zlib.error as error:
        return f"image data that does not inflate ({error})"
    if len(pixels) != expected or not inflater.eof:
        return f"image data of {len(pixels)} bytes where the header promises {expected}"
    offset = 0
    for rows, row_bytes in passes:
        for _ in range(rows):
            if pixels[offset] > 4:
                return f"an invalid scanline filter type {pixels[offset]}"
            offset += 1 + row_bytes
    return None
