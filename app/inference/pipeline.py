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
    """S x S float matte in [0, 1] -> height x width uint8, bilinear, rounded to the nearest level.

    The matte is scaled to 0-255.5 at the model's size, where it is small, so that Pillow's
    float-to-byte conversion (which clips and truncates) rounds it; at 12 MP that halves the time
    of clipping and rounding the full-size floats in numpy.
    """
    scaled = np.asarray(matte, dtype=np.float32) * np.float32(255.0) + np.float32(0.5)
    return np.asarray(Image.fromarray(scaled, mode="F").resize((width, height), Image.BILINEAR).convert("L"))
