"""Decode and validate an input image with Pillow.

Choices (CONTRACT.md leaves them open):
- The first frame of animated or multi-frame files (GIF, TIFF, MPO, ICO) is used.
- EXIF orientation is ignored: the output's pixels are the file's stored pixels,
  exactly as Azure returned them.
- Every mode becomes 8-bit RGB: greyscale is repeated, palettes are expanded,
  CMYK is converted, 16-bit and float samples are scaled to 8 bits. An input
  alpha channel is dropped: the model decides what is foreground, and the
  cut-out keeps the stored RGB of every pixel.
- Dimensions are read from the header and checked before any pixel is decoded,
  so a small file that declares huge dimensions costs nothing.
- Large JPEGs are decoded at a reduced DCT scale when only a smaller image is needed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF", "MPO"})
MIN_SIDE = 50
MAX_SIDE = 16_000
MAX_OUTPUT_PIXELS = 16_000_000  # backgroundRemoval output is scaled down to this, aspect kept

# Our own checks run first; Pillow's bomb guard stays as a second line just above our largest size.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE


class ImageFormatError(ValueError):
    """The bytes are not a decodable image in an accepted format."""


class ImageDimensionError(ValueError):
    """Width or height outside [MIN_SIDE, MAX_SIDE]."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3 uint8
    width: int  # the stored image's size (rgb may be smaller after a reduced-scale decode)
    height: int
    format: str


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDimensionError(str(error)) from None
    except Exception as error:  # Pillow raises many types for unknown or corrupt data
        raise ImageFormatError(f"{type(error).__name__}: {error}") from None
    if image.format not in ALLOWED_FORMATS:
        raise ImageFormatError(f"format {image.format} is not accepted")
    width, height = image.size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ImageDimensionError(f"{width}x{height}")
    return image


def probe_image(data: bytes) -> ImageInfo:
    """Format and size from the header alone; raises as :func:`decode_image` would for them."""
    image = _open(data)
    return ImageInfo(image.width, image.height, image.format)


def decode_image(data: bytes, at_least: tuple[int, int] | None = None) -> DecodedImage:
    """Decode the first frame to RGB.

    ``at_least``: the caller needs no more than this size, so a JPEG may be decoded
    at 1/2, 1/4 or 1/8 scale as long as the result still covers it. Without it,
    the pixels are the stored pixels, exactly.
    """
    image = _open(data)
    # The whole stream in one decoder call: Pillow otherwise feeds it 64 KB at a time, and each call
    # lets go of the GIL and must take it back, which under load waits up to a switch interval.
    image.decodermaxblock = max(image.decodermaxblock, len(data))
    width, height = image.size
    try:
        if at_least is not None and image.format in ("JPEG", "MPO"):
            image.draft("RGB", at_least)
        rgb = to_rgb(image)
    except (ImageFormatError, ImageDimensionError):
        raise
    except Exception as error:
        raise ImageFormatError(f"{type(error).__name__}: {error}") from None
    expected = (height, width) if at_least is None else None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or (expected is not None and rgb.shape[:2] != expected):
        raise ImageFormatError("decoded size differs from the declared size")
    return DecodedImage(rgb=rgb, width=width, height=height, format=image.format)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8. Truncated data raises rather than passing as grey."""
    image.load()
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16- and 32-bit greyscale or float: scale to 8 bits rather than clip.
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            peak = 65535.0
        elif mode == "F":
            peak = 1.0 if array.size and array.max() <= 1.0 else 255.0
        else:
            peak = 65535.0 if array.size and array.max() > 255 else 255.0
        grey = np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def output_size(width: int, height: int, max_pixels: int = MAX_OUTPUT_PIXELS) -> tuple[int, int]:
    """Size of a backgroundRemoval cut-out: the input's, scaled down to at most ``max_pixels``, aspect kept."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    new_width, new_height = max(1, int(width * scale)), max(1, int(height * scale))
    while new_width * new_height > max_pixels:  # float rounding must never overshoot the cap
        new_width -= 1
    return new_width, new_height
