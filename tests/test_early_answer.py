"""Refusals before the body is read reach clients that send the whole body first (http.client, urllib)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from app.http.early_answer import EarlyAnswerMiddleware

from conftest import KEYS, SEGMENT, Server

LIMIT = 20_971_520
DRAIN_MAX_BYTES = 67_108_864  # the default of BGR_DRAIN_MAX_BYTES
QUERY = "?api-version=2023-02-01-preview&mode=backgroundRemoval"
MB = 1_000_000


def zeros(total: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """A body streamed in pieces, so a test that sends 80 MB never holds it."""
    while total > 0:
        yield b"\0" * min(piece, total)
        total -= piece


def connect(server: Server) -> http.client.HTTPConnection:
    address = urlsplit(server.url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=120)


def post(connection: http.client.HTTPConnection, query: str, size: int, headers: dict[str, str]) -> http.client.HTTPResponse:
    """http.client's order: the request line, the headers, the whole body; only then the answer."""
    connection.request("POST", SEGMENT + query, body=zeros(size), headers={"Content-Length": str(size), **headers})
    return connection.getresponse()


CASES = {
    "21 MB to the 20 MB limit": (QUERY, 21 * MB, {"Ocp-Apim-Subscription-Key": KEYS[0]}, 400,
                                 f"The image size is not allowed to be zero or larger than {LIMIT} bytes."),
    "15 MB with a wrong key": (QUERY, 15 * MB, {"Ocp-Apim-Subscription-Key": "wrong"}, 401,
                               "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                               "key for an active subscription and use a correct regional API endpoint for your resource."),
    "15 MB with a bad mode": (QUERY.replace("backgroundRemoval", "sideways"), 15 * MB, {"Ocp-Apim-Subscription-Key": KEYS[0]},
                              400, "Value for mode is invalid."),
}


@pytest.mark.parametrize("connection_header", ["close", "keep-alive"])  # urllib sends close; http.client keeps alive
@pytest.mark.parametrize("case", list(CASES))
def test_http_client_reads_the_early_answer(keyed_server, case, connection_header):
    query, size, headers, status, message = CASES[case]
    connection = connect(keyed_server)
    try:
        response = post(connection, query, size, {**headers, "Connection": connection_header, "Content-Type": "image/jpeg"})
        body = response.read()
        assert response.status == status, body
        assert json.loads(body)["error"]["message"] == message
        if connection_header == "keep-alive":
            # The whole body was read, so the connection is still in step: the next request on it is served.
            connection.request("GET", "/health/live")
            assert connection.getresponse().read() == b'{"status":"ok"}'
    finally:
        connection.close()


def test_urllib_reads_the_early_answer(keyed_server):
    query, size, headers, status, message = CASES["21 MB to the 20 MB limit"]
    request = urllib.request.Request(keyed_server.url + SEGMENT + query, data=b"\xff" * size, headers={**headers, "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=120)
    assert refused.value.code == status
    assert json.loads(refused.value.read())["error"]["message"] == message


def cut_offs(server: Server) -> int:
    return server.log_path.read_text().count('"refused body cut off')


def test_a_client_that_sends_far_past_the_drain_bound_is_cut_off(keyed_server):
    before = cut_offs(keyed_server)
    connection = connect(keyed_server)
    try:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # not a timeout: the server stops reading and closes
            post(connection, QUERY, DRAIN_MAX_BYTES + 16 * MB, {"Ocp-Apim-Subscription-Key": "wrong"}).read()
    finally:
        connection.close()
    with keyed_server.client() as client:
        assert client.get("/health/ready").status_code == 200  # the server goes on
    assert cut_offs(keyed_server) == before + 1


def test_a_client_that_stops_sending_gets_its_answer_at_the_body_deadline(keyed_server):
    """It declared 15 MB and sent 1 MB: after BGR_BODY_TIMEOUT_S (3 s here) it is answered and the connection closed."""
    address = urlsplit(keyed_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=120) as sock:
        head = f"POST {SEGMENT}{QUERY} HTTP/1.1\r\nHost: x\r\nContent-Length: {15 * MB}\r\nOcp-Apim-Subscription-Key: wrong\r\n\r\n"
        sock.sendall(head.encode() + b"\0" * MB)
        answer = b""
        while piece := sock.recv(65536):  # ends when the server closes; a hang fails on the socket timeout
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"\r\nconnection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "401"


# --- the middleware alone ---


def run_refusing_app(messages: list[dict], request_headers: list[tuple[bytes, bytes]], max_bytes: int = 1000):
    """An app that answers at once without reading; returns the response headers and what the middleware left unread."""
    pending = list(messages)
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": SEGMENT, "headers": request_headers, "state": {}}
    asyncio.run(EarlyAnswerMiddleware(app, max_bytes=max_bytes, deadline_s=30)(scope, receive, send))
    return dict(sent[0]["headers"]), pending


def chunks(*sizes: int) -> list[dict]:
    return [{"type": "http.request", "body": b"\0" * size, "more_body": i < len(sizes) - 1} for i, size in enumerate(sizes)]


def test_the_rest_of_the_body_is_read_before_the_answer():
    headers, unread = run_refusing_app(chunks(300, 300, 300), [(b"content-length", b"900")])
    assert unread == [] and b"connection" not in headers


def test_past_the_bound_the_answer_closes_the_connection():
    headers, unread = run_refusing_app(chunks(600, 600, 600), [(b"content-length", b"1800")])
    assert len(unread) == 1 and headers[b"connection"] == b"close"


def test_a_client_waiting_for_100_continue_is_not_asked_for_its_body():
    headers, unread = run_refusing_app(chunks(300), [(b"content-length", b"300"), (b"expect", b"100-continue")])
    assert len(unread) == 1 and headers[b"connection"] == b"close"
