"""The output options (app/imaging/output.py) against plain float references and real decoders."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.imaging.output import (
    Box,
    crop_to,
    encode_jpeg,
    encode_webp,
    fill_colour,
    fill_image,
    foreground_box,
    parse_colour,
)


def cutout(height: int = 37, width: int = 53, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random colours with every alpha value present (0 and 255 included)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    alpha.flat[:256] = np.arange(256, dtype=np.uint8)
    return rgb, alpha


def reference_over(rgb, alpha, bg_rgb, bg_alpha):
    """Porter-Duff over, straight alpha, in float64: the textbook formula."""
    a = alpha.astype(np.float64)[..., None] / 255
    b = np.broadcast_to(np.asarray(bg_alpha, dtype=np.float64), alpha.shape)[..., None] / 255
    out_a = a + b * (1 - a)
    colours = rgb * a + np.asarray(bg_rgb, dtype=np.float64) * b * (1 - a)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_rgb = colours / out_a
    return out_rgb, out_a[..., 0] * 255


# --- parse_colour ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fff", (255, 255, 255, 255)),
        ("#f0a", (255, 0, 170, 255)),
        ("f0a8", (255, 0, 170, 136)),
        ("#F0A8", (255, 0, 170, 136)),
        ("81d4fa", (0x81, 0xD4, 0xFA, 255)),
        ("#81D4FA", (0x81, 0xD4, 0xFA, 255)),
        ("81d4fa80", (0x81, 0xD4, 0xFA, 0x80)),
        ("#00000000", (0, 0, 0, 0)),
        ("green", (0, 128, 0, 255)),
        ("Red", (255, 0, 0, 255)),
        ("  white ", (255, 255, 255, 255)),
        ("rebeccapurple", (102, 51, 153, 255)),
    ],
)
def test_colours_parse_as_hex_or_names(text, expected):
    assert parse_colour(text) == expected


@pytest.mark.parametrize("text", ["", "#", "ff", "fffff", "fffffff", "fffffffff", "#ggg", "notacolour", "rgb(1,2,3)", "255,255,255", "#fff#"])
def test_other_colours_are_refused(text):
    with pytest.raises(ValueError, match="not a colour"):
        parse_colour(text)


# --- fill_colour ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [(255, 255, 255, 255), (0, 0, 0, 255), (12, 200, 99, 255)])
def test_an_opaque_colour_matches_the_float_reference(colour):
    rgb, alpha = cutout()
    out_rgb, out_alpha = fill_colour(rgb, alpha, colour)
    want_rgb, _ = reference_over(rgb, alpha, colour[:3], 255)
    assert out_rgb.dtype == np.uint8 and out_rgb.shape == rgb.shape
    assert (out_alpha == 255).all()
    assert np.abs(out_rgb - want_rgb).max() <= 0.5 + 1e-9  # rounded to nearest
    opaque, clear = alpha == 255, alpha == 0
    assert (out_rgb[opaque] == rgb[opaque]).all()
    assert (out_rgb[clear] == colour[:3]).all()


@pytest.mark.parametrize("colour", [(255, 0, 0, 128), (10, 20, 30, 1), (200, 100, 50, 254)])
def test_a_semi_transparent_colour_matches_the_float_reference(colour):
    rgb, alpha = cutout(300, 41)  # more rows than one band
    out_rgb, out_alpha = fill_colour(rgb, alpha, colour)
    want_rgb, want_alpha = reference_over(rgb, alpha, colour[:3], colour[3])
    assert np.abs(out_alpha - want_alpha).max() <= 0.5 + 1e-4
    seen = want_alpha > 0
    assert np.abs(out_rgb[seen] - want_rgb[seen]).max() <= 0.5 + 1e-3
    # Where the cut-out is opaque the colour does not show; where it is clear, only the colour does.
    assert (out_alpha[alpha == 255] == 255).all()
    assert (out_alpha[alpha == 0] == colour[3]).all()
    assert (out_rgb[alpha == 0] == colour[:3]).all()


def test_a_clear_colour_leaves_the_cut_out_as_it_was():
    rgb, alpha = cutout()
    out_rgb, out_alpha = fill_colour(rgb, alpha, (9, 9, 9, 0))
    assert (out_rgb == rgb).all() and (out_alpha == alpha).all()


def test_fill_refuses_mismatched_arrays():
    rgb, alpha = cutout()
    with pytest.raises(ValueError):
        fill_colour(rgb, alpha[1:], (0, 0, 0, 255))
    with pytest.raises(ValueError):
        fill_colour(rgb.astype(np.float32), alpha, (0, 0, 0, 255))


# --- fill_image -----------------------------------------------------------------------------------------------


def test_a_background_of_the_same_size_is_used_as_it_is():
    rgb, alpha = cutout()
    background = cutout(seed=1)[0]
    out_rgb, out_alpha = fill_image(rgb, alpha, background)
    want_rgb, _ = reference_over(rgb, alpha, background, 255)
    assert (out_alpha == 255).all()
    assert np.abs(out_rgb - want_rgb).max() <= 0.5 + 1e-9


def test_a_background_is_scaled_to_cover_and_centred():
    # A 40 x 10 canvas over a 20 x 80 background: scaled x2 to 40 x 160 to cover, its middle 10 rows show
    # (source rows 37.5-42.5, the white band); left half green-white, right half white-yellow stay apart.
    background = np.zeros((80, 20, 3), dtype=np.uint8)
    background[:30] = (255, 0, 0)
    background[30:50, :10] = (0, 255, 0)
    background[30:50, 10:] = (255, 255, 0)
    background[50:] = (0, 0, 255)
    rgb = np.zeros((10, 40, 3), dtype=np.uint8)
    alpha = np.zeros((10, 40), dtype=np.uint8)
    out_rgb, out_alpha = fill_image(rgb, alpha, background)
    assert out_rgb.shape == (10, 40, 3) and (out_alpha == 255).all()
    # Away from the seam in the middle (where the resampling filter blends), each half's colour.
    assert (out_rgb[:, :12] == (0, 255, 0)).all()
    assert (out_rgb[:, 28:] == (255, 255, 0)).all()


def test_a_wide_background_is_cropped_at_its_sides():
    # A 10 x 10 canvas over a 30 x 10 background red | white | blue: only the white middle shows.
    background = np.zeros((10, 30, 3), dtype=np.uint8)
    background[:, :10] = (255, 0, 0)
    background[:, 10:20] = (255, 255, 255)
    background[:, 20:] = (0, 0, 255)
    out_rgb, _ = fill_image(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), background)
    assert (out_rgb[:, 2:8] == 255).all()


def test_a_background_with_alpha_composites_as_over():
    rgb, alpha = cutout()
    background = np.dstack(cutout(seed=2))
    out_rgb, out_alpha = fill_image(rgb, alpha, background)
    want_rgb, want_alpha = reference_over(rgb, alpha, background[..., :3], background[..., 3])
    assert np.abs(out_alpha - want_alpha).max() <= 0.5 + 1e-4
    seen = want_alpha > 0
    assert np.abs(out_rgb[seen] - want_rgb[seen]).max() <= 0.5 + 1e-3


def test_a_background_must_be_an_image():
    rgb, alpha = cutout()
    with pytest.raises(ValueError):
        fill_image(rgb, alpha, np.zeros((10, 10), np.uint8))


# --- foreground_box and crop_to -------------------------------------------------------------------------------


def test_the_foreground_box_bounds_the_pixels_above_the_threshold():
    alpha = np.zeros((50, 80), np.uint8)
    alpha[10:20, 30:45] = 255
    alpha[25, 60] = 3  # faint: inside the box at threshold 0, outside at 5
    assert foreground_box(alpha) == Box(left=30, top=10, width=31, height=16)
    assert foreground_box(alpha, threshold=5) == Box(left=30, top=10, width=15, height=10)


def test_an_empty_matte_has_no_box():
    assert foreground_box(np.zeros((5, 5), np.uint8)) is None
    assert foreground_box(np.full((5, 5), 7, np.uint8), threshold=7) is None


def test_a_full_matte_boxes_the_image():
    assert foreground_box(np.full((5, 9), 255, np.uint8)) == Box(0, 0, 9, 5)


def test_crop_keeps_the_box():
    rgb, alpha = cutout()
    box = Box(left=5, top=7, width=20, height=11)
    out_rgb, out_alpha = crop_to(rgb, alpha, box)
    assert (out_rgb == rgb[7:18, 5:25]).all() and (out_alpha == alpha[7:18, 5:25]).all()


def test_crop_margins_beyond_the_image_are_transparent():
    rgb, alpha = cutout(20, 30)
    box = Box(left=2, top=1, width=26, height=17)
    out_rgb, out_alpha = crop_to(rgb, alpha, box, margins=(4, 6, 8, 10))  # top, right, bottom, left
    assert out_alpha.shape == (4 + 17 + 8, 10 + 26 + 6)
    # The image sits at (row 3, column 8) of the output: 4 - 1 rows and 10 - 2 columns of padding above and left.
    assert (out_rgb[3:23, 8:38] == rgb).all() and (out_alpha[3:23, 8:38] == alpha).all()
    padding = np.ones(out_alpha.shape, bool)
    padding[3:23, 8:38] = False
    assert (out_alpha[padding] == 0).all() and (out_rgb[padding] == 0).all()


def test_crop_margins_inside_the_image_take_the_photo():
    rgb, alpha = cutout()
    out_rgb, _ = crop_to(rgb, alpha, Box(10, 10, 5, 5), margins=(2, 2, 2, 2))
    assert (out_rgb == rgb[8:17, 8:17]).all()


def test_crop_refuses_negative_margins_and_empty_boxes():
    rgb, alpha = cutout()
    with pytest.raises(ValueError):
        crop_to(rgb, alpha, Box(0, 0, 5, 5), margins=(-1, 0, 0, 0))
    with pytest.raises(ValueError):
        crop_to(rgb, alpha, Box(0, 0, 0, 5))


# --- encoders -------------------------------------------------------------------------------------------------


def photo(height: int = 64, width: int = 96) -> np.ndarray:
    """Smooth gradients (lossy codecs keep them close), not noise."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack((x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2))).astype(np.uint8)


