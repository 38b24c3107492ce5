"""Headers every response carries, and the path forms Azure clients send."""

from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import API_SUPPORTED_VERSIONS
from app.metrics import Metrics

_SLASHES = re.compile(r"/{2,}")
access_log = logging.getLogger("app.access")


class AzureHeadersMiddleware:
    """apim-request-id / request-id (one GUID per request), api-supported-versions, nosniff.

    Also folds repeated slashes (clients build ``f"{endpoint}/computervision/…"``
    from endpoints that already end in ``/``) and writes one access-log line per
    request. The query string is never logged: it may carry ``subscription-key``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, segment_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.segment_paths = segment_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "//" in scope["path"]:
            scope = dict(scope, path=_SLASHES.sub("/", scope["path"]))
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        outcome = {"status": 0, "bytes": 0}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers["apim-request-id"] = request_id
                headers["request-id"] = request_id
                headers["api-supported-versions"] = API_SUPPORTED_VERSIONS
                headers["X-Content-Type-Options"] = "nosniff"
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
            await send(message)

        # A browser's preflight carries the segment call's query string, but it is not a segment call.
        is_segment = scope["path"] in self.segment_paths and scope["method"] != "OPTIONS"
        mode = _query_value(scope, "mode")
        if is_segment:
            self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            if is_segment:
                self.metrics.inflight.dec()
                label = mode if mode in ("backgroundRemoval", "foregroundMatting") else "other"
                self.metrics.requests.labels(label, str(outcome["status"])).inc()
                self.metrics.request_seconds.labels(label).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "mode": mode,
                    "status": outcome["status"],
                    "response_bytes": outcome["bytes"],
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )


def _query_value(scope: Scope, name: str) -> str | None:
    """One query parameter, for the log; any bytes a client sends must decode without raising."""
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        if key == name:
            return value[:40]
    return None
