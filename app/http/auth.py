"""Subscription keys, as Azure API Management checks them."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from app.http.azure import errors

HEADER = "ocp-apim-subscription-key"
QUERY = "subscription-key"


class KeyChecker:
    """Accepts any of ``keys`` (several at once, for rotation); with none configured, everything passes."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enforced(self) -> bool:
        return bool(self._keys)

    def check(self, request: Request) -> None:
        if not self._keys:
            return
        # APIM reads the query parameter only when the header is absent.
        presented = request.headers.get(HEADER)
        if presented is None:
            presented = request.query_params.get(QUERY)
        realm = f"{request.url.scheme}://{request.url.netloc}/computervision"
        if presented is None:
            raise errors.missing_key(realm)
        if not self.accepts(presented):
            raise errors.invalid_key(realm)

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys (for APIs that answer a refusal in their own words)."""
        candidate = presented.encode("utf-8", "surrogateescape")
        # Compare against every key, in constant time each, so timing reveals neither key nor position.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
