"""The PNG encoder: valid files of the kind Azure sends, streamed in IDAT chunks."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from app.imaging.png import BAND_BYTES, FAST_LEVELS, compressor, crc, iter_matte_png, iter_rgba_png
from app.settings import Settings

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


DEFAULT_LEVEL = Settings().png_compression
DEFAULT_MATTE_LEVEL = Settings().matte_png_compression


def photo_like(shape: tuple[int, int], channels: int, seed: int) -> np.ndarray:
    """Smooth gradients with noise: compressible, unlike uniform noise, so levels differ."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    base = (rows * 3 + cols * 2) % 256
    noise = np.random.default_rng(seed).integers(0, 8, (*shape, channels))
    return ((base[..., None] + noise) % 256).astype(np.uint8).squeeze()


def rgba_png(rgba: np.ndarray, level: int) -> bytes:
    """The cut-out PNG of an RGBA array, given to the encoder as colours and alpha."""
    return b"".join(iter_rgba_png(np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3]), level))


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (50, 50), (301, 517), (1000, 37), (2500, 600)])  # the last: two bands
def test_rgba_round_trips_exactly(shape):
    rgba = np.random.default_rng(1).integers(0, 256, (*shape, 4), dtype=np.uint8)
    image = read_png(rgba_png(rgba, DEFAULT_LEVEL))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image), rgba)


def test_colours_and_alpha_may_be_views_of_other_arrays():
    rgba = np.random.default_rng(6).integers(0, 256, (70, 90, 4), dtype=np.uint8)
    strided = read_png(b"".join(iter_rgba_png(rgba[:, :, :3], rgba[:, :, 3], DEFAULT_LEVEL)))
    assert np.array_equal(np.asarray(strided), rgba)
    flipped = rgba[::-1, ::-1]
    assert np.array_equal(np.asarray(read_png(b"".join(iter_rgba_png(flipped[:, :, :3], flipped[:, :, 3], 0)))), flipped)


@pytest.mark.parametrize(
    "rgb, alpha",
    [
        (np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8)),  # transposed alpha
        (np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5), np.uint8)),  # RGBA given as colours
        (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.uint8)),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.float32)),
    ],
)
def test_colours_and_alpha_that_do_not_fit_are_refused(rgb, alpha):
    with pytest.raises(ValueError):
        iter_rgba_png(rgb, alpha, DEFAULT_LEVEL)


def test_matte_round_trips_with_a_grey_palette():
    matte = np.random.default_rng(2).integers(0, 256, (333, 211), dtype=np.uint8)
    image = read_png(b"".join(iter_matte_png(matte, DEFAULT_MATTE_LEVEL)))
    assert image.mode == "P"
    assert np.array_equal(np.asarray(image), matte)
    assert image.getpalette()[:768] == [v for i in range(256) for v in (i, i, i)]


@pytest.mark.parametrize("level", range(10))
def test_every_level_round_trips_and_deflates_as_documented(level):
    rgba = photo_like((300, 401), 4, seed=level)
    cutout_png = rgba_png(rgba, level)
    assert np.array_equal(np.asarray(read_png(cutout_png)), rgba)
    matte = rgba[:, :, 3].copy()
    assert np.array_equal(np.asarray(read_png(b"".join(iter_matte_png(matte, level)))), matte)
    idat = b"".join(body for kind, body in chunks_of(cutout_png) if kind == b"IDAT")
    assert zlib.decompress(idat)[:1] == b"\x02"  # zlib-format stream of Up-filtered rows
    library = type(compressor(level, filtered=True)).__module__
    assert library == ("isal_zlib" if level in FAST_LEVELS else "zlib")
    if level == 0:
        assert len(idat) > rgba.size  # stored, not deflated
    else:
        assert len(idat) < rgba.size * 0.75


def test_the_fast_levels_are_one_and_two_between_stored_and_zlibs_best():
    assert list(FAST_LEVELS) == [1, 2]
    rgba = photo_like((256, 512), 4, seed=9)
    sizes = {level: len(rgba_png(rgba, level)) for level in (0, 1, 2, 9)}
    assert sizes[0] > max(sizes[1], sizes[2]) > sizes[9]


@pytest.mark.parametrize("level", [-1, 10])
def test_a_level_outside_zero_to_nine_is_refused_before_any_byte(level):
    with pytest.raises(ValueError):
        iter_rgba_png(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), level)
    with pytest.raises(ValueError):
        iter_matte_png(np.zeros((4, 4), np.uint8), level)


def test_chunk_layout_is_azures():
    rgba = np.random.default_rng(3).integers(0, 256, (400, 300, 4), dtype=np.uint8)
    kinds = [kind for kind, _ in chunks_of(rgba_png(rgba, DEFAULT_LEVEL))]
    assert kinds[:4] == [b"IHDR", b"gAMA", b"sRGB", b"cHRM"]
    assert kinds[-1] == b"IEND" and set(kinds[4:-1]) == {b"IDAT"}
    chunks = chunks_of(b"".join(iter_matte_png(rgba[:, :, 0], DEFAULT_MATTE_LEVEL)))
    assert [k for k, _ in chunks][:5] == [b"IHDR", b"gAMA", b"sRGB", b"cHRM", b"PLTE"]
    assert b"tRNS" not in [k for k, _ in chunks]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, colour) == (300, 400, 8, 3)


def test_idat_chunks_are_8192_bytes_but_the_last():
    rgba = np.random.default_rng(4).integers(0, 256, (512, 512, 4), dtype=np.uint8)
    sizes = [len(body) for kind, body in chunks_of(rgba_png(rgba, DEFAULT_LEVEL)) if kind == b"IDAT"]
    assert len(sizes) > 2 and all(size == 8192 for size in sizes[:-1]) and 0 < sizes[-1] <= 8192


def test_output_streams_in_pieces_of_about_a_band():
    rgba = np.random.default_rng(5).integers(0, 256, (3000, 1000, 4), dtype=np.uint8)  # 12 MB that will not deflate
    pieces = [len(piece) for piece in iter_rgba_png(rgba[:, :, :3], rgba[:, :, 3], DEFAULT_LEVEL)]
    assert len(pieces) > 3
    assert max(pieces) < BAND_BYTES * 1.05  # the encoder never holds the whole file


def test_matte_at_the_default_level_is_byte_identical_to_azures_recorded_output():
    recorded = (require_shared(AZURE_SPEC / "observed-outputs") / "foregroundMatting_building_800x600.png").read_bytes()
    matte = np.asarray(read_png(recorded))
    assert b"".join(iter_matte_png(matte, DEFAULT_MATTE_LEVEL)) == recorded


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
