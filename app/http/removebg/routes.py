"""remove.bg's v1.0 API: ``POST /v1.0/removebg`` and ``GET /v1.0/account``, on the shared pipeline.

The request's parameters arrive as multipart, urlencoded or JSON; the image as a file, base64 text or a URL (fetched
by the same SSRF-safe fetcher as Azure's). Limits are remove.bg's: 12 MB a file, 50 megapixels an input. The result is
made by :mod:`app.http.removebg.output` inside the pipeline's CPU slot and pixel budget.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.errors import ImageTooLarge, ImageUrlUnreachable, NotAnImage, PipelineError
from app.http.removebg import errors
from app.http.auth import KeyChecker
from app.http.body import read_capped, replayed
from app.http.removebg.options import PARAMETERS, SOURCES, Options, check_names, parse_options
from app.http.removebg.output import Result, probe_background
from app.http.sources import download_image
from app.http.streaming import ImageResponse, until_disconnected
from app.http.url_fetch import UrlPolicy
from app.imaging.placement import FractionalBox, RegionEmpty, RegionOutOfBounds, region_of
from app.imaging.decode import probe_image
from app.service import ImageStream, SegmentService, image_errors

PATH_PREFIX = "/v1.0/"
REMOVEBG_PATH = PATH_PREFIX + "removebg"
ACCOUNT_PATH = PATH_PREFIX + "account"
KEY_HEADER = "x-api-key"
MAX_FILE_BYTES = 12 * 1024 * 1024  # an image, or a background image
MAX_INPUT_PIXELS = 50_000_000
_MAX_B64_CHARS = 4 * -(-MAX_FILE_BYTES // 3)
_OVERHEAD = 64 * 1024  # the other parameters, boundaries and part headers
# A body holds at most one image source (a file, or its base64) and one background file.
MAX_MULTIPART_BYTES = _MAX_B64_CHARS + MAX_FILE_BYTES + _OVERHEAD
MAX_TEXT_BODY_BYTES = _MAX_B64_CHARS + _OVERHEAD  # urlencoded or JSON: no files
FILE_PARAMETERS = ("image_file", "bg_image_file")
UNLIMITED_CALLS = 2**31 - 1  # GET /v1.0/account's free_calls: every call is free here (README)

_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")
_OTHER_SIGNATURES = ((b"%PDF", "pdf"), (b"PK\x03\x04", "zip"), (b"\x1aE\xdf\xa3", "webm"), (b"OggS", "ogg"), (b"ID3", "mp3"))


@dataclasses.dataclass(frozen=True)
class Parameters:
    fields: dict[str, str]  # every text parameter
    files: dict[str, bytes]  # image_file and bg_image_file, when sent as files (or as binary fields)


def _authorised(request: Request) -> None:
    key_checker: KeyChecker = request.state.key_checker
    # An empty X-Api-Key is no key.
    key_checker.check(request.headers.get(KEY_HEADER) or None, missing=errors.missing_key, invalid=errors.invalid_key)


async def account(request: Request) -> Response:
    """Credits and free calls, honestly: nothing is ever charged, so no credits and every call free."""
    _authorised(request)
    credits = {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0}
    return JSONResponse({"data": {"attributes": {"credits": credits, "api": {"free_calls": UNLIMITED_CALLS, "sizes": "all"}}}})


async def removebg(request: Request) -> Response:
    try:
        return await _removebg(request)
    except PipelineError as error:
        raise errors.from_pipeline(error) from None


async def _removebg(request: Request) -> Response:
    _authorised(request)
    try:
        async with asyncio.timeout(request.state.body_timeout_s):
            parameters = await read_parameters(request)
    except TimeoutError:
        raise errors.body_timeout() from None
    check_names([*parameters.fields, *parameters.files])
    options = parse_options(parameters.fields, has_bg_file=bool(parameters.files.get("bg_image_file")))
    url_policy = dataclasses.replace(request.state.url_policy, max_bytes=MAX_FILE_BYTES)
    data = await _source(request, parameters, url_policy)
    roi = await asyncio.to_thread(_checked_input, data, options)
    background = await _background(request, parameters, url_policy)
    service: SegmentService = request.state.segment_service
    settings = request.state.settings
    result = Result(
        options,
        roi,
        background,
        as_json=wants_json(request.headers.get("accept")),
        png_level=settings.png_compression,
        matte_png_level=settings.matte_png_compression,
    )

    async def produce() -> ImageStream:
        try:
            return await service.segment(
                data,
                "backgroundRemoval",
                options.target,
                encode=result.encoder(),
                max_output_pixels=options.max_pixels,
                score_person=options.classify,
            )
        except NotAnImage:
            raise not_an_image(data) from None

    return ImageResponse(await until_disconnected(request, produce()))


async def read_parameters(request: Request) -> Parameters:
    """The body's parameters, read within remove.bg's limits (never more than one image and one background held)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    too_large = errors.file_too_large(MAX_FILE_BYTES)
    if media == "multipart/form-data":
        return await _form(request, await read_capped(request, MAX_MULTIPART_BYTES, too_large))
    if media == "application/x-www-form-urlencoded":
        return await _form(request, await read_capped(request, MAX_TEXT_BODY_BYTES, too_large))
    if media == "application/json":
        return _json(await read_capped(request, MAX_TEXT_BODY_BYTES, too_large))
    if not media and not await read_capped(request, MAX_TEXT_BODY_BYTES, too_large):
        return Parameters({}, {})  # no parameters at all: no image given
    raise errors.invalid_body("Send the parameters as multipart/form-data, application/x-www-form-urlencoded or application/json.")


