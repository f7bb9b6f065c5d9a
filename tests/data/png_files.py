"""PNG files written byte by byte for the image-reading tests: 16-bit colour (which Pillow cannot write),
every row filter, Adam7 interlacing, and corrupt variants with valid chunk CRCs."""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel -> PNG colour type
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_rows(image: np.ndarray, first_filter: int) -> bytes:
    """Filtered scanlines of ``image [H, W, C]`` (big-endian samples); row ``r`` uses filter
    ``(first_filter + r) % 5`` so that every filter type occurs (PNG spec, section 9)."""
    height = image.shape[0]
    rows = image.astype(image.dtype.newbyteorder(">")).reshape(height, -1).view(np.uint8).astype(int)
    bpp = image.shape[2] * image.dtype.itemsize
    out = bytearray()
    previous = np.zeros(rows.shape[1], dtype=int)
    for r in range(height):
        kind = (first_filter + r) % 5
        row = rows[r]
        line = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            prediction = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            line.append((x - prediction) % 256)
        out.append(kind)
        out.extend(line)
        previous = row
    return bytes(out)


def png_bytes(
    image: np.ndarray,
    *,
    interlace: bool = False,
    first_filter: int = 0,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A PNG of ``image [H, W, C]`` (uint8 or uint16: bit depth 8 or 16; C = 1, 2, 3, 4)."""
    height, width, samples = image.shape
    depth = 8 * image.dtype.itemsize
    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            sub = image[y0::dy, x0::dx]
            if sub.size:
                data += _filter_rows(sub, first_filter)
    else:
        data = _filter_rows(image, first_filter)
    header = struct.pack(">IIBBBBB", width, height, depth, COLOUR_TYPES[samples], 0, 0, int(interlace))
    body = b"".join(chunk(kind, payload) for kind, payload in extra)
    return (
        SIGNATURE
        + chunk(b"IHDR", header)
        + body
        + chunk(b"IDAT", zlib.compress(data, 9))
        + chunk(b"IEND", b"")
    )


def break_zlib(png: bytes) -> bytes:
    """``png`` with the middle of its IDAT's deflate stream overwritten and the chunk's CRC recomputed:
    every chunk checks out, only decompressing the pixels fails."""
    position = len(SIGNATURE)
    while True:
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        if kind == b"IDAT":
            payload = bytearray(png[position + 8 : position + 8 + length])
            middle = len(payload) // 2
            payload[middle : middle + 8] = b"\xff" * 8
            return png[:position] + chunk(b"IDAT", bytes(payload)) + png[position + 12 + length :]
        position += 12 + length
