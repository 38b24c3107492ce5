"""Browsers on other origins: preflights, CORS headers on every answer, and a real Chromium page that calls the service."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from app.http.azure import errors
from app.http.cors import CorsMiddleware, CorsPolicy
from app.settings import Settings, SettingsError

from conftest import KEYS, SEGMENT, photo, png_bytes
from test_operations import sample, scrape
from test_web_page import browser  # noqa: F401  (the real Chromium fixture)

QUERY = {"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}
PAGE = "http://page.example:8080"
AZURE_HEADERS = "ocp-apim-subscription-key,ocp-apim-subscription-region,content-type"


def preflight(client, origin: str = PAGE, path: str = SEGMENT, requested: str = AZURE_HEADERS):
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": requested}
    return client.options(path, params=QUERY, headers=headers)


def header_names(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",")}


# --- the setting ---


@pytest.mark.parametrize(
    ("raw", "any_origin", "origins"),
    [
        (None, True, set()),  # the default: any origin, as Azure's cloud endpoint
        ("*", True, set()),
        ("none", False, set()),
        ("https://App.Example.com/, http://localhost:3000", False, {"https://app.example.com", "http://localhost:3000"}),
    ],
)
def test_cors_origins_setting(raw, any_origin, origins):
    settings = Settings.from_env({} if raw is None else {"BGR_CORS_ORIGINS": raw})
    policy = settings.cors_policy()
    assert (policy.any_origin, set(policy.origins)) == (any_origin, origins)


@pytest.mark.parametrize("raw", ["*, https://a.example", "https://a.example/path", "a.example", "none, https://a.example"])
def test_malformed_cors_origins_are_a_settings_error(raw):
    with pytest.raises(SettingsError, match="BGR_CORS_ORIGINS"):
        Settings.from_env({"BGR_CORS_ORIGINS": raw})


# --- the middleware, on a small app that answers as the service's routes do ---


async def refusing(request: Request) -> Response:
    return errors.rate_limited(2).response()  # a gateway error with a header of its own


def small_app(policy: CorsPolicy) -> CorsMiddleware:
    return CorsMiddleware(Starlette(routes=[Route(SEGMENT, refusing, methods=["POST"])]), policy)


def test_preflight_names_azures_headers_and_any_other_asked_for():
    with TestClient(small_app(CorsPolicy(any_origin=True))) as client:
        response = preflight(client, requested="Ocp-Apim-Subscription-Key, x-ms-client-request-id, bad header\x01")
        bare = preflight(client, requested="")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = header_names(response.headers["access-control-allow-headers"])
    assert {"ocp-apim-subscription-key", "ocp-apim-subscription-region", "content-type", "x-ms-client-request-id"} <= allowed
    assert not any("bad" in name for name in allowed)  # only well-formed names are echoed
    assert header_names(bare.headers["access-control-allow-headers"]) >= header_names(AZURE_HEADERS)
    assert "access-control-allow-credentials" not in response.headers  # keys travel in headers, never cookies


def test_errors_carry_cors_headers_and_keep_their_bytes():
    with TestClient(small_app(CorsPolicy(any_origin=True))) as client:
        plain = client.post(SEGMENT, content=b"x")
        cross = client.post(SEGMENT, content=b"x", headers={"Origin": PAGE})
    assert cross.status_code == plain.status_code == 429
    assert cross.content == plain.content == errors.rate_limited(2).body()
    assert cross.headers["access-control-allow-origin"] == "*"
    exposed = header_names(cross.headers["access-control-expose-headers"])
    assert {"retry-after", "apim-request-id", "request-id", "x-segment-target", "x-segment-measures", "x-segment-refined", "x-ms-error-code"} <= exposed
    # Without an Origin (every non-browser client) the answer is Azure's, header for header.
    assert not any(name.startswith("access-control-") for name in plain.headers)


def test_a_list_of_origins_allows_only_those():
    policy = CorsPolicy.parse(("https://app.example.com",))
    with TestClient(small_app(policy)) as client:
        listed = client.post(SEGMENT, content=b"x", headers={"Origin": "https://app.example.com"})
        other = client.post(SEGMENT, content=b"x", headers={"Origin": "https://evil.example"})
        listed_preflight = preflight(client, origin="https://app.example.com")
        other_preflight = preflight(client, origin="https://evil.example")
    assert listed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "origin" in listed.headers["vary"].lower() and "origin" in other.headers["vary"].lower()
    assert "access-control-allow-origin" not in other.headers
    assert other.status_code == 429 and other.content == listed.content  # refused by the browser, not by the server
    assert listed_preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    # An origin not on the list: the empty 200 of APIM's cors policy, with no CORS headers.
    assert other_preflight.status_code == 200 and other_preflight.content == b""
    assert not any(name.startswith("access-control-") for name in other_preflight.headers)


def test_none_turns_cors_off():
    with TestClient(small_app(CorsPolicy.parse(("none",)))) as client:
        response = preflight(client)
        cross = client.post(SEGMENT, content=b"x", headers={"Origin": PAGE})
    assert response.status_code == 405  # not answered: the service's routes see it (the service makes it Azure's 404)
    assert not any(name.startswith("access-control-") for name in [*response.headers, *cross.headers])


# --- the real service ---


def test_preflight_needs_no_key_and_every_early_error_is_readable(keyed_server):
    """Browsers send no key on a preflight; the refusals a page meets first all carry the CORS headers."""
    origin = {"Origin": PAGE}
    key = {"Ocp-Apim-Subscription-Key": KEYS[0]}
    before = scrape(keyed_server.url)
    with keyed_server.client() as client:
        answered = preflight(client)
        for path in (SEGMENT, "/imageanalysis:segment", "//computervision/imageanalysis:segment"):
            assert preflight(client, path=path).headers["access-control-allow-origin"] == "*", path
        cases = {
            "missing key": client.post(SEGMENT, params=QUERY, content=b"x", headers=origin),
            "wrong key": client.post(SEGMENT, params=QUERY, content=b"x", headers={**origin, "Ocp-Apim-Subscription-Key": "wrong"}),
            "bad mode": client.post(SEGMENT, params={**QUERY, "mode": "sideways"}, content=b"x", headers={**origin, **key}),
            "bad api-version": client.post(SEGMENT, params={**QUERY, "api-version": "2023-10-01"}, content=b"x", headers={**origin, **key}),
            "too large": client.post(SEGMENT, params=QUERY, content=b"\0" * (20_971_520 + 1), headers={**origin, **key}),
        }
        without_origin = client.post(SEGMENT, params=QUERY, content=b"x")
    assert answered.status_code == 200
    assert answered.headers["apim-request-id"]  # logged and traceable like any request
    # Preflights carry the call's query string (mode=backgroundRemoval) but are not segment calls.
    counted = {"mode": "backgroundRemoval", "status": "200"}
    assert sample(scrape(keyed_server.url), "bgremoval_requests_total", **counted) == sample(before, "bgremoval_requests_total", **counted)
    assert header_names(answered.headers["access-control-allow-headers"]) >= header_names(AZURE_HEADERS)
    statuses = {name: response.status_code for name, response in cases.items()}
    assert statuses == {"missing key": 401, "wrong key": 401, "bad mode": 400, "bad api-version": 404, "too large": 400}
    for name, response in cases.items():
        assert response.headers["access-control-allow-origin"] == "*", name
        assert response.json()["error"]["message"], name
    assert cases["missing key"].content == without_origin.content  # byte for byte as without CORS


@pytest.fixture
def other_origin():
    """A second loopback HTTP server, on another port (so another origin), serving a blank page."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another origin</title><p>calls the service"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


