"""Matte refinements around the model: flip test-time augmentation and guided-filter upsampling; with the box filter
(also the foreground's colours'), the pixels-to-floats conversion, and the square pieces of a full-size photo that the
matting stage and the foreground's colours work on (their pixels, and a smaller map sampled at them).

All in torch, so they run wherever the model runs (CPU or GPU).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_unit_floats(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``H x W`` or ``H x W x 3`` -> float32 ``1 x C x H x W`` in [0, 1]."""
    # A copy: decoded images and PIL's outputs are read-only, which torch.from_numpy warns about.
    tensor = torch.from_numpy(np.array(pixels, copy=True)).float().div_(255)
    return tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]


def pieces(pixels: np.ndarray, tops: Sequence[int], lefts: Sequence[int], size: int) -> np.ndarray:
    """The ``size x size`` pieces of ``pixels`` (``H x W [x C]``) whose top-left corners are (tops, lefts), which may
    lie past the image's edge: pixels past it repeat the edge (as box_filter's replicated edges). ``n x size x size [x C]``."""
    height, width = pixels.shape[:2]
    out = np.empty((len(tops), size, size) + pixels.shape[2:], dtype=pixels.dtype)
    for n, (y, x) in enumerate(zip(tops, lefts)):
        piece = pixels[max(y, 0) : max(y + size, 0), max(x, 0) : max(x + size, 0)]
        if piece.shape[:2] != (size, size):
            above, before = min(size, max(0, -y)), min(size, max(0, -x))
            pad = ((above, size - above - piece.shape[0]), (before, size - before - piece.shape[1])) + ((0, 0),) * (pixels.ndim - 2)
            piece = np.pad(piece, pad, mode="edge")
        out[n] = piece
    return out


