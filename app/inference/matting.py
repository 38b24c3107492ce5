"""The matting stage: a subject's matte re-solved along its edge, at the photo's own resolution.

The network sees every photo at 1024 x 1024, so at 8 megapixels a strand of hair is decided at a third of the
photo's width and the matte, scaled up, is soft where the photo is sharp. This stage re-solves the matte where it is
unsure, from the photo's colours:

1. **The band.** At a working size (``work_pixels``; the photo's own when smaller), the band is the network's unsure
   region (``low < matte < high``) widened by ``band`` network pixels: it follows the photo's size (it is measured
   at the network's scale) and the matte's own uncertainty (soft regions of the matte widen it). Off the band the
   matte is certain, and becomes exactly 0 or 255 there (``snap``), as a trimap's known regions are.
2. **Closed-form matting in the band** (Levin, Lischinski & Weiss, PAMI 2008): alpha locally linear in colour
   within every 3 x 3 window. The network's matte stays in the objective as a soft prior, weighted ``prior`` where
   it is sure and ``prior_unsure`` where it is not, so where colour cannot decide the network's answer stands. The
   Laplacian is built once, as a 25-point stencil on the band's pixels only (float64), and solved by
   Jacobi-preconditioned conjugate gradients from the network's matte (float32, at most ``iterations`` steps).
3. **Back to the photo's size along its own edges:** the fast guided filter (He & Sun 2015): the solved alpha is
   fitted, window by window, as a linear function of colour at the working size; the coefficients, upsampled, are
   applied to the full-size pixels of the band, the result stretched by ``levels`` (the faint haze a textured
   background leaves goes to 0) and feathered into the network's matte over a working pixel.

Cost: the working size bounds steps 1-2 and only the band's pixels are solved, so the time grows with the length of
the subject's unsure outline, hardly with the photo's area; a band over ``max_band_pixels`` (a matte unsure nearly
everywhere) is solved at a coarser size, which bounds the worst case. The full-size pixels are read in chunks. On the
2-core development CPU (bench/stages.py, a hairy portrait scaled): 0.13 s at 2 MP, 0.17 s at 8, 0.22 s at 12 and
0.31 s at 24, beside 0.28 s for the networks' forward in OpenVINO bf16 and 1.24 s in ONNX Runtime fp32; a matte
unsure everywhere over noise, 0.26 s at 2 MP and 0.76 s at 24. Memory beyond the photo: about 1.6 bytes a photo
pixel, the output alpha included (tests/test_matting.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from app.inference.pipeline import matte_at_size
from app.inference.refine import pieces, sample_pieces, to_unit_floats


@dataclass(frozen=True)
class MattingParams:
    """The stage's parameters; the defaults were picked on one half of the high-resolution portraits and checked on the
    other (bench/refine_search.py)."""

    work_pixels: int = 250_000  # the working size's pixels (at most the photo's)
    low: float = 0.05  # the network's matte is unsure between these
    high: float = 0.95
    band: float = 3.0  # the unsure region widened by this many network pixels
    epsilon: float = 1e-4  # the closed-form windows' regulariser (Levin's epsilon)
    prior: float = 3e-3  # the network's matte's weight where it is sure ...
    prior_unsure: float = 1e-3  # ... and where it is 0.5
    iterations: int = 50  # conjugate-gradient steps at most
    tolerance: float = 1e-5  # ... or until the residual has fallen by this
    guide_radius: float = 2.0  # the guided upsampling's windows, in network pixels
    guide_epsilon: float = 1e-4
    snap: bool = True  # the certain regions (off the band) set to exactly 0 and 255, as a trimap takes them
    max_band_pixels: int = 65_536  # a band larger than this (the portraits' largest: 43,509) is solved at a coarser size
    levels: float = 0.03  # the solved alpha stretched so that this much at each end becomes 0 or 1 (a background's haze)


DEFAULT_PARAMS = MattingParams()
Solver = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, MattingParams], torch.Tensor]  # image, prior, band, params -> alpha
AUTO_MIN_UNSURE = 0.002  # BGR_REFINE=auto: photos larger than the network's input whose matte is unsure on at least this share of its pixels (a real unknown band)
WORK_TILE = 16  # working-size pixels per side of a tile
CHUNK_PIXELS = 1 << 18  # full-size band pixels processed at once
_RADIUS = 1  # 3 x 3 closed-form windows


def work_factor(height: int, width: int, work_pixels: int) -> int:
    """The integer reduction from the photo to the working size (1: the photo's own size)."""
    return max(1, math.ceil(math.sqrt(height * width / work_pixels)))


def _reduced(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``H x W x 3`` uint8 -> box-averaged by ``factor`` (Pillow's reduce), a band of rows at a time: Pillow keeps RGB
    in four bytes a pixel, so a whole-photo copy would cost more memory than the rest of the stage."""
    if factor == 1:
        return rgb
    rows = factor * max(1, CHUNK_PIXELS // (factor * rgb.shape[1]))
    return np.concatenate([np.asarray(Image.fromarray(rgb[top : top + rows]).reduce(factor)) for top in range(0, rgb.shape[0], rows)])


def _grow(mask: torch.Tensor, reach: int) -> torch.Tensor:
    """A ``1 x 1 x h x w`` 0/1 mask widened by ``reach`` pixels (a square), in two one-dimensional passes."""
    rows = F.max_pool2d(mask, (2 * reach + 1, 1), 1, (reach, 0))
    return F.max_pool2d(rows, (1, 2 * reach + 1), 1, (0, reach))


class _Tiles:
    """Square tiles of a work-size map that hold band pixels, each with a halo of its neighbours' pixels.

    Maps are gathered as ``n x C x (t + 2 halo)^2`` patches from a zero-padded canvas and written back by their
    ``t x t`` cores, so a map off the band's tiles is never touched.
    """

    def __init__(self, active: torch.Tensor, tile: int, halo: int, height: int, width: int) -> None:
        self.tile, self.halo, self.height, self.width = tile, halo, height, width
        rows_of_tiles, cols_of_tiles = active.shape
        self.canvas_h, self.canvas_w = rows_of_tiles * tile + 2 * halo, cols_of_tiles * tile + 2 * halo
        ty, tx = torch.nonzero(active, as_tuple=True)
        self.count = len(ty)
        span = tile + 2 * halo
        rows = (ty * tile)[:, None] + torch.arange(span)
        cols = (tx * tile)[:, None] + torch.arange(span)
        self.patch_index = (rows[:, :, None] * self.canvas_w + cols[:, None, :]).reshape(-1)
        core = slice(halo, halo + tile)
        self.core_index = (rows[:, core][:, :, None] * self.canvas_w + cols[:, core][:, None, :]).reshape(-1)

    def patches(self, maps: torch.Tensor) -> torch.Tensor:
        """``1 x C x h x w`` -> ``n x C x (t + 2 halo)^2`` (zeros beyond the image)."""
        channels = maps.shape[1]
        canvas = F.pad(maps, (self.halo, self.canvas_w - self.width - self.halo, self.halo, self.canvas_h - self.height - self.halo))
        span = self.tile + 2 * self.halo
        return canvas.reshape(channels, -1)[:, self.patch_index].reshape(channels, self.count, span, span).transpose(0, 1)

    def to_map(self, cores: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """``n x C x t x t`` cores written over ``background`` (``1 x C x h x w``), returned as a new map."""
        channels = cores.shape[1]
        canvas = F.pad(background, (self.halo, self.canvas_w - self.width - self.halo, self.halo, self.canvas_h - self.height - self.halo))
        canvas = canvas.reshape(channels, -1).clone()
        canvas[:, self.core_index] = cores.transpose(0, 1).reshape(channels, -1)
        h = self.halo
        return canvas.reshape(1, channels, self.canvas_h, self.canvas_w)[:, :, h : h + self.height, h : h + self.width]


def _inverse_symmetric3(m: torch.Tensor) -> torch.Tensor:
    """``n x 6 x ...`` symmetric 3 x 3 matrices (xx, xy, xz, yy, yz, zz) -> their inverses, same layout (Cramer)."""
    a, b, c, d, e, f = m.unbind(1)
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    determinant = a * i00 + b * i01 + c * i02
    return torch.stack((i00, i01, i02, i11, i12, i22), 1) / determinant.unsqueeze(1)


def _symmetric_matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a, b, c, d, e, f = m.unbind(1)
    x, y, z = v.unbind(1)
    return torch.stack((a * x + b * y + c * z, b * x + d * y + e * z, c * x + e * y + f * z), 1)


def _second_moments(image: torch.Tensor) -> torch.Tensor:
    i0, i1, i2 = image.unbind(1)
    return torch.stack((i0 * i0, i0 * i1, i0 * i2, i1 * i1, i1 * i2, i2 * i2), 1)


def _conjugate_gradients(apply, rhs: torch.Tensor, diagonal: torch.Tensor, iterations: int, tolerance: float) -> torch.Tensor:
    """Jacobi-preconditioned conjugate gradients from zero."""
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    norm = (residual * preconditioned).sum()
    stop = norm * tolerance * tolerance
    for _ in range(iterations):
        if norm <= stop:
            break
        product = apply(direction)
        step = norm / (direction * product).sum()
        x += step * direction
        residual -= step * product
        preconditioned = residual / diagonal
        new_norm = (residual * preconditioned).sum()
        direction = preconditioned + (new_norm / norm) * direction
        norm = new_norm
    return x


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """The mean over every ``k x k`` window wholly inside ``x`` (``n x C x h x w``), in two one-dimensional passes: 2k
    reads a pixel instead of k^2 (a coarse network's matte makes k large)."""
    return F.avg_pool2d(F.avg_pool2d(x, (k, 1), 1), (1, k), 1)


def _guided_coefficients(image: torch.Tensor, alpha: torch.Tensor, active: torch.Tensor, radius: int, epsilon: float) -> torch.Tensor:
    """The fast guided filter's smoothed coefficients on the active tiles: ``1 x 4 x h x w`` (a: 3, b: 1; zero elsewhere).

    image ``1 x 3 x h x w``, alpha ``1 x 1 x h x w``: alpha fitted as ``a . I + b`` in every window of ``2 radius + 1``.
    """
    _, _, height, width = image.shape
    span = WORK_TILE + 4 * radius
    if int(active.sum()) * span * span > height * width:  # the halos would outweigh the map: one tile holds it all
        tiles = _Tiles(torch.ones(1, 1, dtype=torch.bool), max(height, width), 2 * radius, height, width)
    else:
        tiles = _Tiles(active, WORK_TILE, 2 * radius, height, width)
    k = 2 * radius + 1
    guide = tiles.patches(image)
    source = tiles.patches(alpha)
    inside = tiles.patches(torch.ones_like(alpha))
    count = _box(inside, k).clamp_min(1e-6)  # windows cut by the image's edge average what they hold
    mean = lambda x: _box(x, k) / count  # noqa: E731
    mean_i, mean_p = mean(guide), mean(source)
    covariance = mean(_second_moments(guide)) - _second_moments(mean_i)
    covariance[:, (0, 3, 5)] += epsilon
    a = _symmetric_matvec(_inverse_symmetric3(covariance), mean(guide * source) - mean_i * mean_p)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    inner = inside[:, :, radius:-radius, radius:-radius]
    smoothed = _box(torch.cat((a, b), 1) * inner, k) / _box(inner, k).clamp_min(1e-6)
    return tiles.to_map(smoothed, torch.zeros(1, 4, height, width))


def worth_refining(width: int, height: int, network_pixels: int, matte: np.ndarray | None = None, params: MattingParams = DEFAULT_PARAMS) -> bool:
    """``BGR_REFINE=auto``'s rule: a photo of more pixels than the network's input (``network_pixels``, S x S: only
    then does the scaled-up matte decide pixels the network never saw) whose ``S x S`` matte is unsure (between
    ``params.low`` and ``params.high``) on at least AUTO_MIN_UNSURE of its pixels (``matte`` None: the size alone)."""
    if width * height <= network_pixels:
        return False
    if matte is None:
        return True
    unsure = np.count_nonzero((matte > params.low) & (matte < params.high))
    return unsure >= AUTO_MIN_UNSURE * matte.size


def snapped(base: np.ndarray, params: MattingParams = DEFAULT_PARAMS) -> np.ndarray:
    """``base`` (``H x W`` uint8) with the values the stage takes as certain (at most ``params.low``, at least
    ``params.high``) set to exactly 0 and 255, as a trimap's known regions are: the stage's output off its band."""
    table = np.arange(256, dtype=np.uint8)
    table[: int(params.low * 255) + 1] = 0
    table[int(np.ceil(params.high * 255)) :] = 255
    return table[base]


@torch.inference_mode()
def refine_matte(
    rgb: np.ndarray, matte: np.ndarray, base: np.ndarray | None = None, params: MattingParams = DEFAULT_PARAMS, solve: Solver | None = None
) -> np.ndarray:
    """The network's matte re-solved in its unsure band at the photo's size.

    rgb: ``H x W x 3`` uint8, the photo (or the output-size image the matte is for); matte: ``S x S`` float32 in
    [0, 1], the network's; base: ``H x W`` uint8, the matte at output size as :func:`matte_at_size` makes it
    (computed when None); solve: what solves the band at the working size (default :func:`solve_band`; the bench
    tries others). Returns a new ``H x W`` uint8 alpha: ``base`` off the band, the refined matte on it.
    """
    height, width = rgb.shape[:2]
    if base is None:
        base = matte_at_size(matte, width, height)
    factor = work_factor(height, width, params.work_pixels)
    network_matte = torch.from_numpy(np.asarray(matte, dtype=np.float32))[None, None]
    while True:
        work_h, work_w = -(-height // factor), -(-width // factor)  # the size _reduced gives (Pillow's reduce rounds up)
        prior = F.interpolate(network_matte, size=(work_h, work_w), mode="bilinear", align_corners=False)
        unit = max(work_h, work_w) / max(matte.shape)  # working pixels per network pixel
        reach = max(1, round(params.band * unit))
        unsure = ((prior > params.low) & (prior < params.high)).float()
        band = _grow(unsure, reach)[0, 0] > 0
        band_pixels = int(band.sum())
        if band_pixels <= params.max_band_pixels or min(work_h, work_w) < 2 * WORK_TILE:
            break
        # A matte unsure nearly everywhere (a texture, a coarse network): solved at a coarser size, so the cost stays
        # bounded whatever the photo.
        factor = math.ceil(factor * math.sqrt(band_pixels / params.max_band_pixels))
    if band_pixels == 0:
        return base
    image = to_unit_floats(_reduced(rgb, factor))  # the photo read once, at the working size settled above
    alpha = (solve or solve_band)(image, prior, band, params)

    guide_radius = max(1, round(params.guide_radius * unit))
    edge = _grow(band[None, None].float(), 3)  # the band, its feathered edge and what their bilinear samples reach
    rows, cols = math.ceil(work_h / WORK_TILE), math.ceil(work_w / WORK_TILE)
    active = F.max_pool2d(F.pad(edge, (0, cols * WORK_TILE - work_w, 0, rows * WORK_TILE - work_h)), WORK_TILE)[0, 0] > 0
    coefficients = _guided_coefficients(image, alpha, active, guide_radius, params.guide_epsilon)
    # How much of the solution a pixel takes: 1 inside the band, falling to 0 over a working pixel past its edge, so
    # the refined band meets the network's matte without a seam.
    share = F.avg_pool2d(_grow(band[None, None].float(), 1), 3, 1, 1)
    maps = torch.cat((coefficients, share), 1)

    out = snapped(base, params) if params.snap else base.copy()
    block = WORK_TILE * factor
    ty, tx = torch.nonzero(active, as_tuple=True)
    per_chunk = max(1, CHUNK_PIXELS // (block * block))
    for start in range(0, len(ty), per_chunk):
        ys, xs = ty[start : start + per_chunk] * block, tx[start : start + per_chunk] * block
        y_list, x_list = ys.tolist(), xs.tolist()
        pixels = torch.from_numpy(pieces(rgb, y_list, x_list, block)).permute(0, 3, 1, 2).float().div_(255)
        sampled = sample_pieces(maps, ys, xs, block, factor * work_h, factor * work_w)  # a working pixel spans factor photo pixels
        solved = ((sampled[:, :3] * pixels).sum(1) + sampled[:, 3]).sub_(params.levels).div_(1 - 2 * params.levels).clamp_(0, 1)
        old = torch.from_numpy(pieces(out, y_list, x_list, block)).float().div_(255)  # blocks are disjoint: not yet written
        weight = sampled[:, 4]
        mixed = (old + weight * (solved - old)).mul_(255).add_(0.5).to(torch.uint8).numpy()
        touched = (weight > 0).numpy()
        for n, (y, x) in enumerate(zip(y_list, x_list)):
            bottom, right = min(height, y + block), min(width, x + block)
            keep = touched[n, : bottom - y, : right - x]
            target = out[y:bottom, x:right]
            target[keep] = mixed[n, : bottom - y, : right - x][keep]
    return out


def band_system(image: torch.Tensor, band: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levin's matting Laplacian on the band's pixels, as a 25-point stencil, in float64.

    image ``1 x 3 x h x w`` in [0, 1], band ``h x w`` bool -> (stencil ``N x 25``: row i's entries at the offsets
    (dy, dx) in [-2, 2]^2, row-major; positions ``N x 2``; flat indices ``N x 25`` of the neighbours in the image
    padded by 2). Only the 3 x 3 windows wholly inside the image count (so the matrix is exactly symmetric), and only
    those the band touches are computed.
    """
    _, _, height, width = image.shape
    pad = 2
    padded_w = width + 2 * pad
    # A constant colour shift leaves every window's fit unchanged; centred colours keep the covariances' cancellation small.
    centred = image.double() - image.double().mean((2, 3), keepdim=True)
    colours = F.pad(centred, (pad, pad, pad, pad)).reshape(3, -1)
    flat = lambda ys, xs: (ys + pad) * padded_w + (xs + pad)  # noqa: E731
    window_offsets = [dy * padded_w + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    # The windows: centred within a pixel of the band, wholly inside the image.
    near = _grow(band[None, None].float(), 1)[0, 0] > 0
    near[:_RADIUS] = False
    near[height - _RADIUS :] = False
    near[:, :_RADIUS] = False
    near[:, width - _RADIUS :] = False
    wy, wx = torch.nonzero(near, as_tuple=True)
    windows = flat(wy, wx)
    count = len(windows)
    mean = colours.new_zeros(3, count + 1)  # a last, empty window stands for every window that does not count
    second = colours.new_zeros(6, count)
    for offset in window_offsets:
        member = colours[:, windows + offset]
        mean[:, :count] += member
        second += _second_moments(member[None])[0]
    k2 = float(len(window_offsets))
    mean /= k2
    covariance = second / k2 - _second_moments(mean[None, :, :count])[0]
    covariance[(0, 3, 5), :] += epsilon / k2
    inverse = torch.cat((_inverse_symmetric3(covariance[None])[0], colours.new_zeros(6, 1)), 1)
    inside = torch.cat((colours.new_ones(count), colours.new_zeros(1)))
    window_of = torch.full((colours.shape[1],), count, dtype=torch.long)
    window_of[windows] = torch.arange(count)

    ys, xs = torch.nonzero(band, as_tuple=True)
    centre = flat(ys, xs)
    stencil = torch.zeros(len(ys), 25, dtype=torch.float64)
    own = colours[:, centre]  # 3 x N
    for uy in (-1, 0, 1):
        for ux in (-1, 0, 1):
            window = window_of[centre + uy * padded_w + ux]
            mu, valid = mean[:, window], inside[window]
            weight = _symmetric_matvec(inverse[:, window][None], (own - mu)[None])[0]  # A (I_i - mu): 3 x N
            for vy in (-1, 0, 1):
                members = centre + (uy + vy) * padded_w + ux + torch.arange(-1, 2)[:, None]  # 3 x N: the window's row vy
                dot = (weight[:, None, :] * (colours[:, members] - mu[:, None, :])).sum(0)  # 3 x N
                column = (uy + vy + 2) * 5 + (ux + 2)  # the offset of j = i + u + v for v = (vy, -1)
                stencil[:, column - 1 : column + 2] -= ((1 + dot) / k2 * valid).T
            stencil[:, 12] += valid
    offsets = torch.arange(-2, 3)
    index = centre[:, None] + (offsets[:, None] * padded_w + offsets[None, :]).reshape(1, -1)
    return stencil, torch.stack((ys, xs), 1), index


def solve_band(
    image: torch.Tensor,
    prior: torch.Tensor,
    band: torch.Tensor,
    params: MattingParams = DEFAULT_PARAMS,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Closed-form matting of the band with the prior as a soft constraint: the minimum of
    ``alpha' L alpha + sum_i weight_i (alpha_i - prior_i)^2`` over the band's alphas, the rest fixed at the prior.

    image ``1 x 3 x h x w`` in [0, 1]; prior ``1 x 1 x h x w`` in [0, 1]; band ``h x w`` bool; data: an optional
    second term ``sum_i confidence_i (alpha_i - target_i)^2``, as (target, confidence) ``1 x 1 x h x w`` maps (the
    bench's sampling data term; the stage serves none). Returns ``1 x 1 x h x w`` float32 in [0, 1]: the prior off
    the band, the solution on it.
    """
    _, _, height, width = image.shape
    stencil, positions, index = band_system(image, band, params.epsilon)
    count = len(positions)
    pad = 2
    padded = F.pad(prior.double(), (pad, pad, pad, pad)).reshape(-1)
    # alpha = prior + change, the change zero off the band: (L + diag(weight)) change = -L prior on the band.
    rhs = -(stencil * padded[index]).sum(1)
    # The band's own numbering of each neighbour (count: off the band, a zero slot).
    numbering = torch.full(((height + 2 * pad) * (width + 2 * pad),), count, dtype=torch.long)
    numbering[index[:, 12]] = torch.arange(count)
    neighbours = numbering[index]
    own = padded[index[:, 12]]
    sureness = (2 * own - 1).abs()
    weight = params.prior_unsure + (params.prior - params.prior_unsure) * sureness
    if data is not None:  # two quadratic pulls add up to one: their summed weight toward their weighted mean
        target, confidence = (m[0, 0, positions[:, 0], positions[:, 1]].double() for m in data)
        rhs += confidence * (target - own)
        weight = weight + confidence
    system = stencil.float()  # built in float64; float32 steps converge to within 1e-5 of float64's
    weight = weight.float()

    flat_neighbours = neighbours.reshape(-1)

    def apply(d: torch.Tensor) -> torch.Tensor:
        extended = torch.cat((d, d.new_zeros(1)))
        gathered = extended.index_select(0, flat_neighbours).view(count, 25)
        return torch.einsum("ij,ij->i", system, gathered) + weight * d

    diagonal = (system[:, 12] + weight).clamp_min(1e-6)
    change = _conjugate_gradients(apply, rhs.float(), diagonal, params.iterations, params.tolerance)
    out = prior.clone()
    out[0, 0, positions[:, 0], positions[:, 1]] = (own.float() + change).clamp(0, 1)
    return out

