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
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from app import errors as pipeline
from app.http.auth import KeyChecker
from app.http.body import MAX_IMAGE_BYTES, MULTIPART_OVERHEAD, read_capped
from app.http.sources import download_image
from app.http.streaming import ImageResponse, until_disconnected
from app.imaging.output import Rgba, fill_colour, parse_colour
from app.imaging.png import iter_rgba_png
from app.service import Cutout, Encoded, Encoder, ImageStream, SegmentService

PATH = "/api/remove"
KEY_HEADER = "x-api-key"
KEY_QUERY = "api_key"  # for clients that can only build a URL (rembg's GET has no other place for a key)
Source = Literal["query", "body"]


class RembgError(Exception):
    """An answer in FastAPI's error shape: ``{"detail": …}``; ``reason`` is a short label for metrics."""

    def __init__(self, status: int, detail: Any, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return JSONResponse({"detail": self.detail}, self.status, headers=self.headers)


def invalid(problems: list[dict[str, Any]]) -> RembgError:
    """FastAPI's RequestValidationError answer."""
    return RembgError(422, problems, "invalid_parameter")


def _problem(kind: str, source: Source, name: str, message: str, value: Any, context: dict[str, Any] | None = None) -> dict[str, Any]:
    problem: dict[str, Any] = {"type": kind, "loc": [source, name], "msg": message, "input": value}
    if context is not None:
        problem["ctx"] = context
    return problem


def _missing(source: Source, name: str) -> dict[str, Any]:
    return _problem("missing", source, name, "Field required", None)


def http_error(status: int) -> RembgError:
    """Routing's answers (an unknown method), as Starlette words them."""
    phrase = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    headers = {"Allow": "GET, POST"} if status == 405 else None
    return RembgError(status, phrase, "not_found" if status == 404 else "method_not_allowed", headers)


def internal_error() -> Response:
    """What rembg's server (Starlette) answers for a bug: a bare 500."""
    return PlainTextResponse("Internal Server Error", 500)


def from_pipeline(error: pipeline.PipelineError, source: Source) -> RembgError:
    """The pipeline's refusal in FastAPI's words, with the status an HTTPException for it would carry."""
    match error:
        case pipeline.UnknownModel(available=available):
            return invalid([_unknown_model(source, None, available)])
        case pipeline.ImageTooLarge(limit=limit):
            return RembgError(413, f"The image must be 1 to {limit} bytes.", error.reason)
        case pipeline.NotAnImage():
            return RembgError(400, "The file is not an image this service can decode.", error.reason)
        case pipeline.ImageDimensions(minimum=minimum, maximum=maximum):
            return RembgError(400, f"Each side of the image must be {minimum} to {maximum} pixels.", error.reason)
        case pipeline.ImageUrlUnreachable():
            return RembgError(400, "The image URL is not accessible.", error.reason)
        case pipeline.QueueFull(retry_after_s=retry_after_s):
            return RembgError(429, "Too many requests: the queue is full.", error.reason, {"Retry-After": str(retry_after_s)})
        case pipeline.ShuttingDown():
            return RembgError(503, "The service is shutting down.", error.reason)
        case pipeline.SceneUnavailable():  # rembg's API never asks for a scene; kept total
            return RembgError(400, str(error), error.reason)
    return RembgError(500, "The image could not be processed.", "internal")


def _unknown_model(source: Source, value: str | None, available: tuple[str, ...]) -> dict[str, Any]:
    names = [f"'{name}'" for name in available]
    expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return _problem(
        "literal_error", source, "model", f"Input should be {expected} (the networks this server has loaded)", value, {"expected": expected}
    )


class _Fields(BaseModel):
    """rembg's common parameters with its defaults and bounds; pydantic's checks give FastAPI's own messages."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # rembg's default is u2net; here it is the server's default network
    a: bool | None = None  # absent: the server's BGR_DECONTAMINATE
    af: int = Field(240, ge=0, le=255)
    ab: int = Field(10, ge=0, le=255)
    ae: int = Field(10, ge=0)
    om: bool = False
    ppm: bool = False
    bgc: str | None = None
    extras: str | None = None


@dataclass(frozen=True)
class Options:
    model: str | None
    alpha_matting: bool | None
    only_mask: bool
    background: Rgba | None


def parse_background(text: str) -> Rgba:
    """rembg's ``r,g,b,a`` (0-255 each; ``r,g,b`` taken as opaque), or, beyond rembg, hex or a colour name."""
    if "," in text:
        parts = text.split(",")
        try:
            values = [int(part.strip()) for part in parts]
        except ValueError:
            values = []
        if len(values) not in (3, 4) or not all(0 <= value <= 255 for value in values):
            raise ValueError("bgc must be r,g,b,a with each 0-255 (or r,g,b, a hex colour or a colour name)")
        return (values[0], values[1], values[2], values[3] if len(values) == 4 else 255)
    try:
        return parse_colour(text)
    except ValueError:
        raise ValueError("bgc must be r,g,b,a with each 0-255 (or r,g,b, a hex colour or a colour name)") from None


def parse_options(values: Mapping[str, tuple[str, Source]], models: tuple[str, ...]) -> tuple[Options, list[dict[str, Any]]]:
    """The options from each parameter's (text, where it came from); the problems found, as FastAPI lists them."""
    problems: list[dict[str, Any]] = []
    texts = {name: text for name, (text, _) in values.items()}
    try:
        fields = _Fields.model_validate(texts)
    except ValidationError as error:
        for problem in error.errors(include_url=False):
            name = str(problem["loc"][0])
            problems.append({**problem, "loc": [values[name][1], name]})
            texts.pop(name, None)
        fields = _Fields.model_validate(texts)  # the rest, so that their problems are listed too, as FastAPI lists them
    background = None
    if fields.bgc:  # rembg ignores an empty bgc
        try:
            background = parse_background(fields.bgc)
        except ValueError as error:
            problems.append(_problem("value_error", values["bgc"][1], "bgc", f"Value error, {error}", fields.bgc, {"error": str(error)}))
    if fields.model is not None and fields.model not in models:
        problems.append(_unknown_model(values["model"][1], fields.model, models))
    return Options(fields.model, fields.a, fields.om, background), problems


def check_key(request: Request) -> None:
    """The service's keys, as ``X-Api-Key`` or (without the header) ``?api_key=``; rembg's own server has none."""
    key_checker: KeyChecker = request.state.key_checker
    if not key_checker.enforced:
        return
    presented = request.headers.get(KEY_HEADER)
    if presented is None:
        presented = request.query_params.get(KEY_QUERY)
    if presented is None:
        raise RembgError(401, "Not authenticated", "missing_key", {"WWW-Authenticate": "APIKey"})
    if not key_checker.accepts(presented):
        raise RembgError(401, "Invalid API key", "invalid_key", {"WWW-Authenticate": "APIKey"})


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

    async def produce() -> ImageStream:
        if only_mask:
            return await service.segment(data, "foregroundMatting", model=options.model)
        return await service.segment(data, "backgroundRemoval", decontaminate=options.alpha_matting, model=options.model, encode=encode)

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
        problems.insert(0, _missing("query", "url"))
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
            problems.insert(0, _missing("body", "file"))
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

    async def replay() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=8, max_fields=32)
    except Exception:
        raise RembgError(400, "There was an error parsing the body", "form_body") from None
