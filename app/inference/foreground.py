"""Colour decontamination: the foreground's own colour in semi-transparent pixels.

A pixel at the edge of hair is a mix, ``I = a F + (1 - a) B``, of the subject's colour ``F`` and
the old background's ``B``. A cut-out that keeps ``I`` as its colour carries the old background
with it, and pasted on a contrasting background that shows as a halo. This module estimates
``F`` with blur-fusion (Forte & Pitié, "Approximate fast foreground colour estimation", ICIP
2021): local alpha-weighted means of foreground and background, then the residual of the
compositing equation given back to the foreground. Two passes, a wide one and a narrow one.

Only box filters, so it runs wherever torch runs, and only where it is needed: the wide pass
works on a small copy of the whole photo (``WIDE_PIXELS``); the narrow pass, and the colours,
only on the ``TILE`` x ``TILE`` pieces of the photo that hold a semi-transparent pixel. After
the matting stage everything off its band is exactly 0 or 255, so the cost follows the
subject's soft outline, not the photo's area: on the 2-core development CPU, for a hairy
portrait whose refined matte is soft on 4.6 % of its pixels, 0.10 s at 2 MP and 0.46 s at
24 MP, where the whole-photo narrow pass took 0.27 s and 2.1 s (three calls each, in-process);
an alpha soft everywhere, 0.2 s at 2 MP and 2.1 s at 24 (bench/stages.py). Memory beyond the
output: the wide copy and ``TILES_AT_ONCE`` pieces.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.inference.refine import box_filter, pieces, sample_pieces, to_unit_floats

WIDE_PIXELS = 250_000  # the wide pass: colours of whole regions, so a small copy will do
WIDE_RADIUS = 0.045  # of the long side: reaches past the widest semi-transparent band (hair)
NARROW_RADIUS = 3  # pixels of the photo scaled to at most NARROW_PIXELS: the narrow pass's reach
NARROW_PIXELS = 4_000_000
TILE = 128  # full-size pixels per side of the pieces the narrow pass works on
TILES_AT_ONCE = 16
_EPS = 1e-5


def _means(alpha: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor, radius: int, box=box_filter) -> tuple[torch.Tensor, torch.Tensor]:
    """The local means of F (weighted by a) and of B (weighted by 1 - a), the box sums in one call (the mean of 1 - a
    is 1 less the mean of a)."""
    sums = box(torch.cat((foreground * alpha, background * (1 - alpha), alpha), 1), radius)
    mean_f = sums[:, 0:3] / (sums[:, 6:7] + _EPS)
    mean_b = sums[:, 3:6] / (1 - sums[:, 6:7] + _EPS)
    return mean_f, mean_b


def _piece_box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """box_filter for the narrow pass's pieces: differences of float32 running sums, several times faster than
    averaging windows, and exact to about 1e-6 over a piece's few hundred pixels."""
    size = 2 * radius + 1
    rows = F.pad(x, (0, 0, radius + 1, radius), mode="replicate").cumsum(2)
    x = rows[:, :, size:] - rows[:, :, :-size]
    cols = F.pad(x, (radius + 1, radius, 0, 0), mode="replicate").cumsum(3)
    return (cols[..., size:] - cols[..., :-size]) / (size * size)


def _refine(image: torch.Tensor, alpha: torch.Tensor, mean_f: torch.Tensor, mean_b: torch.Tensor) -> torch.Tensor:
    """F from its local mean, plus what of the compositing equation's residual falls to the foreground."""
    return (mean_f + alpha * (image - alpha * mean_f - (1 - alpha) * mean_b)).clamp(0, 1)


def _as_tensor(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``H x W`` or ``H x W x 3`` -> float ``1 x C x h x w`` in [0, 1], box-downsampled to ``size`` (height, width)."""
    if pixels.shape[:2] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BOX))
    return to_unit_floats(pixels)


def _fit(height: int, width: int, pixels: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    return max(1, round(height * scale)), max(1, round(width * scale))


def mixed_tiles(alpha: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The (top, left) corners of the ``tile x tile`` pieces of ``alpha`` (``H x W`` uint8) that hold a pixel
    strictly between 0 and 255."""
    height, width = alpha.shape
    rows, cols = -(-height // tile), -(-width // tile)
    mixed = np.zeros((rows * tile, cols * tile), dtype=bool)
    np.less(alpha - np.uint8(1), 254, out=mixed[:height, :width])  # 0 wraps to 255: only 1..254 are below 254
    ty, tx = np.nonzero(mixed.reshape(rows, tile, cols, tile).any(axis=(1, 3)))
    return ty * tile, tx * tile


@torch.inference_mode()
def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 image and ``H x W`` uint8 alpha -> ``H x W x 3`` uint8 foreground colours.

    Opaque pixels keep their colour; transparent ones keep theirs too (they are invisible, and
    software that ignores alpha still shows the photo there).
    """
    height, width = alpha.shape
    out = rgb.copy()
    tops, lefts = mixed_tiles(alpha, TILE)
    if len(tops) == 0:
        return out
    wide_size = _fit(height, width, WIDE_PIXELS)
    wide_image, wide_alpha = _as_tensor(rgb, wide_size), _as_tensor(alpha, wide_size)
    wide_mean_f, wide_b = _means(wide_alpha, wide_image, wide_image, max(4, round(WIDE_RADIUS * max(wide_size))))
    wide_f = _refine(wide_image, wide_alpha, wide_mean_f, wide_b)
    wide = torch.cat((wide_f, wide_b), 1)
    del wide_image, wide_alpha, wide_mean_f, wide_f, wide_b

    # The narrow means, computed on each piece and a halo of their reach around it, equal the whole photo's there.
    radius = max(1, round(NARROW_RADIUS * max(height, width) / max(_fit(height, width, NARROW_PIXELS))))
    for start in range(0, len(tops), TILES_AT_ONCE):
        top, left = tops[start : start + TILES_AT_ONCE].tolist(), lefts[start : start + TILES_AT_ONCE].tolist()
        above, before = [y - radius for y in top], [x - radius for x in left]
        span = TILE + 2 * radius
        piece_alpha = torch.from_numpy(pieces(alpha, above, before, span)).float().div_(255)[:, None]
        piece_wide = sample_pieces(wide, torch.tensor(above), torch.tensor(before), span, height, width)
        mean_f, mean_b = _means(piece_alpha, piece_wide[:, :3], piece_wide[:, 3:], radius, _piece_box)
        core = (slice(None), slice(None), slice(radius, radius + TILE), slice(radius, radius + TILE))
        piece_image = torch.from_numpy(pieces(rgb, top, left, TILE)).permute(0, 3, 1, 2).float().div_(255)
        piece_alpha = piece_alpha[core]
        mixed = (piece_alpha > 0) & (piece_alpha < 1)
        colour = torch.where(mixed, _refine(piece_image, piece_alpha, mean_f[core], mean_b[core]), piece_image)
        colour = (colour.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy()
        for n, (y, x) in enumerate(zip(top, left)):
            bottom, right = min(height, y + TILE), min(width, x + TILE)
            out[y:bottom, x:right] = colour[n, : bottom - y, : right - x]
    return out
