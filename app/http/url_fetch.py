"""Download an image from a client's URL without opening a door into our network.

Every hop (redirects included) is resolved here, its address checked, and the
connection made to that very address (Host header and TLS SNI keep the name),
so DNS rebinding cannot swap in an internal address after the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlNotAccessible(Exception):
    """The URL cannot or may not be fetched; the reason is for logs, never for the client."""


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class UrlPolicy:
    max_bytes: int
    timeout_s: float = 10.0
    max_redirects: int = 5
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_allow_list(cls, allow: tuple[str, ...], **kwargs: object) -> "UrlPolicy":
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(allowed_hosts=frozenset(hosts), allowed_networks=tuple(networks), **kwargs)  # type: ignore[arg-type]

    def permits(self, host: str, address: IPAddress) -> bool:
        if host.lower().rstrip(".") in self.allowed_hosts or any(address in net for net in self.allowed_networks):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        # is_global excludes loopback, private, link-local (cloud metadata), shared and reserved ranges.
        return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        return [literal]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise UrlNotAccessible(f"cannot resolve {host}: {error}") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


async def fetch_url(client: httpx.AsyncClient, url: str, policy: UrlPolicy) -> bytes:
    for _ in range(policy.max_redirects + 1):
        try:
            parts = urlsplit(url)
        except ValueError:
            raise UrlNotAccessible("malformed URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlNotAccessible(f"unsupported URL {url!r}")
        host = parts.hostname
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UrlNotAccessible("bad port") from None
        addresses = await _resolve(host, port)
        address = next((a for a in addresses if policy.permits(host, a)), None)
        if address is None:
            raise UrlNotAccessible(f"{host} resolves only to refused addresses {addresses}")
        literal = f"[{address}]" if address.version == 6 else str(address)
        pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        request = client.build_request(
            "GET", pinned, headers={"Host": host_header}, extensions={"sni_hostname": host} if parts.scheme == "https" else {}
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise UrlNotAccessible(f"{type(error).__name__}: {error}") from None
        try:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise UrlNotAccessible("redirect without Location")
                url = urljoin(url, location)
                continue
            if response.status_code != 200:
                raise UrlNotAccessible(f"status {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                raise BodyTooLarge
            body = bytearray()
            try:
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > policy.max_bytes:
                        raise BodyTooLarge
            except httpx.HTTPError as error:
                raise UrlNotAccessible(f"{type(error).__name__}: {error}") from None
            return bytes(body)
        finally:
            await response.aclose()
    raise UrlNotAccessible("too many redirects")
