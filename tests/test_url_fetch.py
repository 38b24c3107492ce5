"""URL inputs: schemes, SSRF refusals after resolution, address pinning, TLS names, redirects, caps, timeouts."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.http import url_fetch
from app.http.url_fetch import BodyTooLarge, UrlNotAccessible, UrlPolicy, fetch_url

from conftest import SEGMENT

POLICY = UrlPolicy(max_bytes=1000, timeout_s=2.0, max_redirects=2)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "fe80::1",
        "fd00:ec2::254", "224.0.0.1", "ff02::1", "0.0.0.0", "::", "100.64.0.1", "198.18.0.1", "240.0.0.1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "192.0.0.170",
    ],
)
def test_internal_addresses_are_refused(address):
    assert not POLICY.permits("host.example", ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert POLICY.permits("host.example", ipaddress.ip_address(address))


def test_allow_list_by_network_and_by_name():
    policy = UrlPolicy.from_allow_list(("127.0.0.0/8", "images.internal"), max_bytes=10)
    assert policy.permits("anything", ipaddress.ip_address("127.0.0.5"))
    assert policy.permits("images.internal", ipaddress.ip_address("10.0.0.7"))
    assert not policy.permits("other.internal", ipaddress.ip_address("10.0.0.7"))


def run(coroutine):
    return asyncio.run(coroutine)


def fake_resolver(monkeypatch, answers: dict[str, list[str]]):
    calls: list[str] = []

    async def resolve(host: str, port: int):
        calls.append(host)
        return [ipaddress.ip_address(a) for a in answers[host]]

    monkeypatch.setattr(url_fetch, "_resolve", resolve)
    return calls


def test_the_connection_goes_to_the_checked_address(monkeypatch):
    """DNS rebinding: the name is resolved once per hop, checked, and the request is sent to that address."""
    fake_resolver(monkeypatch, {"images.example": ["93.184.216.34"]})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"image bytes")

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await fetch_url(client, "http://images.example/cat.jpg?x=1", POLICY)

    assert run(go()) == b"image bytes"
    assert seen[0].url.host == "93.184.216.34" and seen[0].url.path == "/cat.jpg" and seen[0].url.query == b"x=1"
    assert seen[0].headers["host"] == "images.example"


def test_a_name_resolving_to_any_internal_address_only_is_refused(monkeypatch):
    fake_resolver(monkeypatch, {"rebind.example": ["127.0.0.1", "10.0.0.1"]})

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
            await fetch_url(client, "http://rebind.example/x.png", POLICY)

    with pytest.raises(UrlNotAccessible):
        run(go())


def test_redirects_are_checked_hop_by_hop_and_limited(monkeypatch):
    fake_resolver(monkeypatch, {"a.example": ["93.184.216.34"], "metadata.example": ["169.254.169.254"]})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/to-metadata":
            return httpx.Response(302, headers={"Location": "http://metadata.example/latest/meta-data"})
        if request.url.path.startswith("/loop"):
            return httpx.Response(301, headers={"Location": "/loop"})
        return httpx.Response(200, content=b"ok")

    async def go(url):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await fetch_url(client, url, POLICY)

    with pytest.raises(UrlNotAccessible, match="refused addresses"):
        run(go("http://a.example/to-metadata"))
    with pytest.raises(UrlNotAccessible, match="too many redirects"):
        run(go("http://a.example/loop"))


def test_download_is_capped_while_streaming(monkeypatch):
    fake_resolver(monkeypatch, {"big.example": ["93.184.216.34"]})

    async def endless():
        for _ in range(10_000):
            yield b"x" * 100

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())  # no Content-Length: only the streaming cap can stop it

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await fetch_url(client, "http://big.example/huge.jpg", POLICY)

    with pytest.raises(BodyTooLarge):
        run(go())


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "http:///nohost", "http://[::1", "javascript:alert(1)"])
def test_other_schemes_and_malformed_urls_are_refused(url):
    async def go():
        async with httpx.AsyncClient() as client:
            await fetch_url(client, url, POLICY)

    with pytest.raises(UrlNotAccessible):
        run(go())


def test_https_keeps_the_name_for_sni_and_certificate_checks(monkeypatch, tmp_path):
    """Connecting to a pinned IP over TLS still verifies the certificate against the URL's host name."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("images.test")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    fake_resolver(monkeypatch, {"images.test": ["127.0.0.1"], "wrong-name.test": ["127.0.0.1"]})
    policy = UrlPolicy.from_allow_list(("127.0.0.0/8",), max_bytes=1000, timeout_s=5)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def go(host):
        async with httpx.AsyncClient(verify=client_context) as client:
            return await fetch_url(client, f"https://{host}:{port}/x.png", policy)

    try:
        assert run(go("images.test")) == b"hello"
        with pytest.raises(UrlNotAccessible):
            run(go("wrong-name.test"))  # the certificate is not for this name
    finally:
        httpd.shutdown()


def test_a_silent_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    policy = UrlPolicy.from_allow_list(("127.0.0.1",), max_bytes=1000, timeout_s=0.5)

    async def go():
        async with httpx.AsyncClient(timeout=0.5) as client:
            await fetch_url(client, f"http://127.0.0.1:{listener.getsockname()[1]}/x.png", policy)

    try:
        with pytest.raises(UrlNotAccessible):
            run(go())
    finally:
        listener.close()


def test_over_http_every_refusal_is_not_accessible(fast_server):
    """Without the allow-list, loopback is refused by the service; with it, the test image host is reachable."""
    message = "The provided image url is not accessible."
    params = {"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}
    with fast_server.client() as client:
        for url in ("http://localhost:1/x.png", "http://[::1]/x.png", "http://0.0.0.0/x.png", "http://10.255.255.1/x.png",
                    "http://169.254.169.254/latest/meta-data/", "https://127.0.0.1:1/x.png", "not a url"):
            response = client.post(SEGMENT, params=params, json={"url": url})
            assert response.status_code == 400 and response.json()["error"]["message"] == message, url
