"""Output options for a cut-out, in no API's words: colours, backgrounds, cropping to the subject, JPEG and WebP.

A cut-out is ``rgb`` (H x W x 3 uint8, straight colours) with ``alpha`` (H x W uint8). Every function here is pure
numpy/Pillow and returns new arrays; the APIs parse their parameters and call these from their encoders.

Compositing is Porter-Duff "over" on straight (non-premultiplied) alpha. Over an opaque background only the soft
edge is blended, in 16-bit integers (exact to rounding); over a semi-transparent one everything is, in float32, a band of rows at a time so the
temporaries stay a few megabytes at any image size.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageColor

Rgba = tuple[int, int, int, int]

_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_BAND_ROWS = 256  # float compositing works on this many rows at a time
WEBP_MAX_SIDE = 16383  # libwebp's limit


def parse_colour(text: str) -> Rgba:
    """A colour as hex (3, 4, 6 or 8 digits, '#' optional; the 4th or 4th pair is alpha) or a CSS/X11 name.

    Raises ValueError for anything else (rgb(), hsl() and the like are not accepted: no API here documents them).
    """
    text = text.strip()
    match = _HEX.fullmatch(text)
    if match:
        red, green, blue, *alpha = ImageColor.getrgb("#" + match.group(1))  # Pillow's reading of #rgb[a] and #rrggbb[aa]
        return (red, green, blue, alpha[0] if alpha else 255)
    name = text.lower()
    if name in ImageColor.colormap:
        red, green, blue = ImageColor.getrgb(name)[:3]
        return (red, green, blue, 255)
    raise ValueError(f"not a colour: {text!r} (use hex such as 81d4fa, #fff or 81d4fa80, or a colour name such as green)")


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int


def foreground_box(alpha: np.ndarray, threshold: int = 0) -> Box | None:
    """The bounding box of the pixels whose alpha exceeds ``threshold``; None when there are none."""
    solid = alpha > threshold
    rows = np.flatnonzero(solid.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(solid[rows[0] : rows[-1] + 1].any(axis=0))
    return Box(int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1))


def _check_cutout(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected H x W x 3 uint8 colours")
    if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError("expected an H x W uint8 alpha the colours' size")


def _div255(x: np.ndarray) -> np.ndarray:
    """round(x / 255) for uint16 x <= 65025, without a division (exact over that range)."""
    x = x + 128
    return (x + (x >> 8)) >> 8


def _over_opaque(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The cut-out over an opaque background (H x W x 3, or 1 x 1 x 3 for a colour): colours only, alpha is 255.

    Opaque and clear pixels are copies; only the soft edge (a few percent of a photo) is blended, in uint16.
    """
    out = np.empty_like(rgb)
    out[...] = background
    np.copyto(out, rgb, where=(alpha == 255)[:, :, None])
    soft = np.nonzero((alpha > 0) & (alpha < 255))
    if soft[0].size:
        a = alpha[soft][:, None].astype(np.uint16)
        behind = background[soft] if background.shape[:2] == alpha.shape else background.reshape(1, 3)
        mixed = rgb[soft] * a  # uint16: at most 255 * 255, and the two terms sum to at most that
        mixed += behind.astype(np.uint16) * (255 - a)
        out[soft] = _div255(mixed).astype(np.uint8)
    return out


