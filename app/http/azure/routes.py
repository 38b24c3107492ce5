"""Azure's segment endpoint: its query and auth checks, its body forms, its errors; the PNG streamed back."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Callable

import httpx
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from app.errors import PipelineError
from app.http.auth import KeyChecker, presented_key
from app.http.azure import errors
from app.http.azure.body import MAX_JSON_BYTES, body_kind, multipart_image, parse_url_body
from app.http.body import MAX_IMAGE_BYTES, MULTIPART_OVERHEAD, read_capped
from app.http.sources import download_image
from app.http.streaming import ImageResponse, until_disconnected
from app.http.url_fetch import UrlPolicy
from app.service import MODES, TARGET_CHOICES, ImageStream, RefineChoice, SegmentService

SEGMENT_PATHS = ("/computervision/imageanalysis:segment", "/imageanalysis:segment")
SUPPORTED_API_VERSIONS = frozenset({"2023-02-01-preview", "2023-04-01-preview"})
KEY_HEADER = "ocp-apim-subscription-key"
KEY_QUERY = "subscription-key"


def check_key(request: Request) -> None:
    """The service's keys, as Azure API Management checks subscription keys: the header, else the query; its 401s."""
    realm = f"{request.url.scheme}://{request.url.netloc}/computervision"
    key_checker: KeyChecker = request.state.key_checker
    key_checker.check(
        presented_key(request, KEY_HEADER, KEY_QUERY),
        missing=partial(errors.missing_key, realm),
        invalid=partial(errors.invalid_key, realm),
    )


async def read_body(request: Request, timeout_s: float) -> tuple[str, bytes]:
    """The body form (raw, json, multipart) and its bytes, within Azure's size limits."""
    try:
        # A client that trickles its body must not hold a connection (and a buffer) open for ever.
        async with asyncio.timeout(timeout_s):
            return await _read_body(request)
    except TimeoutError:
        raise errors.body_timeout() from None


async def image_bytes(request: Request, kind: str, body: bytes, http_client: httpx.AsyncClient, url_policy: UrlPolicy) -> bytes:
    if kind == "json":
        data = await download_image(http_client, parse_url_body(body), url_policy)
    elif kind == "multipart":
        data = await multipart_image(request, body)
    else:
        data = body
    if not data:
        raise errors.invalid_image_size(MAX_IMAGE_BYTES)
    return data


async def _read_body(request: Request) -> tuple[str, bytes]:
    too_large = errors.invalid_image_size(MAX_IMAGE_BYTES)
    kind = body_kind(request.headers.get("content-type"))
    if kind == "raw":
        return kind, await read_capped(request, MAX_IMAGE_BYTES, too_large)
    if kind == "multipart":
        return kind, await read_capped(request, MAX_IMAGE_BYTES + MULTIPART_OVERHEAD, too_large)
    return kind, await read_capped(request, MAX_JSON_BYTES, errors.invalid_json_body())


def _boolean(value: str | None, invalid: Callable[[], errors.AzureError]) -> bool | None:
    """A query flag: true or false in any case; None when absent."""
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise invalid()
    return value.lower() == "true"


def _refine(value: str | None) -> RefineChoice | None:
    """``refine``: true, false or auto, any case (absent: the server's BGR_REFINE)."""
    if value is None:
        return None
    choice = {"true": "on", "false": "off", "auto": "auto"}.get(value.lower())
    if choice is None:
        raise errors.invalid_refine()
    return choice  # type: ignore[return-value]


async def segment(request: Request) -> Response:
    try:
        return await _segment(request)
    except PipelineError as error:
        raise errors.from_pipeline(error) from None


async def _segment(request: Request) -> Response:
    query = request.query_params
    if query.get("api-version") not in SUPPORTED_API_VERSIONS:
        raise errors.resource_not_found()
    check_key(request)
    mode = query.get("mode")
    if mode not in MODES:
        raise errors.invalid_mode()
    target = query.get("target")
    if target is not None and target not in TARGET_CHOICES:
        raise errors.invalid_target()
    decontaminate = _boolean(query.get("decontaminate"), errors.invalid_decontaminate)
    refine = _refine(query.get("refine"))
    service: SegmentService = request.state.segment_service
    model = query.get("model")
    service.lane(model)  # an unknown network is refused before the body is read
    kind, body = await read_body(request, request.state.body_timeout_s)

    async def produce() -> ImageStream:
        data = await image_bytes(request, kind, body, request.state.http_client, request.state.url_policy)
        return await service.segment(data, mode, target, decontaminate, model, refine=refine)  # type: ignore[arg-type]  # checked above

    return ImageResponse(await until_disconnected(request, produce()))


router = APIRouter()
for _path in SEGMENT_PATHS:
    router.add_api_route(_path, segment, methods=["POST"])
