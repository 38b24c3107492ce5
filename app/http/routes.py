"""The segment endpoint: query and auth checks, reading the image, streaming the PNG."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.http import errors
from app.http.auth import KeyChecker
from app.http.body import MAX_IMAGE_BYTES, MAX_JSON_BYTES, MULTIPART_OVERHEAD, body_kind, multipart_image, parse_url_body, read_capped
from app.http.url_fetch import BodyTooLarge, UrlNotAccessible, UrlPolicy, fetch_url
from app.inference.batcher import Batcher
from app.service import MODES, TARGET_CHOICES, PngStream, SegmentService

log = logging.getLogger(__name__)
T = TypeVar("T")

SEGMENT_PATHS = ("/computervision/imageanalysis:segment", "/imageanalysis:segment")
SUPPORTED_API_VERSIONS = frozenset({"2023-02-01-preview", "2023-04-01-preview"})
TARGET_HEADER = "x-segment-target"
MEASURES_HEADER = "x-segment-measures"


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
        data = await _download(http_client, parse_url_body(body), url_policy)
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


async def _download(http_client: httpx.AsyncClient, url: str, url_policy: UrlPolicy) -> bytes:
    try:
        # An overall deadline too, so a server that drips bytes cannot hold the request open.
        async with asyncio.timeout(url_policy.timeout_s * 3):
            return await fetch_url(http_client, url, url_policy)
    except BodyTooLarge:
        raise errors.invalid_image_size(MAX_IMAGE_BYTES) from None
    except (UrlNotAccessible, TimeoutError) as reason:
        log.info("image url refused: %s", reason)
        raise errors.url_not_accessible() from None
    except Exception as reason:  # odd names (IDNA), odd headers: whatever breaks, the URL is not accessible
        log.info("image url failed: %s: %s", type(reason).__name__, reason)
        raise errors.url_not_accessible() from None


def _boolean(value: str | None, invalid: Callable[[], errors.AzureError]) -> bool | None:
    """A query flag: true or false in any case; None when absent."""
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise invalid()
    return value.lower() == "true"


async def segment(request: Request) -> Response:
    query = request.query_params
    if query.get("api-version") not in SUPPORTED_API_VERSIONS:
        raise errors.resource_not_found()
    key_checker: KeyChecker = request.state.key_checker
    key_checker.check(request)
    mode = query.get("mode")
    if mode not in MODES:
        raise errors.invalid_mode()
    target = query.get("target")
    if target is not None and target not in TARGET_CHOICES:
        raise errors.invalid_target()
    decontaminate = _boolean(query.get("decontaminate"), errors.invalid_decontaminate)
    service: SegmentService = request.state.segment_service
    model = query.get("model")
    service.lane(model)  # an unknown network is refused before the body is read
    kind, body = await read_body(request, request.state.body_timeout_s)

    async def produce() -> PngStream:
        data = await image_bytes(request, kind, body, request.state.http_client, request.state.url_policy)
        return await service.segment(data, mode, target, decontaminate, model)  # type: ignore[arg-type]  # checked above

    return PngResponse(await until_disconnected(request, produce()))


class PngResponse(StreamingResponse):
    """Streams a :class:`PngStream` and closes it however the sending ends (done, error, client gone)."""

    def __init__(self, stream: PngStream) -> None:
        # What the image was taken for, and (when decided per image) the measures behind the decision.
        headers = {TARGET_HEADER: stream.target}
        if stream.measures is not None:
            headers[MEASURES_HEADER] = stream.measures.header()
        super().__init__(stream.chunks, media_type="image/png", headers=headers)
        self._stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, but cancel it when the client disconnects first (so no abandoned job keeps its place)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # the handler itself is being cancelled (shutdown): take the work with it
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientGone
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client disconnected before its response was ready; nothing is sent."""


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    if not request.state.ready.is_set():
        return JSONResponse({"status": "not ready"}, status_code=503)
    batchers: dict[str, Batcher] = request.state.batchers
    service: SegmentService = request.state.segment_service
    models = {name: _batcher_stats(batcher) for name, batcher in batchers.items()}
    totals = {key: sum(stats[key] for stats in models.values()) for key in ("queue_depth", "batches", "images", "failed_batches", "abandoned")}
    # The totals keep their place at the top; "models" lists what was loaded, for clients and the web page's picker.
    return JSONResponse(
        {
            "status": "ready",
            **totals,
            "pixels_in_flight": request.state.pixel_budget.in_use,
            "default_model": service.default_model,
            "models": models,
        }
    )


def _batcher_stats(batcher: Batcher) -> dict[str, int]:
    stats = batcher.stats
    return {
        "queue_depth": batcher.depth,
        "batches": stats.batches,
        "images": stats.images,
        "failed_batches": stats.failures,
        "abandoned": stats.abandoned,
    }