async def _form(request: Request, body: bytes) -> Parameters:
    try:
        form = await replayed(request, body).form(max_files=4, max_fields=len(PARAMETERS) * 2, max_part_size=_MAX_B64_CHARS + 1024)
    except HTTPException as error:  # Starlette's words for a malformed or oversized form
        raise errors.invalid_body(str(error.detail)) from None
    except Exception as error:
        raise errors.invalid_body(f"{type(error).__name__}") from None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                content = await value.read(MAX_FILE_BYTES + 1)
                if name in FILE_PARAMETERS:
                    files[name] = content
                else:
                    fields[name] = content.decode("utf-8", "replace")
            elif name in FILE_PARAMETERS:
                # A file sent as a plain field (no filename): Starlette decoded it, as latin-1 where it was not UTF-8.
                files[name] = value.encode("latin-1") if value.isascii() or _latin1(value) else value.encode("utf-8")
            else:
                fields[name] = value
    finally:
        await form.close()
    for name, content in files.items():
        if len(content) > MAX_FILE_BYTES:
            raise errors.file_too_large(MAX_FILE_BYTES, "Background image" if name == "bg_image_file" else "File")
    return Parameters(fields, {name: content for name, content in files.items() if content})


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _json(body: bytes) -> Parameters:
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.invalid_body("The body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise errors.invalid_body("The body must be a JSON object of parameters.")
    fields: dict[str, str] = {}
    for name, value in document.items():
        if name not in PARAMETERS:
            raise errors.unknown_parameter(str(name))
        if name in FILE_PARAMETERS:
            raise errors.invalid_body(f"{name} is a file: send it as multipart/form-data (or image_file_b64 as text).")
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            fields[name] = str(value)
        else:
            raise errors.invalid_value(name)
    return Parameters(fields, {})


async def _source(request: Request, parameters: Parameters, url_policy: UrlPolicy) -> bytes:
    """The image's bytes, from the one source given."""
    fields = parameters.fields
    given = [name for name in SOURCES if parameters.files.get(name) or fields.get(name, "").strip()]
    if len(given) > 1:
        raise errors.multiple_sources()
    if not given:
        raise errors.missing_source()
    (source,) = given
    if source == "image_file":
        return parameters.files.get("image_file") or fields["image_file"].encode("utf-8")
    if source == "image_file_b64":
        return decode_b64(fields["image_file_b64"])
    url = _checked_url(fields["image_url"], "image_url")
    try:
        return await download_image(request.state.http_client, url, url_policy)
    except ImageUrlUnreachable:
        raise errors.failed_image_download(url) from None
    except ImageTooLarge:
        raise errors.file_too_large(MAX_FILE_BYTES) from None


async def _background(request: Request, parameters: Parameters, url_policy: UrlPolicy) -> bytes | None:
    """A background image's bytes (bg_image_file or bg_image_url), its header checked; None without one."""
    data = parameters.files.get("bg_image_file")
    url_text = parameters.fields.get("bg_image_url", "").strip()
    if data is None and url_text:
        url = _checked_url(url_text, "bg_image_url")
        try:
            data = await download_image(request.state.http_client, url, url_policy)
        except ImageUrlUnreachable:
            raise errors.failed_bg_download(url) from None
        except ImageTooLarge:
            raise errors.file_too_large(MAX_FILE_BYTES, "Background image") from None
    if data is not None:
        await asyncio.to_thread(probe_background, data)
    return data


def _checked_url(text: str, name: str) -> str:
    url = text.strip()
    try:
        parts = urlsplit(url)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise errors.invalid_value(name)
    return url


def decode_b64(text: str) -> bytes:
    """image_file_b64: standard or URL-safe base64, whitespace and a ``data:…;base64,`` prefix allowed."""
    text = "".join(text.split())
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) > _MAX_B64_CHARS + 4:
        raise errors.file_too_large(MAX_FILE_BYTES)
    try:
        data = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise errors.failed_to_read_image("image_file_b64 is not valid base64.") from None
    if len(data) > MAX_FILE_BYTES:
        raise errors.file_too_large(MAX_FILE_BYTES)
    if not data:
        raise errors.missing_source()
    return data


