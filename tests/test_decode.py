"""Decoding and validating inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.imaging.decode import ImageDimensionError, ImageFormatError, decode_image, output_size


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_png_pixels_are_kept_exactly():
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG"))
    assert (decoded.width, decoded.height) == (80, 60)
    assert np.array_equal(decoded.rgb, rgb)


@pytest.mark.parametrize("size", [(49, 100), (100, 49), (16_001, 60)])
def test_out_of_range_dimensions_are_refused(size):
    with pytest.raises(ImageDimensionError):
        decode_image(encode(Image.new("L", size), "PNG"))


def test_bounds_are_inclusive():
    assert decode_image(encode(Image.new("RGB", (50, 50)), "PNG")).width == 50


def test_garbage_and_truncated_files_are_format_errors():
    with pytest.raises(ImageFormatError):
        decode_image(b"definitely not an image")
    jpeg = encode(Image.new("RGB", (200, 200), "red"), "JPEG")
    with pytest.raises(ImageFormatError):
        decode_image(jpeg[: len(jpeg) // 2])


def test_unaccepted_formats_are_refused():
    with pytest.raises(ImageFormatError):
        decode_image(encode(Image.new("RGB", (64, 64)), "PPM"))


def test_output_size_caps_at_16_megapixels_keeping_aspect():
    assert output_size(4000, 4000) == (4000, 4000)
    width, height = output_size(8000, 6000)
    assert width * height <= 16_000_000 and abs(width / height - 8000 / 6000) < 1e-3
