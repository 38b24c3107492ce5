"""The PNG encoder: valid files of the kind Azure sends, streamed in IDAT chunks."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from app.imaging.png import crc, iter_matte_png, iter_rgba_png

from conftest import AZURE_SPEC, read_png, require_shared


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        out.append((kind, body))
        pos += 12 + length
    return out


@pytest.mark.parametrize("shape", [(1, 1), (50, 50), (301, 517), (1000, 37)])
def test_rgba_round_trips_exactly(shape):
    rgba = np.random.default_rng(1).integers(0, 256, (*shape, 4), dtype=np.uint8)
    image = read_png(b"".join(iter_rgba_png(rgba)))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image), rgba)


def test_matte_round_trips_with_a_grey_palette():
    matte = np.random.default_rng(2).integers(0, 256, (333, 211), dtype=np.uint8)
    image = read_png(b"".join(iter_matte_png(matte)))
    assert image.mode == "P"
    assert np.array_equal(np.asarray(image), matte)
    assert image.getpalette()[:768] == [v for i in range(256) for v in (i, i, i)]


def test_chunk_layout_is_azures():
    rgba = np.random.default_rng(3).integers(0, 256, (400, 300, 4), dtype=np.uint8)
    kinds = [kind for kind, _ in chunks_of(b"".join(iter_rgba_png(rgba)))]
    assert kinds[:4] == [b"IHDR", b"gAMA", b"sRGB", b"cHRM"]
    assert kinds[-1] == b"IEND" and set(kinds[4:-1]) == {b"IDAT"}
    chunks = chunks_of(b"".join(iter_matte_png(rgba[:, :, 0])))
    assert [k for k, _ in chunks][:5] == [b"IHDR", b"gAMA", b"sRGB", b"cHRM", b"PLTE"]
    assert b"tRNS" not in [k for k, _ in chunks]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, colour) == (300, 400, 8, 3)


def test_idat_chunks_are_8192_bytes_but_the_last():
    rgba = np.random.default_rng(4).integers(0, 256, (512, 512, 4), dtype=np.uint8)
    sizes = [len(body) for kind, body in chunks_of(b"".join(iter_rgba_png(rgba))) if kind == b"IDAT"]
    assert len(sizes) > 2 and all(size == 8192 for size in sizes[:-1]) and 0 < sizes[-1] <= 8192


def test_output_streams_in_several_pieces():
    rgba = np.random.default_rng(5).integers(0, 256, (1024, 1024, 4), dtype=np.uint8)
    assert len(list(iter_rgba_png(rgba))) > 3


def test_matte_is_byte_identical_to_azures_recorded_output():
    recorded = (require_shared(AZURE_SPEC / "observed-outputs") / "foregroundMatting_building_800x600.png").read_bytes()
    matte = np.asarray(read_png(recorded))
    assert b"".join(iter_matte_png(matte)) == recorded


@pytest.mark.parametrize("length", [0, 1, 4095, 4096, 4097, 8196, 20_000])
def test_chunk_crc_is_zlibs_computed_in_pieces_that_keep_the_gil(length, monkeypatch):
    data = bytes(range(256)) * (length // 256 + 1)
    data = data[:length]
    expected = zlib.crc32(data)
    pieces: list[int] = []
    real = zlib.crc32
    monkeypatch.setattr(zlib, "crc32", lambda piece, value=0: pieces.append(len(piece)) or real(piece, value))
    assert crc(data) == expected
    assert all(size <= 5 * 1024 for size in pieces)  # CPython lets go of the GIL above 5 KB