def test_jpeg_round_trips():
    rgb = photo()
    data = encode_jpeg(rgb, quality=95)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (96, 64)
    assert np.abs(np.asarray(image).astype(int) - rgb).mean() < 2


def test_jpeg_quality_trades_size():
    rgb = cutout(64, 64)[0]
    assert len(encode_jpeg(rgb, quality=30)) < len(encode_jpeg(rgb, quality=95))
    with pytest.raises(ValueError):
        encode_jpeg(rgb, quality=0)


def test_webp_with_alpha_round_trips():
    rgb = photo()
    alpha = np.tile(np.arange(96, dtype=np.uint8) * 2, (64, 1))
    image = Image.open(io.BytesIO(encode_webp(rgb, alpha)))
    assert image.format == "WEBP" and image.mode == "RGBA" and image.size == (96, 64)
    decoded = np.asarray(image)
    assert (decoded[..., 3] == alpha).all()  # libwebp keeps alpha lossless at quality 100 of its alpha plane
    seen = alpha > 64
    assert np.abs(decoded[..., :3].astype(int) - rgb)[seen].mean() < 4


def test_webp_lossless_is_exact():
    rgb, alpha = cutout()
    alpha = np.maximum(alpha, 1)  # lossless WebP may drop colours under alpha 0; with none, every pixel is exact
    decoded = np.asarray(Image.open(io.BytesIO(encode_webp(rgb, alpha, lossless=True))))
    assert (decoded[..., :3] == rgb).all() and (decoded[..., 3] == alpha).all()


def test_webp_without_alpha_is_rgb():
    image = Image.open(io.BytesIO(encode_webp(photo(), None)))
    assert image.mode == "RGB"
