"""Sending a result: stream it, close it however the sending ends, and drop work whose client has gone."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.service import ImageStream

T = TypeVar("T")
TARGET_HEADER = "x-segment-target"
MEASURES_HEADER = "x-segment-measures"
REFINED_HEADER = "x-segment-refined"


class ImageResponse(StreamingResponse):
    """Streams an :class:`ImageStream` and closes it however the sending ends (done, error, client gone)."""

    def __init__(self, stream: ImageStream, headers: dict[str, str] | None = None) -> None:
        # What the image was taken for, whether the matting stage ran, and (when decided per image) the measures behind
        # the decision.
        all_headers = {TARGET_HEADER: stream.target, REFINED_HEADER: "true" if stream.refined else "false", **stream.headers, **(headers or {})}
        if stream.measures is not None:
            all_headers[MEASURES_HEADER] = stream.measures.header()
        super().__init__(stream.chunks, media_type=stream.media_type, headers=all_headers)
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
