"""Every accepted format and pixel mode, decompression bombs, truncation, EXIF and input alpha."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from app.imaging.decode import ImageDimensionError, ImageFormatError, decode_image, probe_image

from conftest import SEGMENT, photo, png_bytes, read_png

BASE = photo((120, 96))
RGB = np.asarray(BASE)


def as_mode(mode: str) -> Image.Image:
    if mode == "P+transparency":
        image = BASE.convert("P")
        image.info["transparency"] = 0
        return image
    if mode == "I;16":
        return Image.fromarray(np.asarray(BASE.convert("L")).astype(np.uint16) * 257)
    return BASE.convert(mode)


FORMATS = {
    "JPEG": dict(quality=95),
    "PNG": {},
    "GIF": {},
    "BMP": {},
    "WEBP": dict(lossless=True),
    "ICO": dict(sizes=[(96, 96)]),
    "TIFF": {},
    "MPO": dict(save_all=True, append_images=[BASE.transpose(Image.FLIP_LEFT_RIGHT)]),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_accepted_format_decodes(fmt):
    image = BASE if fmt != "ICO" else BASE.resize((96, 96))
    data = png_bytes(image, fmt, **FORMATS[fmt])
    decoded = decode_image(data)
    assert decoded.format == fmt
    assert decoded.rgb.shape == (image.height, image.width, 3) and decoded.rgb.dtype == np.uint8
    if fmt in ("PNG", "BMP", "WEBP", "TIFF", "ICO"):
        assert np.array_equal(decoded.rgb, np.asarray(image))  # lossless formats: the stored pixels, exactly


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("L", lambda: np.repeat(np.asarray(BASE.convert("L"))[:, :, None], 3, axis=2)),
        ("LA", lambda: np.repeat(np.asarray(BASE.convert("L"))[:, :, None], 3, axis=2)),
        ("1", lambda: np.repeat(np.asarray(BASE.convert("1").convert("L"))[:, :, None], 3, axis=2)),
        ("P", lambda: np.asarray(BASE.convert("P").convert("RGB"))),
        ("P+transparency", lambda: np.asarray(BASE.convert("P").convert("RGB"))),
        ("RGBA", lambda: RGB),
        ("I;16", lambda: np.repeat(np.asarray(BASE.convert("L"))[:, :, None], 3, axis=2)),
    ],
)
def test_pixel_modes_become_the_same_rgb(mode, expected):
    decoded = decode_image(png_bytes(as_mode(mode), "PNG"))
    assert np.array_equal(decoded.rgb, expected())


def test_cmyk_jpeg_and_tiff():
    for fmt in ("JPEG", "TIFF"):
        decoded = decode_image(png_bytes(BASE.convert("CMYK"), fmt))
        assert decoded.rgb.shape == (96, 120, 3)
        assert np.abs(decoded.rgb.astype(int) - RGB).mean() < 12


def test_sixteen_bit_rgb_tiff_and_float():
    wide = Image.fromarray(np.asarray(BASE.convert("L"), dtype=np.float32) / 255.0, mode="F")
    decoded = decode_image(png_bytes(wide, "TIFF"))
    assert np.abs(decoded.rgb[:, :, 0].astype(int) - np.asarray(BASE.convert("L"))).max() <= 1


def test_animated_gif_uses_the_first_frame():
    frames = [BASE, Image.new("RGB", BASE.size, (255, 0, 0))]
    data = io.BytesIO()
    frames[0].save(data, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data.getvalue())
    assert np.abs(decoded.rgb.astype(int) - RGB).mean() < 10  # the first frame (palette-quantised), not the red one
    assert decoded.rgb[:, :, 1].mean() > 60


def test_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = png_bytes(BASE, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data)
    assert decoded.rgb.shape == (96, 120, 3)  # stored orientation, as Azure returned it


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 100_000), (16_001, 16_000), (2**31 - 1, 60)])
def test_decompression_bombs_are_refused_from_the_header(size):
    bomb = _png_declaring(*size)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageDimensionError):
        decode_image(bomb)
    assert time.perf_counter() - started < 1.0  # nothing was decoded


def test_a_large_declared_size_within_limits_probes_without_decoding():
    info = probe_image(_png_declaring(16_000, 16_000))
    assert (info.width, info.height) == (16_000, 16_000)
    with pytest.raises(ImageFormatError):  # the declared pixels are not there: truncated, not a crash
        decode_image(_png_declaring(4_000, 4_000))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_files_are_format_errors(fmt):
    data = png_bytes(photo((400, 300)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    with pytest.raises((ImageFormatError, ImageDimensionError)):
        decode_image(data[: len(data) // 3])


def test_reduced_scale_jpeg_decoding_covers_what_was_asked():
    data = png_bytes(photo((4000, 3000)), "JPEG", quality=90)
    decoded = decode_image(data, at_least=(1024, 1024))
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.rgb.shape[0] >= 1024 and decoded.rgb.shape[1] >= 1024 and decoded.rgb.shape[1] < 4000


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "I;16", "CMYK"])
def test_pixel_modes_over_http(fast_server, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = png_bytes(as_mode(mode), fmt)
    with fast_server.client() as client:
        cutout = client.post(SEGMENT, params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}, content=data)
    assert cutout.status_code == 200, cutout.text
    image = read_png(cutout.content)
    assert image.mode == "RGBA" and image.size == (120, 96)
    if fmt == "PNG":
        assert np.array_equal(np.asarray(image)[:, :, :3], decode_image(data).rgb)


def test_input_alpha_is_not_used_and_rgb_is_kept(fast_server):
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])  # fully transparent input
    params = {"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}
    with fast_server.client() as client:
        transparent = client.post(SEGMENT, params=params, content=png_bytes(Image.fromarray(rgba)))
        opaque = client.post(SEGMENT, params=params, content=png_bytes(BASE))
    out = np.asarray(read_png(transparent.content))
    assert np.array_equal(out[:, :, :3], RGB)  # straight alpha: even hidden pixels keep their colour
    assert np.array_equal(out, np.asarray(read_png(opaque.content)))  # the input alpha changes nothing


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "TIFF", "MPO", "BMP", "WEBP"])
def test_formats_over_http(fast_server, fmt):
    image = BASE if fmt != "ICO" else BASE.resize((96, 96))
    with fast_server.client() as client:
        response = client.post(
            SEGMENT,
            params={"api-version": "2023-02-01-preview", "mode": "foregroundMatting"},
            content=png_bytes(image, fmt, **FORMATS[fmt]),
            headers={"Content-Type": f"image/{fmt.lower()}"},
        )
    assert response.status_code == 200, response.text
    assert read_png(response.content).size == image.size


def test_bomb_over_http_is_a_dimension_error(fast_server):
    with fast_server.client() as client:
        response = client.post(
            SEGMENT, params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}, content=_png_declaring(100_000, 100_000)
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("The image dimension is not allowed")
