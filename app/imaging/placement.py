"""Where a cut-out's subject goes: margins around it, a region of interest, scaling and positioning on the canvas.

Pure geometry on numpy arrays, in no API's words. Lengths are pixels or a share of a reference size (``Length``);
the caller parses its parameters into these and turns :class:`PlacementError` into its own errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.imaging.output import Box

MAX_RELATIVE_MARGIN = 0.5  # a relative margin is at most half the subject's size along its axis
MAX_PIXEL_MARGIN = 500  # an absolute one at most this many pixels


class PlacementError(ValueError):
    """Geometry that cannot be applied to this image."""


class RegionOutOfBounds(PlacementError):
    pass


class RegionEmpty(PlacementError):
    pass


@dataclass(frozen=True)
class Length:
    """``value`` pixels, or (``relative``) ``value`` as a fraction of a reference size (0.1 for "10%")."""

    value: float
    relative: bool = False

    def pixels(self, reference: float) -> float:
        return self.value * reference if self.relative else self.value


Margins = tuple[Length, Length, Length, Length]  # top, right, bottom, left
Region = tuple[Length, Length, Length, Length]  # x1, y1, x2, y2
Position = tuple[float, float]  # horizontal, vertical: 0 puts the subject against the left/top edge, 1 the right/bottom


def margins_in_pixels(margins: Margins, box: Box) -> tuple[int, int, int, int]:
    """Each margin in pixels, relative ones taken of the subject's height (top, bottom) or width (left, right).

    Capped per side: a relative margin at half the subject's size along its axis, an absolute one at 500 pixels,
    so a crop is never more than twice the subject plus 1000 pixels a side.
    """
    out = []
    for length, reference in zip(margins, (box.height, box.width, box.height, box.width), strict=True):
        if length.relative:
            pixels = min(length.value, MAX_RELATIVE_MARGIN) * reference
        else:
            pixels = min(length.value, MAX_PIXEL_MARGIN)
        out.append(max(0, round(pixels)))
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class FractionalBox:
    """A rectangle as fractions of an image's width and height, so it carries over to a scaled copy of the image."""

    left: float
    top: float
    right: float
    bottom: float

    def on(self, width: int, height: int) -> Box:
        left, top = round(self.left * width), round(self.top * height)
        right, bottom = max(left + 1, round(self.right * width)), max(top + 1, round(self.bottom * height))
        return Box(left, top, min(right, width) - left, min(bottom, height) - top)


def region_of(region: Region, width: int, height: int) -> FractionalBox:
    """A region given in pixels of (or shares of) a ``width`` x ``height`` image, as fractions of it.

    :class:`RegionOutOfBounds` when it reaches outside the image, :class:`RegionEmpty` when it has no area.
    """
    x1, y1, x2, y2 = (length.pixels(reference) for length, reference in zip(region, (width, height, width, height), strict=True))
    if min(x1, y1, x2, y2) < 0 or max(x1, x2) > width or max(y1, y2) > height:
        raise RegionOutOfBounds(f"the region ({x1:g}, {y1:g})-({x2:g}, {y2:g}) lies outside the {width} x {height} image")
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise RegionEmpty(f"the region ({x1:g}, {y1:g})-({x2:g}, {y2:g}) has no area")
    return FractionalBox(x1 / width, y1 / height, x2 / width, y2 / height)


def keep_region(alpha: np.ndarray, box: Box) -> np.ndarray:
    """``alpha`` with everything outside ``box`` transparent."""
    kept = np.zeros_like(alpha)
    rows, columns = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
    kept[rows, columns] = alpha[rows, columns]
    return kept


def placed_box(box: Box, canvas: tuple[int, int], scale: float | None, position: Position | None) -> Box:
    """Where the subject's ``box`` lands on a ``canvas`` (width, height).

    ``scale``: the subject is resized, aspect kept, to fit ``scale`` of the canvas's width and height (None: its
    size stays). ``position``: where it goes (see :data:`Position`); None keeps its centre where it was.
    """
    canvas_width, canvas_height = canvas
    width, height = box.width, box.height
    if scale is not None:
        factor = min(scale * canvas_width / box.width, scale * canvas_height / box.height)
        width, height = max(1, round(box.width * factor)), max(1, round(box.height * factor))
    if position is None:
        left = round(box.left + box.width / 2 - width / 2)
        top = round(box.top + box.height / 2 - height / 2)
    else:
        left = round((canvas_width - width) * position[0])
        top = round((canvas_height - height) * position[1])
    return Box(left, top, width, height)


def place(
    rgb: np.ndarray, alpha: np.ndarray, box: Box, canvas: tuple[int, int], target: Box
) -> tuple[np.ndarray, np.ndarray]:
    """The ``box`` part of the cut-out moved (and resized) to ``target`` on a transparent ``canvas`` (width, height).

    The colours and alpha are resized with Lanczos; what falls outside the canvas is cut off.
    """
    canvas_width, canvas_height = canvas
    out_rgb = np.zeros((canvas_height, canvas_width, 3), dtype=np.uint8)
    out_alpha = np.zeros((canvas_height, canvas_width), dtype=np.uint8)
    rows, columns = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
    subject_rgb, subject_alpha = rgb[rows, columns], alpha[rows, columns]
    if (target.width, target.height) != (box.width, box.height):
        size = (target.width, target.height)
        subject_rgb = np.asarray(Image.fromarray(subject_rgb).resize(size, Image.Resampling.LANCZOS))
        subject_alpha = np.asarray(Image.fromarray(subject_alpha).resize(size, Image.Resampling.LANCZOS))
    # The part of the target inside the canvas, in canvas and in subject coordinates.
    top, left = max(target.top, 0), max(target.left, 0)
    bottom, right = min(target.top + target.height, canvas_height), min(target.left + target.width, canvas_width)
    if top < bottom and left < right:
        source = (slice(top - target.top, bottom - target.top), slice(left - target.left, right - target.left))
        out_rgb[top:bottom, left:right] = subject_rgb[source]
        out_alpha[top:bottom, left:right] = subject_alpha[source]
    return out_rgb, out_alpha
