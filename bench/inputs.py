"""Benchmark inputs: JPEGs of a chosen megapixel count, made from a redistributable photo.

The source is scikit-image's bundled ``coffee`` sample (CC0, Rachel Michetti; 600 x 400, 3:2),
Lanczos-upscaled to the target pixel count. Upscaling leaves a smooth image that JPEG packs
unusually small, so a faint fixed-seed grain is added: file sizes then sit near a camera
photo's (about 1.5-3 bits a pixel at quality 90), which is what decoding cost depends on.
Nothing from the evaluation data is used or copied.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

ASPECT = 1.5  # the source's 3:2
GRAIN_SIGMA = 3.0
JPEG_QUALITY = 90


def source_photo() -> Image.Image:
    from skimage import data  # rembg depends on scikit-image, so the bench extra brings it

    return Image.fromarray(data.coffee())


def dimensions(megapixels: float) -> tuple[int, int]:
    height = round(math.sqrt(megapixels * 1e6 / ASPECT))
    return round(height * ASPECT), height


def make_jpeg(megapixels: float, folder: Path) -> Path:
    """The JPEG for ``megapixels`` (reused when already made)."""
    width, height = dimensions(megapixels)
    path = folder / f"coffee-{width}x{height}.jpg"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(source_photo().resize((width, height), Image.LANCZOS), dtype=np.float32)
    grain = np.random.default_rng(0).normal(0.0, GRAIN_SIGMA, size=pixels.shape[:2])[..., None]
    noisy = np.clip(pixels + grain, 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=JPEG_QUALITY)
    return path
