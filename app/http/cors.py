"""Cross-origin calls from browsers (CORS), which Azure's cloud endpoint allowed from any origin.

A page on another origin that sends ``Ocp-Apim-Subscription-Key`` makes the browser send a
preflight first (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``). Browsers
never put credentials on a preflight, so it is answered here, before routing and before any
key check. Every other response to a request with an allowed ``Origin`` (errors included) gets
``Access-Control-Allow-Origin`` and the list of headers a page may read.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import CorsPolicy  # parsed with the settings, so a bad BGR_CORS_ORIGINS fails at start

# Azure's request headers, named even when a preflight does not ask for them.
ALLOWED_HEADERS = ("Ocp-Apim-Subscription-Key", "Ocp-Apim-Subscription-Region", "Content-Type", "Accept")
# What a page may read beyond the CORS-safelisted headers: Azure's and this service's own.
EXPOSED_HEADERS = (
    "apim-request-id",
    "request-id",
    "api-supported-versions",
    "x-ms-error-code",
    "x-segment-target",
    "x-segment-measures",
    "x-segment-refined",
    "Retry-After",
    "WWW-Authenticate",
    "Content-Length",
)
ALLOWED_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE_S = 7200  # Chromium caps the preflight cache at two hours
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class CorsMiddleware:
    """Answers preflights and adds the CORS headers to every response (the access log still sees both)."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.enabled:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allowed = self.policy.allow_origin(headers.get("origin"))
        if scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            await self._preflight(allowed, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add_response_headers(MutableHeaders(scope=message), allowed)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, allowed: str | None, headers: Headers, send: Send) -> None:
        # An origin that is not allowed gets an empty 200 without CORS headers, as APIM's cors
        # policy answers it: the browser then refuses the call itself.
        response = MutableHeaders(raw=[(b"content-length", b"0")])
        if allowed is not None:
            self._add_response_headers(response, allowed)
            response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response["Access-Control-Allow-Headers"] = ", ".join(_allowed_headers(headers.get("access-control-request-headers")))
            response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        elif self.policy.origins:
            response.add_vary_header("Origin")
        await send({"type": "http.response.start", "status": 200, "headers": response.raw})
        await send({"type": "http.response.body", "body": b""})

    def _add_response_headers(self, headers: MutableHeaders, allowed: str | None) -> None:
        if self.policy.origins:
            headers.add_vary_header("Origin")  # the answer depends on the origin: caches must keep them apart
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)


def _allowed_headers(requested: str | None) -> list[str]:
    """Azure's headers and whatever else the page asks for: unknown headers are ignored, so allowing them costs nothing.

    Azure's browser SDKs add their own (``x-ms-client-request-id``, ``x-ms-useragent``). Only
    well-formed names are echoed, so no client input reaches the response unchecked.
    """
    names = list(ALLOWED_HEADERS)
    known = {name.lower() for name in names}
    for name in (requested or "").split(","):
        name = name.strip()
        if name and _TOKEN.match(name) and name.lower() not in known:
            known.add(name.lower())
            names.append(name)
    return names
