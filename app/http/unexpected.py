"""A bug's answer in the caller's API, with the same headers as every other answer.

Starlette answers an unhandled exception from its outermost layer, outside every middleware, so
the response would lack the request id, the CORS headers and the drain. Caught here, innermost,
the 500 travels back out through all of them like any other answer.
"""

from __future__ import annotations

import logging
from typing import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app")


class UnexpectedErrorMiddleware:
    """``answer(path)`` is the internal-error response of the API that ``path`` belongs to."""

    def __init__(self, app: ASGIApp, answer: Callable[[str], Response]) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error", extra={"request_id": scope.get("state", {}).get("request_id")})
            if started:
                raise  # half an answer is out: only closing the connection tells the client
            await self.answer(scope["path"])(scope, receive, send)
