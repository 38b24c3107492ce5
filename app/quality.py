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
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(image.astype(np.float64))[None, None]
    kr = torch.from_numpy(row_kernel)[None, None, None, :]
    kc = torch.from_numpy(col_kernel)[None, None, :, None]
    t = F.conv2d(F.pad(t, (kr.shape[-1] // 2,) * 2 + (0, 0), mode="replicate"), kr)
    t = F.conv2d(F.pad(t, (0, 0) + (kc.shape[-2] // 2,) * 2, mode="replicate"), kc)
    return t[0, 0].numpy()


def grad_error(pred: np.ndarray, gt: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error (Rhemann et al.): squared difference of Gaussian-derivative gradient magnitudes, / 1000."""
    g, dg = _gaussian_kernels(sigma)

    def magnitude(a: np.ndarray) -> np.ndarray:
        return np.hypot(_filter(a, dg, g), _filter(a, g, dg))

    return float(((magnitude(pred) - magnitude(gt)) ** 2).sum() / 1000.0)
