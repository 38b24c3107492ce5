"""Around the model: the square model input from an image, and the matte back at output size."""

from __future__ import annotations

import numpy as np
from PIL import Image


def model_input(rgb: np.ndarray, resolution: int, resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """H x W x 3 uint8 -> resolution x resolution x 3 uint8 (antialiased; the aspect is not kept, as in training)."""
    if rgb.shape[:2] == (resolution, resolution):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((resolution, resolution), resample))


def matte_at_size(matte: np.ndarray, width: int, height: int) -> np.ndarray:
    """S x S float matte in [0, 1] -> height x width uint8, bilinear."""
    resized = Image.fromarray(np.ascontiguousarray(matte, dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.clip(np.rint(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA: the RGB is kept exactly, the matte becomes alpha."""
    rgba = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)
    rgba[:, :, :3] = rgb
    rgba[:, :, 3] = alpha
    return rgba
