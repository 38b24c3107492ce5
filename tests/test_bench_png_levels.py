"""bench/png_levels.py deflates the very rows the encoder deflates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from png_levels import deflate, filtered_rows  # noqa: E402

from app.imaging.png import iter_matte_png, iter_rgba_png  # noqa: E402
from test_png import chunks_of  # noqa: E402


def idat(png: bytes) -> bytes:
    return b"".join(body for kind, body in chunks_of(png) if kind == b"IDAT")


def test_the_rows_are_the_filtered_scanlines():
    matte = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)
    rows = np.frombuffer(filtered_rows(b"".join(iter_matte_png(matte, 0))), np.uint8).reshape(40, 31)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:], matte)
    rgba = np.random.default_rng(1).integers(0, 256, (20, 10, 4), dtype=np.uint8)
    rows = np.frombuffer(filtered_rows(b"".join(iter_rgba_png(rgba[:, :, :3], rgba[:, :, 3], 0))), np.uint8).reshape(20, 41)
    assert (rows[:, 0] == 2).all()  # Up: each row less the one above
    assert np.array_equal(np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8), rgba.reshape(20, 40))


@pytest.mark.parametrize("library, level", [("zlib", 6), ("isal", 2)])
def test_deflating_them_gives_the_encoders_stream(library, level):
    rows_up, rows_flat = np.mgrid[:300, :200]
    matte = ((rows_up + rows_flat) % 256).astype(np.uint8)
    png = b"".join(iter_matte_png(matte, level))
    assert deflate(filtered_rows(b"".join(iter_matte_png(matte, 0))), library, level, filtered=False) == len(idat(png))