def _checked_input(data: bytes, options: Options) -> FractionalBox | None:
    """The input's size against remove.bg's limits and the roi against the input; the roi as fractions of it."""
    try:
        with image_errors():
            info = probe_image(data)
    except NotAnImage:
        raise not_an_image(data) from None
    except PipelineError as error:
        raise errors.from_pipeline(error) from None
    if info.width * info.height > MAX_INPUT_PIXELS:
        megapixels = info.width * info.height / 1e6
        raise errors.resolution_too_high(
            f"Input image has {megapixels:.0f} megapixels, maximum supported input resolution is {MAX_INPUT_PIXELS // 1_000_000} megapixels"
        )
    try:
        roi = region_of(options.roi, info.width, info.height)
    except RegionOutOfBounds:
        raise errors.roi_exceeds_bounds() from None
    except RegionEmpty:
        raise errors.roi_region_empty() from None
    return None if roi == FractionalBox(0.0, 0.0, 1.0, 1.0) else roi


def not_an_image(data: bytes) -> errors.RemoveBgError:
    """An image format's file that would not decode is unreadable; anything else is the wrong type of file."""
    if data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return errors.failed_to_read_image()
    return errors.invalid_file_type(sniffed_type(data))


def sniffed_type(data: bytes) -> str:
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("latin-1").strip().lower()
        return "heic" if brand.startswith(("hei", "mif")) else "mp4"
    if data.lstrip()[:1] == b"<":
        return "svg" if b"<svg" in data[:1024].lower() else "html/xml"
    return "an unknown file type"


def wants_json(accept: str | None) -> bool:
    """Whether ``Accept`` prefers application/json to an image (its q values; a tie goes to the earlier)."""
    best_json, best_image = -1.0, -1.0
    for position, item in enumerate((accept or "").split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.lower().startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        rank = quality - position * 1e-6
        media = media.lower()
        if media == "application/json":
            best_json = max(best_json, rank)
        elif media.startswith("image/") or media == "*/*":
            best_image = max(best_image, rank)
    return best_json > 0 and best_json > best_image



router = APIRouter()
router.add_api_route(REMOVEBG_PATH, removebg, methods=["POST"])
router.add_api_route(ACCOUNT_PATH, account, methods=["GET"])
