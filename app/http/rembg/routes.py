"""rembg's server API (``rembg s``): ``GET /api/remove?url=…`` and ``POST /api/remove`` with a multipart ``file``.

Parameters, defaults and ranges are those of rembg's FastAPI app (rembg/commands/s_command.py); its validation
errors are FastAPI's 422 ``{"detail": [{"type", "loc", "msg", "input"}]}``, produced here by the same pydantic
checks. Where rembg's server answers a bare 500 (an undecodable image, an unreachable URL, a malformed ``bgc``),
this one answers FastAPI's ``{"detail": "…"}`` with a 4xx that says what was wrong.

What each parameter does here (README, "rembg's API"): ``model`` names a loaded network; ``om`` returns the matte;
``bgc`` composites over a colour; ``a`` (alpha matting) estimates the foreground's colours in the soft edges, as
rembg's alpha matting also does, from the model's own matte (``af``, ``ab``, ``ae`` are checked and not used);
``ppm`` and ``extras`` are checked and not used.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from app import errors as pipeline
from app.http.auth import KeyChecker, presented_key
from app.http.body import MAX_IMAGE_BYTES, MULTIPART_OVERHEAD, read_capped, replayed
from app.http.rembg.errors import RembgError, Source, from_pipeline, invalid, missing
from app.http.rembg.options import Options, parse_options
from app.http.sources import download_image
from app.http.streaming import ImageResponse, until_disconnected
from app.imaging.output import Rgba, fill_colour
from app.imaging.png import iter_rgba_png
from app.service import Cutout, Encoded, Encoder, ImageStream, SegmentService

PATH = "/api/remove"
KEY_HEADER = "x-api-key"
KEY_QUERY = "api_key"  # for clients that can only build a URL (rembg's GET has no other place for a key)


def check_key(request: Request) -> None:
    """The service's keys, as ``X-Api-Key`` or (without the header) ``?api_key=``; rembg's own server has none."""
    key_checker: KeyChecker = request.state.key_checker
    key_checker.check(
        presented_key(request, KEY_HEADER, KEY_QUERY),
        missing=lambda: RembgError(401, "Not authenticated", "missing_key", {"WWW-Authenticate": "APIKey"}),
        invalid=lambda: RembgError(401, "Invalid API key", "invalid_key", {"WWW-Authenticate": "APIKey"}),
    )


def _over_colour(colour: Rgba, level: int) -> Encoder:
    def encode(cutout: Cutout) -> Encoded:
        rgb, alpha = fill_colour(cutout.rgb, cutout.alpha, colour)
        return Encoded(iter_rgba_png(rgb, alpha, level))

    return encode


async def _remove(request: Request, data: bytes, options: Options, source: Source) -> Response:
    service: SegmentService = request.state.segment_service
    only_mask = options.only_mask
    request.state.mode = "foregroundMatting" if only_mask else "backgroundRemoval"
    # rembg applies bgc to cut-outs only: a mask comes back as it is.
    encode = _over_colour(options.background, service.png_compression) if options.background and not only_mask else None

    # rembg's alpha matting re-solves the matte and estimates the foreground's colours: a=true is the matting stage with
    # those colours, a=false neither, and no a the server's defaults.
    refine = None if options.alpha_matting is None else ("on" if options.alpha_matting else "off")

    async def produce() -> ImageStream:
        if only_mask:
            return await service.segment(data, "foregroundMatting", model=options.model, refine=refine)
        return await service.segment(
            data, "backgroundRemoval", decontaminate=options.alpha_matting, model=options.model, encode=encode, refine=refine
        )

    try:
        return ImageResponse(await until_disconnected(request, produce()))
    except pipeline.PipelineError as error:
        raise from_pipeline(error, source) from None


async def remove_from_url(request: Request) -> Response:
    """``GET /api/remove?url=…``: the image at ``url``, fetched by the SSRF-safe fetcher."""
    check_key(request)
    query = request.query_params
    service: SegmentService = request.state.segment_service
    options, problems = parse_options({name: (value, "query") for name, value in query.items()}, service.models)
    url = query.get("url")
    if url is None:
        problems.insert(0, missing("query", "url"))
    if problems:
        raise invalid(problems)
    assert url is not None
    try:
        data = await download_image(request.state.http_client, url, request.state.url_policy)
    except pipeline.PipelineError as error:
        raise from_pipeline(error, "query") from None
    return await _remove(request, data, options, "query")


async def remove_from_file(request: Request) -> Response:
    """``POST /api/remove`` with the image as the multipart part ``file``."""
    check_key(request)
    service: SegmentService = request.state.segment_service
    form = await _read_form(request, request.state.body_timeout_s)
    try:
        # rembg reads its options from the form, except bgc and extras (query); its older servers read every option
        # from the query, so the query is looked at for whatever the form leaves out.
        values: dict[str, tuple[str, Source]] = {name: (value, "query") for name, value in request.query_params.items()}
        values.update({name: (value, "body") for name, value in form.items() if isinstance(value, str) and name != "file"})
        options, problems = parse_options(values, service.models)
        file = form.get("file")
        if file is None:
            problems.insert(0, missing("body", "file"))
        if problems:
            raise invalid(problems)
        data = await file.read(MAX_IMAGE_BYTES + 1) if isinstance(file, UploadFile) else str(file).encode("utf-8", "replace")
    finally:
        await form.close()
    if not data:
        raise RembgError(400, "The file is empty.", "image_size")
    if len(data) > MAX_IMAGE_BYTES:
        raise from_pipeline(pipeline.ImageTooLarge(MAX_IMAGE_BYTES), "body")
    return await _remove(request, data, options, "body")


async def _read_form(request: Request, timeout_s: float) -> FormData:
    """The request's form, read within the size limit and the body deadline; empty for a body that is no form."""
    too_large = RembgError(413, f"The request body must be at most {MAX_IMAGE_BYTES + MULTIPART_OVERHEAD} bytes.", "image_size")
    try:
        async with asyncio.timeout(timeout_s):
            body = await read_capped(request, MAX_IMAGE_BYTES + MULTIPART_OVERHEAD, too_large)
    except TimeoutError:
        raise RembgError(408, "The request body was not received in time.", "body_timeout") from None
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return FormData()  # FastAPI finds no file in it either: the 422 says so
    try:
        return await replayed(request, body).form(max_files=8, max_fields=32)
    except Exception:
        raise RembgError(400, "There was an error parsing the body", "form_body") from None


router = APIRouter()
router.add_api_route(PATH, remove_from_url, methods=["GET"])
router.add_api_route(PATH, remove_from_file, methods=["POST"])
