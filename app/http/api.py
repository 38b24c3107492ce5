"""What an imitated API gives the app to be mounted, and the /openapi.json assembled from the mounted ones.

Each API is one package under ``app/http/`` whose ``__init__`` exposes an :class:`Api`; ``app/main.py`` mounts a
tuple of them. The first in that tuple is the gateway: a path no API owns is answered in its words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from fastapi import APIRouter
from starlette.responses import Response


class ApiError(Protocol):
    """What an API's error exception carries: a short label for metrics, and its answer in the API's own envelope."""

    reason: str

    def response(self) -> Response: ...


@dataclass(frozen=True)
class Api:
    """One imitated API: its routes, the words it refuses in, and its part of the OpenAPI document.

    ``error`` is the exception its handlers raise, an :class:`ApiError`.
    """

    name: str  # its label in metrics and in the access log
    router: APIRouter
    error: type[Exception]
    internal_error: Callable[[], Response]  # a bug's 500
    routing_error: Callable[[int], Exception]  # routing's 404 (no such path) or 405 (no such method), as an ``error``
    operation_paths: tuple[str, ...]  # its image operations: counted in the request metrics by API, mode and status
    openapi: Callable[[], dict[str, Any]]  # its part of the document: paths and components (the gateway's: the head too)
    path_prefix: str | None = None  # every path under it is this API's (remove.bg's /v1.0/)
    mode_query: str | None = None  # the query parameter that names the mode (Azure's); None: its handlers set state.mode
    answer_headers: Callable[[str], Mapping[str, str]] | None = None  # on every answer it gives, from the request id


class MountedApis:
    """The mounted APIs, and which one a path belongs to."""

    def __init__(self, apis: Sequence[Api]) -> None:
        if not apis:
            raise ValueError("at least one API must be mounted")
        self.apis = tuple(apis)
        self.gateway = self.apis[0]
        self._by_operation = {path: api for api in self.apis for path in api.operation_paths}

    def owner(self, path: str) -> Api | None:
        """The API whose image operation ``path`` is; None for every other path."""
        return self._by_operation.get(path)

    def answering(self, path: str) -> Api:
        """The API whose words answer ``path``: the one whose prefix it falls under, its operation's, or the gateway."""
        for api in self.apis:
            if api.path_prefix is not None and path.startswith(api.path_prefix):
                return api
        return self._by_operation.get(path, self.gateway)


def openapi_document(apis: Sequence[Api]) -> dict[str, Any]:
    """The OpenAPI document: each API's paths and components in turn, under the gateway's head (info, servers, security).

    The other APIs give their operations a path-level server of their own: the default server is the gateway's.
    """
    document: dict[str, Any] = {}
    for api in apis:
        for key, value in api.openapi().items():
            if key == "paths":
                document.setdefault(key, {}).update(value)
            elif key == "components":
                for kind, entries in value.items():
                    document.setdefault(key, {}).setdefault(kind, {}).update(entries)
            else:
                document.setdefault(key, value)
    return document
