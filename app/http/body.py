"""A request body read whole, within a limit, and parsed as a form, for every API; the service's own image-size limit."""

from __future__ import annotations

from starlette.requests import Request

MAX_IMAGE_BYTES = 20_971_520  # Azure's limit, and the service's for every API without one of its own
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the one image


async def read_capped(request: Request, limit: int, too_large: Exception) -> bytes:
    """The whole body, raising ``too_large`` (each API's own error) as soon as it passes ``limit`` (never holding more)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        if len(body) + len(piece) > limit:
            raise too_large
        body += piece
    return bytes(body)


def replayed(request: Request, body: bytes) -> Request:
    """``request`` with ``body`` (already read, within its API's limit) as its body, for Starlette's form parser."""

    async def replay() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, replay)
