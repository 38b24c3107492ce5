"""Matte refinements around the model: flip test-time augmentation and guided-filter upsampling.

Both are in torch, so they run wherever the model runs (CPU or GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, edges replicated (N x C x H x W)."""
    size = 2 * radius + 1
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), size, stride=1)


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
