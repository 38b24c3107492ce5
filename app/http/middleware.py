"""Headers every response carries, and the path forms Azure clients send."""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import API_SUPPORTED_VERSIONS

_SLASHES = re.compile(r"/{2,}")


class AzureHeadersMiddleware:
    """apim-request-id / request-id (one GUID per request), api-supported-versions, nosniff.

    Also folds repeated slashes: clients build ``f"{endpoint}/computervision/…"``
    from endpoints that already end in ``/``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "//" in scope["path"]:
            scope = dict(scope, path=_SLASHES.sub("/", scope["path"]))
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["apim-request-id"] = request_id
                headers["request-id"] = request_id
                headers["api-supported-versions"] = API_SUPPORTED_VERSIONS
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)
