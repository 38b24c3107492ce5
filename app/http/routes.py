"""The segment endpoint: query and auth checks, reading the image, streaming the PNG."""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.http import errors
from app.http.auth import KeyChecker
from app.http.body import MAX_IMAGE_BYTES, MAX_JSON_BYTES, MULTIPART_OVERHEAD, body_kind, multipart_image, parse_url_body, read_capped
from app.http.url_fetch import BodyTooLarge, UrlNotAccessible, UrlPolicy, fetch_url
from app.service import MODES, SegmentService

log = logging.getLogger(__name__)

SEGMENT_PATHS = ("/computervision/imageanalysis:segment", "/imageanalysis:segment")
SUPPORTED_API_VERSIONS = frozenset({"2023-02-01-preview", "2023-04-01-preview"})


async def read_image(request: Request, http_client: httpx.AsyncClient, url_policy: UrlPolicy) -> bytes:
    too_large = errors.invalid_image_size(MAX_IMAGE_BYTES)
    kind = body_kind(request.headers.get("content-type"))
    if kind == "raw":
        data = await read_capped(request, MAX_IMAGE_BYTES, too_large)
    elif kind == "multipart":
        data = await multipart_image(request, await read_capped(request, MAX_IMAGE_BYTES + MULTIPART_OVERHEAD, too_large))
    else:
        url = parse_url_body(await read_capped(request, MAX_JSON_BYTES, errors.invalid_json_body()))
        try:
            # An overall deadline too, so a server that drips bytes cannot hold the request open.
            async with asyncio.timeout(url_policy.timeout_s * 3):
                data = await fetch_url(http_client, url, url_policy)
        except BodyTooLarge:
            raise too_large from None
        except (UrlNotAccessible, TimeoutError) as reason:
            log.info("image url refused: %s", reason)
            raise errors.url_not_accessible() from None
    if not data:
        raise too_large
    return data


async def segment(request: Request) -> Response:
    query = request.query_params
    if query.get("api-version") not in SUPPORTED_API_VERSIONS:
        raise errors.resource_not_found()
    key_checker: KeyChecker = request.state.key_checker
    key_checker.check(request)
    mode = query.get("mode")
    if mode not in MODES:
        raise errors.invalid_mode()
    data = await read_image(request, request.state.http_client, request.state.url_policy)
    service: SegmentService = request.state.segment_service
    chunks = await service.segment(data, mode)
    return StreamingResponse(chunks, media_type="image/png")


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    if not request.state.ready.is_set():
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready"})
