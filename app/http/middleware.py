"""Headers every response carries, the path forms Azure clients send, and each API's request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.api import MountedApis
from app.metrics import Metrics

_SLASHES = re.compile(r"/{2,}")
access_log = logging.getLogger("app.access")


MODES = ("backgroundRemoval", "foregroundMatting")


class ApiHeadersMiddleware:
    """request-id (one GUID per request) and nosniff on every answer; each API's own headers on the answers of its
    paths (Azure's apim-request-id and api-supported-versions), the gateway's on every answer of a path no API owns
    (those are answered in the gateway's words).

    Requests to an API's operation paths are counted by API, mode and status. The mode is the API's mode query
    parameter (Azure's ``mode``), or what a handler put in the request's ``state.mode``. Also folds repeated slashes
    (clients build ``f"{endpoint}/computervision/…"`` from endpoints that already end in ``/``) and writes one
    access-log line per request. The query string is never logged: it may carry ``subscription-key``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, apis: MountedApis) -> None:
        self.app = app
        self.metrics = metrics
        self.apis = apis

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "//" in scope["path"]:
            scope = dict(scope, path=_SLASHES.sub("/", scope["path"]))
        request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        outcome = {"status": 0, "bytes": 0}
        owner = self.apis.owner(scope["path"])
        speaker = self.apis.answering(scope["path"])
        api = owner.name if owner is not None else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                if speaker.answer_headers is not None:
                    headers.update(speaker.answer_headers(request_id))
                headers["request-id"] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
            await send(message)

        # A browser's preflight carries the call's query string, but it is not a call.
        counted = api is not None and scope["method"] != "OPTIONS"
        mode = _query_value(scope, speaker.mode_query) if speaker.mode_query is not None else None
        if counted:
            self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            if speaker.mode_query is None:
                mode = state.get("mode")  # only the handler knows (rembg's om may come in the form)
            if counted:
                self.metrics.inflight.dec()
                label = mode if mode in MODES else "other"
                self.metrics.requests.labels(api, label, str(outcome["status"])).inc()
                self.metrics.request_seconds.labels(api, label).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "api": api,
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