def sample_pieces(maps: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int, height: float, width: float) -> torch.Tensor:
    """``maps`` (``1 x C x h x w``), spanning a ``height x width`` image, bilinearly at every image pixel of its
    ``size x size`` pieces at (tops, lefts) (past the edge: the edge's value): ``n x C x size x size``."""
    channels, n = maps.shape[1], len(tops)
    offsets = torch.arange(size, dtype=torch.float32) + 0.5
    gy = (tops[:, None].float() + offsets) / height * 2 - 1
    gx = (lefts[:, None].float() + offsets) / width * 2 - 1
    grid = torch.stack((gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)), -1)
    sampled = F.grid_sample(maps, grid.reshape(1, n * size, size, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(channels, n, size, size).transpose(0, 1)


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, edges replicated (N x C x H x W).

    Two 1-D passes. Small radii average directly; wide ones difference running sums (in float64,
    so means of large windows stay exact), which costs the same whatever the radius.
    """
    if radius > 8:
        return _running_mean(_running_mean(x, radius, dim=2), radius, dim=3)
    size = 2 * radius + 1
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(padded, (size, 1), stride=1), (1, size), stride=1)


def _running_mean(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    padding = (0, 0, radius + 1, radius) if dim == 2 else (radius + 1, radius, 0, 0)
    sums = F.pad(x, padding, mode="replicate").double().cumsum(dim)
    length = x.shape[dim]
    window = sums.narrow(dim, 2 * radius + 1, length) - sums.narrow(dim, 0, length)
    return (window / (2 * radius + 1)).to(x.dtype)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter with a grey guide: ``source`` smoothed, but following ``guide``'s edges.

    guide, source: N x 1 x H x W in [0, 1].
    """
    mean_i = box_filter(guide, radius)
    mean_p = box_filter(source, radius)
    cov_ip = box_filter(guide * source, radius) - mean_i * mean_p
    var_i = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def upsample_guided(matte: torch.Tensor, rgb: torch.Tensor, radius: int | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Bilinear upsampling of a low-resolution matte to ``rgb``'s size, then a guided filter at full size.

    matte: N x 1 x h x w in [0, 1]; rgb: N x 3 x H x W in [0, 1]. The filter only acts in the
    uncertain band (where the bilinear matte is neither 0 nor 1), so solid regions stay solid.
    """
    height, width = rgb.shape[-2:]
    coarse = F.interpolate(matte, size=(height, width), mode="bilinear", align_corners=False)
    scale = max(height / matte.shape[-2], width / matte.shape[-1], 1.0)
    radius = radius or max(2, int(round(2 * scale)))
    guide = rgb.mean(dim=1, keepdim=True)
    refined = guided_filter(guide, coarse, radius, eps).clamp(0, 1)
    band = ((coarse > 0.02) & (coarse < 0.98)).float()
    band = (box_filter(band, radius) > 0).float()  # widen the band by the filter's reach
    return coarse + band * (refined - coarse)


def solve_symmetric3(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` at every pixel: matrix N x 3 x 3 x h x w (symmetric, positive definite), rhs N x 3 x h x w.

    Cramer's rule written out: a batched LAPACK call per pixel is far slower for 3 x 3 systems.
    """
    m = matrix
    c00 = m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1]
    c01 = m[:, 1, 2] * m[:, 2, 0] - m[:, 1, 0] * m[:, 2, 2]
    c02 = m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0]
    c11 = m[:, 0, 0] * m[:, 2, 2] - m[:, 0, 2] * m[:, 2, 0]
    c12 = m[:, 0, 1] * m[:, 2, 0] - m[:, 0, 0] * m[:, 2, 1]
    c22 = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    determinant = m[:, 0, 0] * c00 + m[:, 0, 1] * c01 + m[:, 0, 2] * c02
    r0, r1, r2 = rhs[:, 0], rhs[:, 1], rhs[:, 2]
    # The inverse of a symmetric matrix is its cofactor matrix (symmetric too) over the determinant.
    x0 = c00 * r0 + c01 * r1 + c02 * r2
    x1 = c01 * r0 + c11 * r1 + c12 * r2
    x2 = c02 * r0 + c12 * r1 + c22 * r2
    return torch.stack((x0, x1, x2), 1) / determinant.unsqueeze(1)


def guided_upsample(
    source: torch.Tensor, guide: torch.Tensor, radius: int = 2, eps: float = 1e-3, small_guide: torch.Tensor | None = None
) -> torch.Tensor:
    """The fast guided filter (He & Sun, 2015) with a colour guide: a coarse map brought to the guide's size.

    source: N x 1 x h x w in [0, 1], coarse; guide: N x 3 x H x W in [0, 1]. At the coarse size the map is
    fitted, window by window, as a linear function of the guide's colour (downsampled to match); the
    fitted coefficients are smoothed, upsampled and applied to the full-size guide, so the map's
    edges land on the image's own edges instead of on the coarse grid. ``small_guide`` is the guide
    already reduced to the coarse size, when the caller has a cheaper way to make it.
    """
    n, _, h, w = source.shape
    small = small_guide if small_guide is not None else F.interpolate(guide, size=(h, w), mode="area")
    mean_i = box_filter(small, radius)
    mean_p = box_filter(source, radius)
    cov_ip = box_filter(small * source, radius) - mean_i * mean_p
    outer = (small[:, :, None] * small[:, None, :]).reshape(n, 9, h, w)
    var_i = box_filter(outer, radius).reshape(n, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None, :]
    var_i = var_i + eps * torch.eye(3, dtype=source.dtype, device=source.device).view(1, 3, 3, 1, 1)
    a = solve_symmetric3(var_i, cov_ip)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    size = guide.shape[-2:]
    mean_a = F.interpolate(box_filter(a, radius), size=size, mode="bilinear", align_corners=False)
    mean_b = F.interpolate(box_filter(b, radius), size=size, mode="bilinear", align_corners=False)
    return (mean_a * guide).sum(1, keepdim=True) + mean_b
