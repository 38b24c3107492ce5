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
