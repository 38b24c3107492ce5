"""Matte quality metrics against ground truth (both H x W, values in [0, 1])."""

from __future__ import annotations

import numpy as np


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.abs(pred - gt).mean())


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(((pred - gt) ** 2).mean())


def sad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of absolute differences, in thousands (the matting literature's unit)."""
    return float(np.abs(pred - gt).sum() / 1000.0)


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    a, b = pred > threshold, gt > threshold
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def load_gray(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    dg = -x / sigma**2 * g
    dg /= np.abs(dg).sum() / 2  # unit response to a unit step
    return g, dg


def _filter(image: np.ndarray, row_kernel: np.ndarray, col_kernel: np.ndarray) -> np.ndarray:
    """Separable filtering, edges replicated, in float32 (at 24 MP a float64 convolution took ten times as long;
    sums of eleven taps lose nothing a metric shows): SciPy's when installed (the bench extra), else shifted sums."""
    out = image.astype(np.float32)
    try:
        from scipy import ndimage
    except ImportError:
        ndimage = None
    if ndimage is not None:
        out = ndimage.correlate1d(out, row_kernel.astype(np.float32), axis=1, mode="nearest")
        return ndimage.correlate1d(out, col_kernel.astype(np.float32), axis=0, mode="nearest")
    for axis, kernel in ((1, row_kernel), (0, col_kernel)):
        radius = len(kernel) // 2
        padding = [(0, 0), (0, 0)]
        padding[axis] = (radius, radius)
        padded = np.pad(out, padding, mode="edge")
        length = out.shape[axis]
        total = np.zeros_like(out)
        for tap, weight in enumerate(kernel.astype(np.float32)):
            total += weight * (padded[:, tap : tap + length] if axis == 1 else padded[tap : tap + length])
        out = total
    return out


def grad_error(pred: np.ndarray, gt: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error (Rhemann et al.): squared difference of Gaussian-derivative gradient magnitudes, / 1000."""
    g, dg = _gaussian_kernels(sigma)

    def magnitude(a: np.ndarray) -> np.ndarray:
        return np.hypot(_filter(a, dg, g), _filter(a, g, dg))

    return float(((magnitude(pred) - magnitude(gt)).astype(np.float64) ** 2).sum() / 1000.0)


SOFT_LOW, SOFT_HIGH = 0.03, 0.97  # the soft band: hair, veils, motion blur (JPEG noise in mattes sits outside it)


def soft_band_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error where the ground truth is semi-transparent (SOFT_LOW < gt < SOFT_HIGH); 0 where it never is."""
    soft = (gt > SOFT_LOW) & (gt < SOFT_HIGH)
    return float(np.abs(pred[soft] - gt[soft]).mean()) if soft.any() else 0.0


def conn_error(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error (Rhemann et al. 2009, as the Composition-1k evaluation computes it), / 1000.

    For each threshold, the largest 8-connected region where both mattes reach it; a pixel's level is
    the last threshold at which it still belonged there. Pixels that lose their connection early (a
    floating strand, a speck) are charged by how far their alpha lies above that level. Needs SciPy
    (the bench extra brings it) for the connected components.
    """
    from scipy import ndimage

    level = np.full(gt.shape, -1.0, dtype=np.float32)
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    for previous, threshold in zip(thresholds[:-1], thresholds[1:]):
        both = (pred >= threshold) & (gt >= threshold)
        labels, count = ndimage.label(both, structure=np.ones((3, 3), dtype=bool))
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            largest = labels == int(sizes.argmax())
        else:
            largest = np.zeros(gt.shape, dtype=bool)
        level[(level == -1) & ~largest] = previous
    level[level == -1] = 1.0

    def phi(a: np.ndarray) -> np.ndarray:
        distance = a - level
        return 1.0 - distance * (distance >= 0.15)

    return float(np.abs(phi(pred) - phi(gt)).sum() / 1000.0)
