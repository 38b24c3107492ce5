"""The service's API keys (BGR_API_KEYS), checked in constant time; each API reads a key from its own header."""

from __future__ import annotations

import hmac


class KeyChecker:
    """Accepts any of ``keys`` (several at once, for rotation); with none configured, everything passes."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enforced(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys."""
        candidate = presented.encode("utf-8", "surrogateescape")
        # Compare against every key, in constant time each, so timing reveals neither key nor position.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
