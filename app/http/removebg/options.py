"""remove.bg's request parameters, parsed and checked into :class:`Options` (no image is touched here).

Every value arrives as text (form fields) or as a JSON scalar turned into text; files are bytes. A parameter the
API does not have, or a value a parameter does not take, is remove.bg's 400 for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from app.http.removebg import errors
from app.imaging.output import Rgba, parse_colour
from app.imaging.placement import Length, Margins, Position, Region
from app.service import TargetChoice

MEGAPIXEL = 1_000_000
# Output caps by size, in pixels ("full" is "4k"; "preview" is also "small" and "regular"; "50MP" is the newer API's).
SIZE_PIXELS = {
    "preview": MEGAPIXEL // 4,
    "small": MEGAPIXEL // 4,
    "regular": MEGAPIXEL // 4,
    "medium": MEGAPIXEL * 3 // 2,
    "hd": 4 * MEGAPIXEL,
    "full": 25 * MEGAPIXEL,
    "4k": 25 * MEGAPIXEL,
    "auto": 25 * MEGAPIXEL,  # "the highest available resolution": every size is available here
    "50MP": 50 * MEGAPIXEL,
}
PNG_MAX_PIXELS = 10 * MEGAPIXEL  # a PNG (or a transparent result of format=auto) is at most 10 megapixels
FORMATS = ("auto", "png", "jpg", "zip", "webp")
CHANNELS = ("rgba", "alpha")
# type names a kind of foreground: anything but auto says the photo has a subject to cut out.
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation")
TYPE_LEVELS = ("none", "1", "2", "latest")
SHADOW_METHODS = ("legacy", "latest")
SOURCES = ("image_file", "image_file_b64", "image_url")
BACKGROUNDS = ("bg_color", "bg_image_url", "bg_image_file")
IGNORED_FLAGS = ("add_shadow", "semitransparency")  # accepted (and checked), no effect here: README
PARAMETERS = frozenset(
    {*SOURCES, *BACKGROUNDS, *IGNORED_FLAGS, "size", "type", "type_level", "format", "roi", "crop", "crop_margin", "scale",
     "position", "channels", "shadow_method"}
)
_LENGTH = re.compile(r"(\d+(?:\.\d+)?)(px|%)?")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


@dataclass(frozen=True)
class Options:
    max_pixels: int  # the output's cap, from size and format
    format: str
    channels: str
    bg_colour: Rgba | None
    crop: bool
    crop_margin: Margins
    scale: float | None  # the subject's share of the canvas; None: its size stays ("original")
    position: Position | None  # None: where it was ("original")
    roi: Region
    target: TargetChoice | None  # None: the server's default (the photo decides)
    classify: bool  # whether X-Type is wanted (type_level is not none)


def check_names(names: list[str]) -> None:
    for name in names:
        if name not in PARAMETERS:
            raise errors.unknown_parameter(name)


def _choice(fields: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        return default
    if value not in allowed:
        raise errors.invalid_value(name)
    return value


def _flag(fields: Mapping[str, str], name: str, default: bool) -> bool:
    value = fields.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise errors.invalid_value(name)


def _length(text: str, bare_unit: str | None) -> Length | None:
    """ "30px", "10%" (or a bare number, read in ``bare_unit``); None when malformed."""
    match = _LENGTH.fullmatch(text)
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2) or bare_unit
    if unit is None:
        return None
    return Length(number / 100, relative=True) if unit == "%" else Length(number)


def parse_crop_margin(text: str) -> Margins:
    """One value (every side), two (top and bottom, left and right) or four (top, right, bottom, left)."""
    parts = text.split()
    lengths = [_length(part, "px") for part in parts]
    if len(parts) not in (1, 2, 4) or any(length is None for length in lengths):
        raise errors.invalid_value("crop_margin")
    if len(lengths) == 1:
        lengths *= 4
    elif len(lengths) == 2:
        lengths *= 2
    top, right, bottom, left = lengths
    return (top, right, bottom, left)  # type: ignore[return-value]  # None ruled out above


def parse_scale(text: str) -> float | None:
    if text == "original":
        return None
    match = _PERCENT.fullmatch(text)
    if match is None or not 10 <= float(match.group(1)) <= 100:
        raise errors.invalid_value("scale")
    return float(match.group(1)) / 100


def parse_position(text: str) -> Position | None:
    if text == "original":
        return None
    if text == "center":
        return (0.5, 0.5)
    shares = []
    for part in text.split():
        match = _PERCENT.fullmatch(part)
        if match is None or float(match.group(1)) > 100:
            raise errors.invalid_value("position")
        shares.append(float(match.group(1)) / 100)
    if len(shares) == 1:
        return (shares[0], shares[0])
    if len(shares) == 2:
        return (shares[0], shares[1])
    raise errors.invalid_value("position")


def parse_roi(text: str) -> Region:
    """ "x1 y1 x2 y2", each in pixels ("px") or a share of the width or height ("%")."""
    parts = text.split()
    lengths = [_length(part, None) for part in parts]
    if len(parts) != 4 or any(length is None for length in lengths):
        raise errors.invalid_value("roi")
    x1, y1, x2, y2 = lengths
    return (x1, y1, x2, y2)  # type: ignore[return-value]  # None ruled out above


def parse_options(fields: Mapping[str, str], has_bg_file: bool) -> Options:
    """The options of a request whose text parameters are ``fields`` (names already checked)."""
    size = _choice(fields, "size", tuple(SIZE_PIXELS), "preview")
    output_format = _choice(fields, "format", FORMATS, "auto")
    channels = _choice(fields, "channels", CHANNELS, "rgba")
    kind = _choice(fields, "type", TYPES, "auto")
    type_level = _choice(fields, "type_level", TYPE_LEVELS, "1")
    _choice(fields, "shadow_method", SHADOW_METHODS, "latest")
    for name in IGNORED_FLAGS:
        _flag(fields, name, name == "semitransparency")
    crop = _flag(fields, "crop", False)

    backgrounds = [name for name in BACKGROUNDS if fields.get(name, "").strip()] + (["bg_image_file"] if has_bg_file else [])
    if len(backgrounds) > 1:
        raise errors.multiple_bg_sources()
    bg_colour = None
    if backgrounds == ["bg_color"]:
        try:
            bg_colour = parse_colour(fields["bg_color"])
        except ValueError:
            raise errors.invalid_value("bg_color") from None

    crop_margin = parse_crop_margin(fields.get("crop_margin", "").strip() or "0")
    scale = parse_scale(fields.get("scale", "").strip() or "original")
    position_text = fields.get("position", "").strip()
    # Scaling centres the subject unless a position is given.
    position = parse_position(position_text) if position_text else ((0.5, 0.5) if scale is not None else None)
    roi = parse_roi(fields.get("roi", "").strip() or "0% 0% 100% 100%")

    max_pixels = SIZE_PIXELS[size]
    opaque_background = has_bg_file or bool(fields.get("bg_image_url", "").strip()) or (bg_colour is not None and bg_colour[3] == 255)
    # A PNG holds at most 10 megapixels; format=auto gives one unless the result is opaque (a matte is a PNG).
    if output_format == "png" or (output_format == "auto" and (channels == "alpha" or not opaque_background)):
        max_pixels = min(max_pixels, PNG_MAX_PIXELS)
    return Options(
        max_pixels=max_pixels,
        format=output_format,
        channels=channels,
        bg_colour=bg_colour,
        crop=crop,
        crop_margin=crop_margin,
        scale=scale,
        position=position,
        roi=roi,
        target=None if kind == "auto" else "subject",
        classify=type_level != "none",
    )
