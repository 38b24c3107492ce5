"""Answers refused before their body was read, in a form every client reads.

A request refused early (wrong key, bad query, a declared body over the limit) is answered
before its body has arrived. Clients that send the whole body before they read (Python's
``http.client`` and ``urllib``, many other languages' clients, proxies) are still sending when
the server closes, and the unread bytes make the kernel reset the connection: the client gets
``ConnectionResetError`` instead of the answer. So the rest of the body is read and thrown away
first, as nginx's lingering close does, within bounds: at most ``max_bytes``, and only until
the request's body deadline (``BGR_BODY_TIMEOUT_S`` from its start). A client past either
bound gets the answer with ``Connection: close`` and is cut off.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class EarlyAnswerMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, deadline_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(headers := Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        state = {"called": False, "done": False}

        async def tracking_receive() -> Message:
            state["called"] = True
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["done"] = True
            return message

        async def send_after_drain(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["done"]:
                # Asked to wait for a 100 Continue it never got, the client has not sent its body:
                # reading now would ask for it, only to throw it away.
                waiting_for_continue = headers.get("expect", "").lower() == "100-continue" and not state["called"]
                if waiting_for_continue or self.max_bytes == 0 or not await self._drain(tracking_receive, deadline, scope):
                    MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, tracking_receive, send_after_drain)

    async def _drain(self, receive: Receive, deadline: float, scope: Scope) -> bool:
        """Read and discard the rest of the body; False when a bound cut it short."""
        drained = 0
        request_id = scope.get("state", {}).get("request_id")
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return True  # the client is gone; nothing left to answer
                    drained += len(message.get("body", b""))
                    if drained > self.max_bytes:
                        log.info("refused body cut off", extra={"request_id": request_id, "drained_bytes": drained})
                        return False
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            log.info("refused body cut off at its deadline", extra={"request_id": request_id, "drained_bytes": drained})
            return False


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")
