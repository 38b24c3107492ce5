"""The quality benchmarks' own logic: the trimap band matting is measured with, and the solver on a known composite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from band_matting import band_matte, trimap  # noqa: E402


def soft_disc(size: int = 96, radius: float = 30.0, softness: float = 4.0) -> np.ndarray:
    """A disc whose edge ramps from 1 to 0 over ``softness`` pixels."""
    y, x = np.mgrid[:size, :size]
    distance = np.hypot(x - size / 2, y - size / 2)
    return np.clip((radius - distance) / softness + 0.5, 0, 1).astype(np.float32)


def test_trimap_is_the_soft_zone_widened_by_the_band():
    matte = soft_disc()
    for band in (0, 3, 6):
        tri = trimap(matte, band)
        assert set(np.unique(tri)) == {0.0, 0.5, 1.0}
        # Definite pixels lie more than ``band`` pixels (a square window) from any pixel on the other side of 0.95 / 0.05.
        y, x = np.nonzero(tri == 1.0)
        for yy, xx in zip(y[::37], x[::37], strict=True):
            assert (matte[max(yy - band, 0):yy + band + 1, max(xx - band, 0):xx + band + 1] > 0.95).all()
        y, x = np.nonzero(tri == 0.0)
        for yy, xx in zip(y[::53], x[::53], strict=True):
            assert (matte[max(yy - band, 0):yy + band + 1, max(xx - band, 0):xx + band + 1] < 0.05).all()
        # Everything soft is unknown, and the unknown zone grows with the band.
        assert (tri[(matte > 0.05) & (matte < 0.95)] == 0.5).all()
    assert (trimap(matte, 6) == 0.5).sum() > (trimap(matte, 3) == 0.5).sum() > (trimap(matte, 0) == 0.5).sum()


def test_a_matte_without_a_definite_side_is_returned_as_it_is():
    flat = np.full((40, 40), 0.5, dtype=np.float32)
    assert band_matte(np.zeros((40, 40, 3), np.uint8), flat, 3) is flat


def test_closed_form_recovers_a_two_colour_composite():
    pytest.importorskip("pymatting", reason="pymatting comes with the bench extra: pip install -e '.[bench]'")
    truth = soft_disc()
    foreground, background = np.array([230, 60, 40]), np.array([30, 90, 200])
    rgb = np.rint(truth[..., None] * foreground + (1 - truth[..., None]) * background).astype(np.uint8)
    hard = (truth > 0.5).astype(np.float32)  # what a segmentation would give: right place, no softness
    solved = band_matte(rgb, hard, band=4)
    band = (truth > 0.02) & (truth < 0.98)
    assert np.abs(solved - truth)[band].mean() < 0.25 * np.abs(hard - truth)[band].mean()
