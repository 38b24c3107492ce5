"""remove.bg's result from a cut-out: region of interest, crop or placement, background, format, and its headers.

The encoder runs on a pipeline worker thread within the request's CPU slot and pixel budget; every image step is
an imaging function (app/imaging/output.py, app/imaging/placement.py), this module only orders them as remove.bg
documents its options.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from app.http.removebg import errors
from app.http.removebg.options import Options
from app.imaging.decode import MAX_SIDE
from app.imaging.output import WEBP_MAX_SIDE, Box, crop_to, encode_jpeg, encode_webp, fill_colour, fill_image, foreground_box
from app.imaging.placement import FractionalBox, keep_region, margins_in_pixels, place, placed_box
from app.imaging.png import iter_grey_png, iter_rgba_png
from app.service import Cutout, Encoded, Encoder

JPEG_QUALITY = 90
PERSON_THRESHOLD = 0.5  # MediaPipe's own detection threshold, as the scene rule uses it
WHITE = (255, 255, 255, 255)  # what a JPEG without a background shows where the cut-out is transparent
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "zip": "application/zip", "webp": "image/webp"}
MAX_BACKGROUND_PIXELS = 25_000_000  # decoded whole (a PNG cannot be decoded smaller), so held to the output's cap


@dataclass(frozen=True)
class Result:
    options: Options
    roi: FractionalBox | None  # None: the whole image
    background: bytes | None  # a background image's file, decoded here at the canvas's size
    as_json: bool  # Accept: application/json
    png_level: int
    matte_png_level: int

    def encoder(self) -> Encoder:
        return self._encode

    def _encode(self, cutout: Cutout) -> Encoded:
        rgb, alpha = cutout.rgb, cutout.alpha
        if self.roi is not None:
            alpha = keep_region(alpha, self.roi.on(alpha.shape[1], alpha.shape[0]))
        box = foreground_box(alpha)
        if box is None:
            raise errors.unknown_foreground()
        rgb, alpha = self._arrange(rgb, alpha, box)
        headers = {"X-Credits-Charged": "0"}
        if self.options.classify and cutout.person_score is not None and cutout.person_score >= PERSON_THRESHOLD:
            headers["X-Type"] = "person"  # the only kind this service can tell; otherwise no X-Type (README)
        foreground = foreground_box(alpha) or Box(0, 0, 0, 0)
        height, width = alpha.shape
        headers.update({"X-Width": str(width), "X-Height": str(height)})
        headers.update({f"X-Foreground-{name.title()}": str(getattr(foreground, name)) for name in ("top", "left", "width", "height")})
        kind, chunks = self._image(rgb, alpha)
        if not self.as_json:
            return Encoded(chunks, MEDIA_TYPES[kind], headers)
        data = {
            "result_b64": base64.b64encode(b"".join(chunks)).decode("ascii"),
            **{f"foreground_{name}": getattr(foreground, name) for name in ("top", "left", "width", "height")},
        }
        return Encoded(iter([json.dumps({"data": data}).encode()]), "application/json", headers)

    def _arrange(self, rgb: np.ndarray, alpha: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Crop to the subject (with its margins) and place it on the canvas, as the options say."""
        options = self.options
        if options.crop:
            top, right, bottom, left = margins_in_pixels(options.crop_margin, box)
            rgb, alpha = crop_to(rgb, alpha, box, (top, right, bottom, left))
            box = Box(left, top, box.width, box.height)
        if options.scale is not None or options.position is not None:
            canvas = (alpha.shape[1], alpha.shape[0])
            rgb, alpha = place(rgb, alpha, box, canvas, placed_box(box, canvas, options.scale, options.position))
        return rgb, alpha

    def _image(self, rgb: np.ndarray, alpha: np.ndarray) -> tuple[str, Iterator[bytes]]:
        """The result's format and bytes: the matte alone, or the cut-out over its background."""
        options = self.options
        if options.channels == "alpha" and options.format != "zip":
            kind = "png" if options.format == "auto" else options.format
            return kind, self._matte(kind, alpha)
        if self.background is not None:
            rgb, alpha = fill_image(rgb, alpha, decode_background(self.background, alpha.shape[1], alpha.shape[0]))
        elif options.bg_colour is not None:
            rgb, alpha = fill_colour(rgb, alpha, options.bg_colour)
        kind = options.format
        if kind == "auto":
            kind = "png" if bool((alpha < 255).any()) else "jpg"
        if kind == "png":
            return kind, iter_rgba_png(rgb, alpha, self.png_level)
        if kind == "jpg":
            opaque = rgb if bool((alpha == 255).all()) else fill_colour(rgb, alpha, WHITE)[0]
            return kind, iter([encode_jpeg(opaque, JPEG_QUALITY)])
        if kind == "webp":
            if max(alpha.shape) > WEBP_MAX_SIDE:  # a crop's margins can take a 16,000-pixel image past it
                detail = f"A WebP holds at most {WEBP_MAX_SIDE} pixels a side; use png, jpg or zip."
                raise errors.bad_request("invalid_format", "Invalid format parameter given", detail)
            return kind, iter([encode_webp(rgb, alpha, JPEG_QUALITY)])
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zip_file:  # both members are compressed already
            zip_file.writestr("color.jpg", encode_jpeg(rgb, JPEG_QUALITY))
            zip_file.writestr("alpha.png", b"".join(iter_grey_png(alpha, self.matte_png_level)))
        return kind, iter([archive.getvalue()])

    def _matte(self, kind: str, alpha: np.ndarray) -> Iterator[bytes]:
        if kind == "png":
            return iter_grey_png(alpha, self.matte_png_level)
        out = io.BytesIO()
        Image.fromarray(alpha, "L").save(out, "JPEG" if kind == "jpg" else "WEBP", quality=JPEG_QUALITY)
        return iter([out.getvalue()])


def _open_background(data: bytes) -> Image.Image:
    """A background image opened (its header read); remove.bg's 400s when unreadable or too large."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # Pillow raises many types for unknown or corrupt data
        raise errors.failed_to_read_image("The background image could not be read.") from None
    width, height = image.size
    if width * height > MAX_BACKGROUND_PIXELS or max(width, height) > MAX_SIDE:
        raise errors.resolution_too_high(
            f"The background image has {width} x {height} pixels; at most {MAX_BACKGROUND_PIXELS // 1_000_000} megapixels "
            f"and {MAX_SIDE} pixels a side."
        )
    return image


def probe_background(data: bytes) -> None:
    """Refuse an unreadable or oversized background before the model runs."""
    _open_background(data).close()


def decode_background(data: bytes, width: int, height: int) -> np.ndarray:
    """A background image's pixels (RGB, or RGBA where it has transparency), a JPEG decoded no larger than it must be to
    cover ``width`` x ``height``."""
    image = _open_background(data)
    try:
        image.draft("RGB", (width, height))
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    except Exception:
        raise errors.failed_to_read_image("The background image could not be read.") from None
    finally:
        image.close()