def _over_translucent(rgb: np.ndarray, alpha: np.ndarray, bg_rgb: np.ndarray, bg_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha "over" with a background that has its own alpha (H x W or broadcastable), in float32 bands."""
    height = alpha.shape[0]
    out_rgb = np.empty_like(rgb)
    out_alpha = np.empty_like(alpha)
    full_bg = bg_rgb.shape[0] == height and height > 1
    for start in range(0, height, _BAND_ROWS):
        stop = min(start + _BAND_ROWS, height)
        rows = slice(start, stop) if full_bg else slice(None)
        a = alpha[start:stop, :, None].astype(np.float32) / 255
        b = np.broadcast_to(bg_alpha[rows], (stop - start, alpha.shape[1]))[:, :, None].astype(np.float32) / 255
        behind = b * (1 - a)  # the background's share of each pixel
        total = a + behind
        colours = rgb[start:stop] * a + bg_rgb[rows].astype(np.float32) * behind
        # Where nothing is left (both transparent) the colour is moot; keep the photo's.
        np.divide(colours, total, out=colours, where=total > 0)
        colours = np.where(total > 0, colours, rgb[start:stop])
        out_rgb[start:stop] = np.clip(colours + 0.5, 0, 255).astype(np.uint8)
        out_alpha[start:stop] = np.clip(total[:, :, 0] * 255 + 0.5, 0, 255).astype(np.uint8)
    return out_rgb, out_alpha


def fill_colour(rgb: np.ndarray, alpha: np.ndarray, colour: Rgba) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out over a solid colour: the composite's (rgb, alpha)."""
    _check_cutout(rgb, alpha)
    bg_rgb = np.array(colour[:3], dtype=np.uint8).reshape(1, 1, 3)
    if colour[3] == 255:
        return _over_opaque(rgb, alpha, bg_rgb), np.full_like(alpha, 255)
    if colour[3] == 0:
        return rgb.copy(), alpha.copy()
    return _over_translucent(rgb, alpha, bg_rgb, np.array([[colour[3]]], dtype=np.uint8))


def _cover(background: np.ndarray, width: int, height: int) -> np.ndarray:
    """``background`` scaled to cover width x height with its aspect kept, then centred and cropped to it."""
    bg_height, bg_width = background.shape[:2]
    if (bg_width, bg_height) == (width, height):
        return background
    scale = max(width / bg_width, height / bg_height)
    scaled_w, scaled_h = max(width, round(bg_width * scale)), max(height, round(bg_height * scale))
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    image = Image.fromarray(background)
    # Resize only the part that will show (Pillow's box), straight to the canvas's size.
    source_box = (left / scale, top / scale, (left + width) / scale, (top + height) / scale)
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS, box=source_box))


def fill_image(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out over a background image (H x W x 3 or x 4 uint8), centred and scaled to cover the canvas with
    its aspect kept (used as it is when it already has the canvas's size): the composite's (rgb, alpha)."""
    _check_cutout(rgb, alpha)
    if background.ndim != 3 or background.shape[2] not in (3, 4) or background.dtype != np.uint8:
        raise ValueError("expected an H x W x 3 or 4 uint8 background")
    height, width = alpha.shape
    canvas = _cover(background, width, height)
    if canvas.shape[2] == 3 or bool((canvas[:, :, 3] == 255).all()):
        return _over_opaque(rgb, alpha, canvas[:, :, :3]), np.full_like(alpha, 255)
    return _over_translucent(rgb, alpha, canvas[:, :, :3], canvas[:, :, 3])


def crop_to(
    rgb: np.ndarray, alpha: np.ndarray, box: Box, margins: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """``box`` widened by ``margins`` (top, right, bottom, left, in pixels, each >= 0); what lies beyond the image
    is transparent black padding."""
    _check_cutout(rgb, alpha)
    if min(margins) < 0:
        raise ValueError("margins must not be negative")
    if box.width <= 0 or box.height <= 0:
        raise ValueError("the box must not be empty")
    top_margin, right_margin, bottom_margin, left_margin = margins
    top, left = box.top - top_margin, box.left - left_margin
    bottom, right = box.top + box.height + bottom_margin, box.left + box.width + right_margin
    height, width = alpha.shape
    out_rgb = np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
    out_alpha = np.zeros((bottom - top, right - left), dtype=np.uint8)
    # The part of the widened box that lies inside the image, in image and in output coordinates.
    src_top, src_left, src_bottom, src_right = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if src_top < src_bottom and src_left < src_right:
        rows = slice(src_top - top, src_bottom - top)
        columns = slice(src_left - left, src_right - left)
        out_rgb[rows, columns] = rgb[src_top:src_bottom, src_left:src_right]
        out_alpha[rows, columns] = alpha[src_top:src_bottom, src_left:src_right]
    return out_rgb, out_alpha


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Baseline JPEG of H x W x 3 uint8 colours (no alpha: composite over a background first)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected H x W x 3 uint8 colours")
    if not 1 <= quality <= 100:
        raise ValueError("quality must be 1-100")
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue()


def encode_webp(rgb: np.ndarray, alpha: np.ndarray | None, quality: int = 90, lossless: bool = False) -> bytes:
    """WebP of the colours, with ``alpha`` as its alpha channel when given (lossy colours keep an exact alpha)."""
    if alpha is None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected H x W x 3 uint8 colours")
        image = Image.fromarray(rgb)
    else:
        _check_cutout(rgb, alpha)
        image = Image.fromarray(np.dstack((rgb, alpha)), "RGBA")
    if max(image.size) > WEBP_MAX_SIDE:
        raise ValueError(f"WebP holds at most {WEBP_MAX_SIDE} pixels a side")
    if not 0 <= quality <= 100:
        raise ValueError("quality must be 0-100")
    out = io.BytesIO()
    image.save(out, "WEBP", quality=quality, lossless=lossless)
    return out.getvalue()
