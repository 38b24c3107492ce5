"""Placement geometry: margins and their caps, regions of interest, scaling and positioning a subject."""

from __future__ import annotations

import numpy as np
import pytest

from app.imaging.output import Box, foreground_box
from app.imaging.placement import (
    FractionalBox,
    Length,
    RegionEmpty,
    RegionOutOfBounds,
    keep_region,
    margins_in_pixels,
    place,
    placed_box,
    region_of,
)


def test_margins_are_pixels_or_shares_of_the_subject_and_capped():
    box = Box(10, 20, 200, 100)
    px, pct = Length(30), Length(0.1, relative=True)
    assert margins_in_pixels((px, px, px, px), box) == (30, 30, 30, 30)
    # Relative: top and bottom of the height (100), left and right of the width (200).
    assert margins_in_pixels((pct, pct, pct, pct), box) == (10, 20, 10, 20)
    assert margins_in_pixels((Length(900), Length(0.8, True), Length(0), Length(500)), box) == (500, 100, 0, 500)


def test_a_region_is_checked_against_the_image_and_carried_over_as_fractions():
    region = (Length(0.25, True), Length(10), Length(1.0, True), Length(50))
    fractions = region_of(region, 200, 100)
    assert fractions == FractionalBox(0.25, 0.1, 1.0, 0.5)
    assert fractions.on(400, 200) == Box(100, 20, 300, 80)  # the same region on an image twice the size
    with pytest.raises(RegionOutOfBounds):
        region_of((Length(0), Length(0), Length(201), Length(10)), 200, 100)
    with pytest.raises(RegionOutOfBounds):
        region_of((Length(0), Length(0), Length(1.01, True), Length(10)), 200, 100)
    with pytest.raises(RegionEmpty):
        region_of((Length(50), Length(0), Length(50), Length(10)), 200, 100)
    with pytest.raises(RegionEmpty):
        region_of((Length(60), Length(0), Length(50), Length(10)), 200, 100)


def test_keep_region_clears_everything_outside():
    alpha = np.full((10, 20), 200, np.uint8)
    kept = keep_region(alpha, Box(5, 2, 10, 3))
    assert kept[2:5, 5:15].min() == 200
    assert kept.sum() == 200 * 30


def test_placed_box_scales_to_fit_the_canvas_share_and_positions():
    box = Box(10, 10, 40, 20)  # 2:1
    assert placed_box(box, (200, 100), 0.5, (0.5, 0.5)) == Box(50, 25, 100, 50)
    assert placed_box(box, (200, 100), 1.0, (0.0, 1.0)) == Box(0, 0, 200, 100)
    assert placed_box(box, (400, 100), 0.5, (1.0, 0.0)) == Box(300, 0, 100, 50)  # height-bound: 50% of 100
    # No position: the centre stays; no scale: the size stays.
    assert placed_box(box, (200, 100), 0.1, None) == Box(20, 15, 20, 10)
    assert placed_box(box, (200, 100), None, (0.5, 0.5)) == Box(80, 40, 40, 20)


def test_place_moves_and_resizes_the_subject_onto_a_transparent_canvas():
    rgb = np.zeros((50, 80, 3), np.uint8)
    alpha = np.zeros((50, 80), np.uint8)
    rgb[10:20, 10:30] = (200, 50, 10)
    alpha[10:20, 10:30] = 255
    box = foreground_box(alpha)
    assert box == Box(10, 10, 20, 10)
    out_rgb, out_alpha = place(rgb, alpha, box, (80, 50), Box(40, 30, 40, 20))
    assert out_alpha.shape == (50, 80)
    assert foreground_box(out_alpha, 127) == Box(40, 30, 40, 20)
    assert tuple(out_rgb[40, 60]) == (200, 50, 10)
    assert out_alpha[:30].max() == 0 and out_alpha[:, :40].max() == 0
    # Partly off the canvas: cut off, not wrapped.
    _, clipped = place(rgb, alpha, box, (80, 50), Box(70, 45, 20, 10))
    assert foreground_box(clipped) == Box(70, 45, 10, 5)
