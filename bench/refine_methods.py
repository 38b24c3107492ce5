"""The refinement methods tried beside the one shipped (app/inference/matting.py), for bench/quality.py --refine's table.

Each takes the photo (``H x W x 3`` uint8) and the network's ``S x S`` matte and returns an ``H x W`` uint8 alpha:

- ``guided_whole``: the fast guided filter over the whole matte (app/inference/refine.py's ``upsample_guided``, what
  the issue measured at -6 % soft-band error);
- ``band_fit``: in the shipped stage's band, alpha as a confidence-weighted local linear function of colour (a guided
  filter whose fit leans on the pixels the network is sure of), applied at full size, blended with the network's matte
  by how much of the matte's variance the colour explains;
- ``band_projection``: in the band, local foreground and background colours (alpha-weighted means of the sure
  regions, as blur-fusion makes them) and alpha as the projection of ``I - B`` on ``F - B`` at every full-size pixel,
  blended with the network's matte by ``|F - B|^2``;
- ``band_pymatting``: the shipped stage with its band solved by pymatting's closed-form, large-kernel or KNN solver
  on the trimap (the band unknown, the rest fixed at the network's matte): the field's reference solvers;
- ``closed_form_alone``: the shipped stage without the network's matte as a prior (plain closed-form matting in the band).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.inference.matting import DEFAULT_PARAMS, MattingParams, refine_matte, work_factor
from app.inference.pipeline import matte_at_size
from app.inference.refine import box_filter, pieces, sample_pieces, solve_symmetric3, to_unit_floats, upsample_guided


@torch.inference_mode()
def guided_whole(rgb: np.ndarray, matte: np.ndarray) -> np.ndarray:
    image = to_unit_floats(rgb)
    refined = upsample_guided(torch.from_numpy(np.asarray(matte, dtype=np.float32))[None, None], image)[0, 0]
    return (refined.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def _working(rgb: np.ndarray, matte: np.ndarray, work_pixels: int, band: float, low: float, high: float):
    """The working-size image, prior, band and factor, as the shipped stage makes them."""
    height, width = rgb.shape[:2]
    factor = work_factor(height, width, work_pixels)
    small = np.asarray(Image.fromarray(rgb).reduce(factor)) if factor > 1 else rgb
    image = to_unit_floats(small)
    prior = F.interpolate(torch.from_numpy(np.asarray(matte, dtype=np.float32))[None, None], size=small.shape[:2], mode="bilinear", align_corners=False)
    unit = max(small.shape[:2]) / max(matte.shape)
    reach = max(1, round(band * unit))
    unsure = ((prior > low) & (prior < high)).float()
    mask = F.max_pool2d(unsure, 2 * reach + 1, 1, reach)
    return image, prior, mask, factor, unit


def _apply(rgb: np.ndarray, base: np.ndarray, factor: int, maps: torch.Tensor, mask: torch.Tensor, alpha_of) -> np.ndarray:
    """At every full-size pixel of the band's blocks: ``alpha_of(pixels, sampled maps, base)``; elsewhere the base."""
    height, width = base.shape
    block = 16 * factor
    rows, cols = -(-mask.shape[-2] // 16), -(-mask.shape[-1] // 16)
    grown = F.max_pool2d(mask, 3, 1, 1)
    active = F.max_pool2d(F.pad(grown, (0, cols * 16 - mask.shape[-1], 0, rows * 16 - mask.shape[-2])), 16)[0, 0] > 0
    ty, tx = torch.nonzero(active, as_tuple=True)
    out = base.copy()
    maps = torch.cat((maps, grown), 1)
    for start in range(0, len(ty), 64):
        ys, xs = ty[start : start + 64] * block, tx[start : start + 64] * block
        y_list, x_list = ys.tolist(), xs.tolist()
        pixels = torch.from_numpy(pieces(rgb, y_list, x_list, block)).permute(0, 3, 1, 2).float() / 255
        old = torch.from_numpy(pieces(base, y_list, x_list, block)).float()[:, None] / 255
        sampled = sample_pieces(maps, ys, xs, block, factor * mask.shape[-2], factor * mask.shape[-1])
        new = torch.where(sampled[:, -1:] > 0.5, alpha_of(pixels, sampled[:, :-1], old).clamp(0, 1), old)
        values = (new[:, 0] * 255 + 0.5).to(torch.uint8).numpy()
        for n, (y, x) in enumerate(zip(y_list, x_list)):
            bottom, right = min(height, y + block), min(width, x + block)
            out[y:bottom, x:right] = values[n, : bottom - y, : right - x]
    return out


def _weighted_fit(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, radius: int, epsilon: float):
    """Per window, the weighted least-squares fit target ~ a . image + b; and the share of the target's variance it explains."""
    n, _, h, w = image.shape
    total = box_filter(weight, radius) + 1e-6
    mean_i = box_filter(weight * image, radius) / total
    mean_p = box_filter(weight * target, radius) / total
    cross = box_filter(weight * image * target, radius) / total - mean_i * mean_p
    outer = (image[:, :, None] * image[:, None, :]).reshape(n, 9, h, w)
    covariance = (box_filter(weight * outer, radius) / total).reshape(n, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None, :]
    a = solve_symmetric3(covariance + epsilon * torch.eye(3).view(1, 3, 3, 1, 1), cross)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    variance = box_filter(weight * target * target, radius) / total - mean_p * mean_p
    explained = ((a * cross).sum(1, keepdim=True) / (variance + 1e-6)).clamp(0, 1)
    return a, b, explained


@torch.inference_mode()
def band_fit(rgb: np.ndarray, matte: np.ndarray, work_pixels: int = 500_000, band: float = 3.0, radius: float = 4.0,
             epsilon: float = 1e-3) -> np.ndarray:
    image, prior, mask, factor, unit = _working(rgb, matte, work_pixels, band, 0.02, 0.98)
    r = max(1, round(radius * unit))
    a, b, explained = _weighted_fit(image, prior, (2 * prior - 1).abs(), r, epsilon)
    maps = torch.cat((box_filter(a, r), box_filter(b, r), box_filter(explained, r)), 1)
    base = matte_at_size(matte, rgb.shape[1], rgb.shape[0])
    return _apply(rgb, base, factor, maps, mask, lambda px, m, old: old + m[:, 4:5] * ((m[:, :3] * px).sum(1, keepdim=True) + m[:, 3:4] - old))


@torch.inference_mode()
def band_projection(rgb: np.ndarray, matte: np.ndarray, work_pixels: int = 500_000, band: float = 3.0, radius: float = 6.0,
                    power: float = 2.0, contrast: float = 0.01) -> np.ndarray:
    image, prior, mask, factor, unit = _working(rgb, matte, work_pixels, band, 0.02, 0.98)
    r = max(1, round(radius * unit))
    fore, back = prior**power, (1 - prior) ** power
    mean_f = box_filter(fore * image, r) / (box_filter(fore, r) + 1e-6)
    mean_b = box_filter(back * image, r) / (box_filter(back, r) + 1e-6)

    def alpha_of(pixels: torch.Tensor, maps: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        f, b = maps[:, :3], maps[:, 3:6]
        d = f - b
        d2 = (d * d).sum(1, keepdim=True)
        projected = (((pixels - b) * d).sum(1, keepdim=True) / (d2 + 1e-4)).clamp(0, 1)
        return old + d2 / (d2 + contrast) * (projected - old)

    base = matte_at_size(matte, rgb.shape[1], rgb.shape[0])
    return _apply(rgb, base, factor, torch.cat((mean_f, mean_b), 1), mask, alpha_of)


def band_pymatting(rgb: np.ndarray, matte: np.ndarray, solver: str = "cf", params: MattingParams = DEFAULT_PARAMS) -> np.ndarray:
    """The shipped stage with pymatting's solver in the band (the trimap: the band unknown, the rest the network's matte)."""
    import pymatting

    estimate = {"cf": pymatting.estimate_alpha_cf, "lkm": pymatting.estimate_alpha_lkm, "knn": pymatting.estimate_alpha_knn}[solver]

    def solve(image: torch.Tensor, prior: torch.Tensor, band: torch.Tensor, _: MattingParams) -> torch.Tensor:
        trimap = (prior[0, 0] >= 0.5).double()
        trimap[band] = 0.5
        if not (trimap == 1).any() or not (trimap == 0).any():
            return prior
        with contextlib.redirect_stdout(io.StringIO()):  # its preconditioner's fallback warnings
            alpha = estimate(image[0].permute(1, 2, 0).double().numpy(), trimap.numpy())
        solved = torch.from_numpy(np.clip(alpha, 0, 1).astype(np.float32))[None, None]
        return torch.where(band[None, None], solved, prior)

    return refine_matte(rgb, matte, params=params, solve=solve)


def closed_form_alone(rgb: np.ndarray, matte: np.ndarray) -> np.ndarray:
    return refine_matte(rgb, matte, params=replace(DEFAULT_PARAMS, prior=0.0, prior_unsure=0.0))


METHODS = {
    "guided filter, whole matte": guided_whole,
    "band: confidence-weighted guided fit": band_fit,
    "band: colour projection": band_projection,
    "band: closed form without the prior": closed_form_alone,
    "band: pymatting closed form": lambda rgb, matte: band_pymatting(rgb, matte, "cf"),
}
# pymatting's large-kernel and KNN solvers (band_pymatting's "lkm", "knn") take 10-30 s a photo; they were tried on ten
# photos only (bench/refine_search.py's history, BENCHMARKS.md).
