"""Image bytes from a URL, for every API: the SSRF-safe fetcher under one overall deadline."""

from __future__ import annotations

import asyncio
import logging

import httpx

from app.errors import ImageTooLarge, ImageUrlUnreachable
from app.http.url_fetch import BodyTooLarge, UrlNotAccessible, UrlPolicy, fetch_url

log = logging.getLogger(__name__)


async def download_image(http_client: httpx.AsyncClient, url: str, url_policy: UrlPolicy) -> bytes:
    """The body at ``url``; :class:`ImageTooLarge` past the policy's bytes, :class:`ImageUrlUnreachable` for the rest."""
    try:
        # An overall deadline too, so a server that drips bytes cannot hold the request open.
        async with asyncio.timeout(url_policy.timeout_s * 3):
            return await fetch_url(http_client, url, url_policy)
    except BodyTooLarge:
        raise ImageTooLarge(url_policy.max_bytes) from None
    except (UrlNotAccessible, TimeoutError) as reason:
        log.info("image url refused: %s", reason)
        raise ImageUrlUnreachable() from None
    except Exception as reason:  # odd names (IDNA), odd headers: whatever breaks, the URL is not accessible
        log.info("image url failed: %s: %s", type(reason).__name__, reason)
        raise ImageUrlUnreachable() from None
