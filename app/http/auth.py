"""The service's API keys (BGR_API_KEYS), checked in constant time; each API reads a key from its own header."""

from __future__ import annotations

import hmac
from typing import Callable

from starlette.requests import Request


def presented_key(request: Request, header: str, query: str | None = None) -> str | None:
    """The key a request presents in ``header`` or, without that header, in the ``query`` parameter."""
    presented = request.headers.get(header)
    if presented is None and query is not None:
        presented = request.query_params.get(query)
    return presented


class KeyChecker:
    """Accepts any of ``keys`` (several at once, for rotation); with none configured, everything passes."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enforced(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | None, missing: Callable[[], Exception], invalid: Callable[[], Exception]) -> None:
        """Raises ``missing()`` (no key) or ``invalid()`` (not one of the keys), each API's own refusal; with no keys
        configured, nothing."""
        if not self.enforced:
            return
        if presented is None:
            raise missing()
        if not self.accepts(presented):
            raise invalid()

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys."""
        candidate = presented.encode("utf-8", "surrogateescape")
        # Compare against every key, in constant time each, so timing reveals neither key nor position.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
