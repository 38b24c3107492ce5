"""Colour decontamination: the foreground's own colour in semi-transparent pixels.

A pixel at the edge of hair is a mix, ``I = a F + (1 - a) B``, of the subject's colour ``F`` and
the old background's ``B``. A cut-out that keeps ``I`` as its colour carries the old background
with it, and pasted on a contrasting background that shows as a halo. This module estimates
``F`` with blur-fusion (Forte & Pitié, "Approximate fast foreground colour estimation", ICIP
2021): local alpha-weighted means of foreground and background, then the residual of the
compositing equation given back to the foreground. Two passes, a wide one and a narrow one.

Only box filters, so it is cheap and runs wherever torch runs. Memory stays bounded on large
images: the means are computed at most at ``WORK_PIXELS`` and the full-size result is
assembled strip by strip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.inference.refine import box_filter, to_unit_floats

WIDE_PIXELS = 250_000  # the wide pass: colours of whole regions, so a small copy will do
WORK_PIXELS = 4_000_000  # the narrow pass, and the means the full-size image is corrected from
WIDE_RADIUS = 0.045  # of the long side: reaches past the widest semi-transparent band (hair)
NARROW_RADIUS = 3  # pixels at work size
STRIP_ROWS = 512  # full-size rows assembled at once
_EPS = 1e-5


def _means(alpha: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The local means of F (weighted by a) and of B (weighted by 1 - a)."""
    mean_f = box_filter(foreground * alpha, radius) / (box_filter(alpha, radius) + _EPS)
    mean_b = box_filter(background * (1 - alpha), radius) / (box_filter(1 - alpha, radius) + _EPS)
    return mean_f, mean_b


def _refine(image: torch.Tensor, alpha: torch.Tensor, mean_f: torch.Tensor, mean_b: torch.Tensor) -> torch.Tensor:
    """F from its local mean, plus what of the compositing equation's residual falls to the foreground."""
    return (mean_f + alpha * (image - alpha * mean_f - (1 - alpha) * mean_b)).clamp(0, 1)


def _as_tensor(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``H x W`` or ``H x W x 3`` -> float ``1 x C x h x w`` in [0, 1], box-downsampled to ``size`` (height, width)."""
    if pixels.shape[:2] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BOX))
    return to_unit_floats(pixels)


def _upsampled(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _fit(height: int, width: int, pixels: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _rows_of(mean: torch.Tensor, top: int, bottom: int, height: int, width: int) -> torch.Tensor:
    """Rows ``top:bottom`` of ``mean`` bilinearly upsampled to ``height x width``, without upsampling the rest."""
    ys = (torch.arange(top, bottom, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None].to(mean.device)
    return F.grid_sample(mean, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.inference_mode()
def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 image and ``H x W`` uint8 alpha -> ``H x W x 3`` uint8 foreground colours.

    Opaque pixels keep their colour; transparent ones keep theirs too (they are invisible, and
    software that ignores alpha still shows the photo there).
    """
    height, width = alpha.shape
    wide_size = _fit(height, width, WIDE_PIXELS)
    wide_image, wide_alpha = _as_tensor(rgb, wide_size), _as_tensor(alpha, wide_size)
    wide_mean_f, wide_b = _means(wide_alpha, wide_image, wide_image, max(4, round(WIDE_RADIUS * max(wide_size))))
    wide_f = _refine(wide_image, wide_alpha, wide_mean_f, wide_b)

    work_size = _fit(height, width, WORK_PIXELS)
    work_alpha = _as_tensor(alpha, work_size)  # the narrow pass refines the wide estimates, not the image
    mean_f, mean_b = _means(work_alpha, _upsampled(wide_f, work_size), _upsampled(wide_b, work_size), NARROW_RADIUS)
    del work_alpha, wide_image, wide_alpha, wide_mean_f, wide_f, wide_b

    out = rgb.copy()
    for top in range(0, height, STRIP_ROWS):
        bottom = min(height, top + STRIP_ROWS)
        strip_alpha = to_unit_floats(alpha[top:bottom])
        mixed = (strip_alpha > 0) & (strip_alpha < 1)
        if not bool(mixed.any()):
            continue  # nothing semi-transparent here: opaque and transparent pixels keep the photo's colour
        strip_image = to_unit_floats(rgb[top:bottom])
        strip_f = _rows_of(mean_f, top, bottom, height, width)
        strip_b = _rows_of(mean_b, top, bottom, height, width)
        colour = torch.where(mixed, _refine(strip_image, strip_alpha, strip_f, strip_b), strip_image)
        out[top:bottom] = (colour[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    return out