CALL_FROM_PAGE = """
const [url, key, imageBase64, done] = arguments;
const image = Uint8Array.from(atob(imageBase64), c => c.charCodeAt(0));
async function call(query, key) {
  const headers = {'Content-Type': 'image/png', 'Ocp-Apim-Subscription-Region': 'westeurope'};
  if (key) headers['Ocp-Apim-Subscription-Key'] = key;
  const response = await fetch(url + query, {method: 'POST', headers, body: image});
  const result = {status: response.status, type: response.headers.get('content-type'),
                  target: response.headers.get('x-segment-target'), requestId: response.headers.get('apim-request-id')};
  if (response.ok) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    result.size = bytes.length;
    result.signature = Array.from(bytes.slice(1, 4), b => String.fromCharCode(b)).join('');
    result.width = new DataView(bytes.buffer).getUint32(16);
  } else {
    result.message = (await response.json()).error.message;
  }
  return result;
}
(async () => {
  const query = '?api-version=2023-02-01-preview&mode=backgroundRemoval';
  done({origin: location.origin, cutout: await call(query, key), wrongKey: await call(query, 'wrong'),
        badMode: await call('?api-version=2023-02-01-preview&mode=sideways', key)});
})().catch(error => done({failed: String(error)}));
"""


def test_a_page_on_another_origin_reads_a_cutout_and_an_error(browser, keyed_server, other_origin):  # noqa: F811
    image = png_bytes(photo((160, 120)))
    browser.get(other_origin)
    browser.set_script_timeout(120)
    result = browser.execute_async_script(
        CALL_FROM_PAGE, keyed_server.url + SEGMENT, KEYS[0], base64.b64encode(image).decode()
    )
    assert "failed" not in result, result
    assert result["origin"] == other_origin.rstrip("/") != keyed_server.url
    cutout = result["cutout"]
    assert cutout["status"] == 200 and cutout["type"] == "image/png" and cutout["signature"] == "PNG"
    assert cutout["width"] == 160 and cutout["size"] > 1000
    assert cutout["target"] in ("subject", "scene") and cutout["requestId"]  # exposed headers are readable
    assert result["wrongKey"]["status"] == 401
    assert result["wrongKey"]["message"].startswith("Access denied due to invalid subscription key")
    assert (result["badMode"]["status"], result["badMode"]["message"]) == (400, "Value for mode is invalid.")
