"""Decode and validate an input image with Pillow.

Choices (CONTRACT.md leaves them open):
- The first frame of animated or multi-frame files (GIF, TIFF, MPO) is used.
- EXIF orientation is ignored: the output's pixels are the file's stored pixels,
  exactly as Azure returned them.
- Every mode becomes 8-bit RGB; an input alpha channel is dropped (the model
  decides what is foreground; transparent input pixels keep their stored RGB).
- Dimensions are checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF", "MPO"})
MIN_SIDE = 50
MAX_SIDE = 16_000
MAX_OUTPUT_PIXELS = 16_000_000  # backgroundRemoval output is scaled down to this, aspect kept


class ImageFormatError(ValueError):
    """The bytes are not a decodable image in an accepted format."""


class ImageDimensionError(ValueError):
    """Width or height outside [MIN_SIDE, MAX_SIDE]."""


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3 uint8, the stored pixels
    width: int
    height: int
    format: str


def decode_image(data: bytes) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise ImageFormatError(f"format {image.format} is not accepted")
            width, height = image.size
            if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                raise ImageDimensionError(f"{width}x{height}")
            image.seek(0)
            rgb = to_rgb(image)
    except (ImageFormatError, ImageDimensionError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDimensionError(str(error)) from None
    except Exception as error:  # Pillow raises many types for corrupt data
        raise ImageFormatError(f"{type(error).__name__}: {error}") from None
    if rgb.shape[:2] != (height, width):
        raise ImageFormatError("decoded size differs from the declared size")
    return DecodedImage(rgb=rgb, width=width, height=height, format=image.format)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8, without letting truncated data pass silently."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    image.load()
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        # 16- and 32-bit greyscale: scale to 8 bits rather than clip.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGBA" if image.mode in ("P", "PA", "LA", "La", "RGBa") else "RGB").convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def output_size(width: int, height: int, max_pixels: int = MAX_OUTPUT_PIXELS) -> tuple[int, int]:
    """Size of a backgroundRemoval cut-out: the input's, scaled down to at most ``max_pixels``, aspect kept."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    new_width = max(1, int(width * scale))
    new_height = max(1, int(height * scale))
    return new_width, new_height
