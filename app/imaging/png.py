"""PNG encoding in the form Azure's segment responses take (CONTRACT.md §3).

- backgroundRemoval: 8-bit RGBA (colour type 6), straight alpha.
- foregroundMatting: 8-bit indexed (colour type 3) with a 256-entry grey palette
  and no tRNS: index = matte value.
- Both: gAMA, sRGB and cHRM right after IHDR, IDAT in 8192-byte chunks, no other chunks.

The encoder is a generator so responses stream: rows are filtered and deflated in
bands, and each full IDAT chunk is yielded as soon as it exists. Byte-identical
output with Azure is not a goal; RGBA rows use the Up filter (cheap in numpy, close
to libpng's adaptive choice on photos), matte rows use None as Azure's do (and at
zlib's level 6 a matte comes out byte for byte as Azure's).

Levels follow zlib's 0-9 scale. Levels 1 and 2 deflate with ISA-L (``isal``), whose levels 1 and 2
compress photos about as well as zlib's 1-3 at 4-6 times the speed (bench/png_levels.py); 0 (stored)
and 3-9 are zlib's own (ISA-L's level 3 was slower than its 2 and no smaller).
"""

from __future__ import annotations

import struct
import zlib
from functools import partial
from typing import Callable, Iterator, Protocol

import numpy as np
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_SIZE = 8192
# Rows are filtered and deflated a band at a time. Each band is a few C calls that let go of the GIL and
# must take it back; a few large bands cost far less under load than many small ones (BENCHMARKS.md).
BAND_BYTES = 4 << 20
_GAMA = struct.pack(">I", 45455)
_SRGB = b"\x00"
_CHRM = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
_GREY_PALETTE = np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes()


# zlib.crc32 (and binascii.crc32) let go of the GIL for inputs over 5 KB. Taking it back under
# load waits up to a switch interval, and a cut-out has hundreds of 8 KB chunks; in 4 KB pieces
# the CRC keeps the GIL for the microseconds it takes.
_CRC_PIECE = 4096


def crc(data: bytes) -> int:
    """CRC-32, as zlib.crc32, without letting go of the GIL."""
    view, value = memoryview(data), 0
    for start in range(0, len(view), _CRC_PIECE):
        value = zlib.crc32(view[start : start + _CRC_PIECE], value)
    return value


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc(kind + data))


def _header(width: int, height: int, colour_type: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"gAMA", _GAMA) + chunk(b"sRGB", _SRGB) + chunk(b"cHRM", _CHRM)


def _up_filtered(planes: tuple[np.ndarray, ...], start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the image whose pixels interleave ``planes`` (each H x W x C), Up-filtered.

    Each output row is filter byte 2, then every byte less the byte above it (the first row less zeros).
    The planes are interleaved straight into the filtered rows, so a cut-out's RGBA is never built whole.
    """
    rows, width = stop - start, planes[0].shape[1]
    channels = [plane.shape[2] for plane in planes]
    out = np.empty((rows, width * sum(channels) + 1), dtype=np.uint8)
    out[:, 0] = 2
    pixels = out[:, 1:].reshape(rows, width, sum(channels))
    offset = 0
    for plane, count in zip(planes, channels, strict=True):
        target = pixels[:, :, offset : offset + count]
        if start == 0:
            target[0] = plane[0]
            np.subtract(plane[1:stop], plane[: stop - 1], out=target[1:], casting="unsafe")
        else:
            np.subtract(plane[start:stop], plane[start - 1 : stop - 1], out=target, casting="unsafe")
        offset += count
    return out


def _unfiltered(matte: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an H x W matte, each after filter byte 0 (None)."""
    out = np.empty((stop - start, matte.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 0
    out[:, 1:] = matte[start:stop]
    return out


class Deflater(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


FAST_LEVELS = range(1, 3)  # the levels ISA-L deflates


def zlib_compressor(level: int, filtered: bool) -> Deflater:
    """zlib's deflate stream at ``level`` (0-9), tuned for PNG filter deltas when ``filtered``."""
    return zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_FILTERED if filtered else zlib.Z_DEFAULT_STRATEGY)


def compressor(level: int, filtered: bool) -> Deflater:
    """A zlib-format deflate stream at ``level`` (0-9); ``filtered``: the rows carry PNG filter deltas."""
    if not 0 <= level <= 9:
        raise ValueError("level must be 0-9")
    if level in FAST_LEVELS:
        return isal_zlib.compressobj(level)
    return zlib_compressor(level, filtered)


def _stream(header: bytes, height: int, row_bytes: int, band: Callable[[int, int], np.ndarray], deflate: Deflater) -> Iterator[bytes]:
    yield header
    pending = bytearray()
    band_rows = max(1, BAND_BYTES // row_bytes)
    for start in range(0, height, band_rows):
        pending += deflate.compress(band(start, min(start + band_rows, height)))  # the array's buffer, not a copy
        if len(pending) >= IDAT_SIZE:
            whole = len(pending) - len(pending) % IDAT_SIZE
            yield b"".join(chunk(b"IDAT", bytes(pending[i : i + IDAT_SIZE])) for i in range(0, whole, IDAT_SIZE))
            del pending[:whole]
    pending += deflate.flush()
    tail = b"".join(chunk(b"IDAT", bytes(pending[i : i + IDAT_SIZE])) for i in range(0, len(pending), IDAT_SIZE))
    yield tail + chunk(b"IEND", b"")


def iter_rgba_png(rgb: np.ndarray, alpha: np.ndarray, level: int) -> Iterator[bytes]:
    """Stream a cut-out, H x W x 3 uint8 colours with an H x W uint8 alpha, as an RGBA PNG deflated at ``level`` (0-9)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected H x W x 3 uint8 colours")
    if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError("expected an H x W uint8 alpha the colours' size")
    height, width = alpha.shape
    band = partial(_up_filtered, (rgb, alpha[:, :, None]))
    return _stream(_header(width, height, 6), height, width * 4, band, compressor(level, filtered=True))


def iter_matte_png(matte: np.ndarray, level: int) -> Iterator[bytes]:
    """Stream an H x W uint8 matte as an indexed PNG with a grey palette, deflated at ``level`` (0-9)."""
    if matte.ndim != 2 or matte.dtype != np.uint8:
        raise ValueError("expected H x W uint8")
    height, width = matte.shape
    header = _header(width, height, 3) + chunk(b"PLTE", _GREY_PALETTE)
    return _stream(header, height, width, partial(_unfiltered, matte), compressor(level, filtered=False))


def iter_grey_png(matte: np.ndarray, level: int) -> Iterator[bytes]:
    """Stream an H x W uint8 matte as an 8-bit greyscale PNG (colour type 0), deflated at ``level`` (0-9)."""
    if matte.ndim != 2 or matte.dtype != np.uint8:
        raise ValueError("expected H x W uint8")
    height, width = matte.shape
    return _stream(_header(width, height, 0), height, width, partial(_unfiltered, matte), compressor(level, filtered=False))
