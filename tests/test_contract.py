"""Every error row of CONTRACT.md §4, as Azure showed it: status, codes, message, headers, compact body.

Rows the service never produces: "Region without the feature" (one region, always enabled),
"Tier/kind not allowed" (no pricing tiers) and "After retirement" (this service is not retired).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from app.errors import ShuttingDown
from app.http.azure import errors
from app.inference.batcher import Batcher
from app.main import create_app
from app.pixel_budget import PixelBudget
from app.service import Lane, SegmentService
from app.settings import Settings

from conftest import FILE_KEY, KEYS, SEGMENT, WEIGHTS, photo, png_bytes

VERSION = "2023-02-01-preview"
INVALID_KEY_BODY = (
    b'{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. '
    b'Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}'
)
MISSING_KEY_BODY = (
    b'{"error":{"code":"401","message":"Access denied due to missing subscription key. '
    b'Make sure to include subscription key when making requests to an API."}}'
)
NOT_FOUND_BODY = b'{"error":{"code":"404","message": "Resource not found"}}'


def assert_backend_error(response, status: int, message: str, inner: dict | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert response.content == json.dumps(body, separators=(",", ":")).encode()  # compact, as the backend sends
    assert body["error"]["message"] == message
    assert response.headers["x-ms-error-code"] == body["error"]["code"]
    if inner is None:
        assert "innererror" not in body["error"]
    else:
        assert body["error"]["innererror"] == inner
    assert response.headers["apim-request-id"] == response.headers["request-id"]
    assert "2023-02-01-preview" in response.headers["api-supported-versions"]


def assert_gateway_error(response, status: int, body: bytes) -> None:
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == "application/json"
    assert "x-ms-error-code" not in response.headers
    assert response.headers["apim-request-id"]


def segment(client, mode: str | None = "backgroundRemoval", version: str | None = VERSION, **kwargs):
    params = {k: v for k, v in (("api-version", version), ("mode", mode)) if v is not None}
    return client.post(SEGMENT, params=params, **kwargs)


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(photo())


def test_mode_invalid_and_missing(fast_server, image):
    with fast_server.client() as client:
        for mode in ("sideways", "BackgroundRemoval", "", None, "模式\u2028"):
            assert_backend_error(segment(client, mode, content=image), 400, "Value for mode is invalid.")
            assert segment(client, mode, content=image).headers["x-ms-error-code"] == "InvalidRequest"


def test_body_empty_or_too_large(fast_server):
    message = "The image size is not allowed to be zero or larger than 20971520 bytes."
    with fast_server.client() as client:
        assert_backend_error(segment(client, content=b""), 400, message)
        assert_backend_error(segment(client, content=b"\x00" * 20_971_521), 400, message)
        assert_backend_error(segment(client, files={"file": ("big.png", b"\x00" * 20_971_521, "image/png")}), 400, message)
        assert_backend_error(segment(client, files={"file": ("empty.png", b"", "image/png")}), 400, message)


def test_dimensions_out_of_range(fast_server):
    message = "The image dimension is not allowed to be smaller than 50 and larger than 16000."
    with fast_server.client() as client:
        for size in ((49, 200), (200, 49), (16_001, 50)):
            assert_backend_error(segment(client, content=png_bytes(photo(size))), 400, message)
        assert segment(client, content=png_bytes(photo((50, 50)))).status_code == 200


def test_corrupt_image(fast_server, image):
    inner = {"code": "InvalidImageFormat", "message": "Input data is not a valid image."}
    with fast_server.client() as client:
        for body in (b"GIF89a garbage", image[: len(image) // 2], b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"<svg></svg>"):
            assert_backend_error(segment(client, content=body), 400, "Image format is not valid.", inner)


def test_url_not_accessible(fast_server):
    with fast_server.client() as client:
        for url in ("http://127.0.0.1:9/none.png", "ftp://example.com/x.png", "file:///etc/passwd", "http://169.254.169.254/latest"):
            assert_backend_error(segment(client, json={"url": url}), 400, "The provided image url is not accessible.")


def test_wrong_content_type(fast_server, image):
    with fast_server.client() as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "video/mp4"):
            response = segment(client, content=image, headers={"Content-Type": content_type})
            assert_backend_error(response, 400, f"The provided image content type {content_type} is not supported.")


def test_json_without_url_or_malformed(fast_server):
    message = "The request body is not valid JSON with a 'url' property."
    with fast_server.client() as client:
        for body in (b"{}", b'{"uri": "http://x"}', b"{not json", b"[]", b'{"url": 5}', b'"http://x"', b"\xff\xfe"):
            assert_backend_error(segment(client, content=body, headers={"Content-Type": "application/json"}), 400, message)


def test_keys_from_settings_header_query_and_file(keyed_server, image):
    with keyed_server.client() as client:
        for key in (*KEYS, FILE_KEY):
            assert segment(client, content=image, headers={"Ocp-Apim-Subscription-Key": key}).status_code == 200
        query = client.post(SEGMENT, params={"api-version": VERSION, "mode": "foregroundMatting", "subscription-key": KEYS[1]}, content=image)
        assert query.status_code == 200


def test_missing_and_invalid_keys(keyed_server, image):
    with keyed_server.client() as client:
        missing = segment(client, content=image)
        assert_gateway_error(missing, 401, MISSING_KEY_BODY)
        assert missing.headers["www-authenticate"].startswith('AzureApiManagementKey realm="http://127.0.0.1:')
        assert 'name="Ocp-Apim-Subscription-Key",type="header"' in missing.headers["www-authenticate"]
        wrong = segment(client, content=image, headers={"Ocp-Apim-Subscription-Key": KEYS[0][:-1]})
        assert_gateway_error(wrong, 401, INVALID_KEY_BODY)
        assert len(wrong.content) == 224  # as recorded from Azure
        query_wrong = client.post(SEGMENT, params={"api-version": VERSION, "mode": "backgroundRemoval", "subscription-key": "nope"}, content=image)
        assert_gateway_error(query_wrong, 401, INVALID_KEY_BODY)
        # The header wins over the query parameter, as in API Management.
        header_wrong = client.post(
            SEGMENT,
            params={"api-version": VERSION, "mode": "backgroundRemoval", "subscription-key": KEYS[0]},
            headers={"Ocp-Apim-Subscription-Key": "nope"},
            content=image,
        )
        assert_gateway_error(header_wrong, 401, INVALID_KEY_BODY)


def test_keys_never_reach_the_log(keyed_server, image):
    with keyed_server.client() as client:
        client.post(SEGMENT, params={"api-version": VERSION, "mode": "backgroundRemoval", "subscription-key": KEYS[0]}, content=image)
        segment(client, content=image, headers={"Ocp-Apim-Subscription-Key": KEYS[1]})
        segment(client, content=image, headers={"Ocp-Apim-Subscription-Key": "wrong-key-that-must-not-be-logged"})
    log = keyed_server.log_path.read_text()
    assert '"logger": "app.access"' in log
    for secret in (*KEYS, FILE_KEY, "wrong-key-that-must-not-be-logged"):
        assert secret not in log


def test_open_service_says_so_at_start(server):
    assert "no API key configured" in server.log_path.read_text()


def test_api_version_unsupported_or_missing(fast_server, image):
    with fast_server.client() as client:
        for version in ("2023-10-01", "2024-02-01", "", None):
            assert_gateway_error(segment(client, version=version, content=image), 404, NOT_FOUND_BODY)
        assert_gateway_error(client.get(SEGMENT, params={"api-version": VERSION, "mode": "backgroundRemoval"}), 404, NOT_FOUND_BODY)
        assert_gateway_error(client.post("/computervision/imageanalysis:analyze", params={"api-version": VERSION}), 404, NOT_FOUND_BODY)
        # Both versions the segment operation had, and the leading-slash variants clients build.
        for version in ("2023-02-01-preview", "2023-04-01-preview"):
            assert segment(client, version=version, content=image).status_code == 200


def test_both_query_orders_and_unknown_parameters(fast_server, image):
    with fast_server.client() as client:
        url = f"{SEGMENT}?mode=foregroundMatting&api-version={VERSION}&overload=stream&key1=value1"
        assert client.post(url, content=image).status_code == 200


def test_internal_error_fails_only_that_request_and_the_worker_goes_on(image):
    """Azure's 500 when inference fails; the next request is served."""
    from app.inference.engine import MattingEngine

    settings = Settings(weights=WEIGHTS, device="cpu", resolution=64)
    engine = MattingEngine.from_settings(settings)
    real_analyse, calls = engine.analyse, {"n": 0}

    def analyse_failing_once(batch: np.ndarray) -> list:
        calls["n"] += 1
        if calls["n"] == 2:  # the first call is the warm-up
            raise RuntimeError("simulated CUDA error")
        return real_analyse(batch)

    engine.analyse = analyse_failing_once  # type: ignore[method-assign]
    with TestClient(create_app(settings, engine=engine)) as client:
        failed = segment(client, content=image)
        assert_backend_error(failed, 500, "The processing resulted in an internal error.")
        assert failed.json()["error"]["code"] == "InternalServerError"
        assert segment(client, content=image).status_code == 200


def test_a_bug_is_answered_as_azure_with_the_request_id_and_cors_headers(image, monkeypatch):
    """An exception no handler expects still gets Azure's 500 through every middleware, and the app goes on."""
    from app.inference.engine import MattingEngine

    settings = Settings(weights=WEIGHTS, device="cpu", resolution=64)
    engine = MattingEngine.from_settings(settings)
    broken = {"on": True}
    real_segment = SegmentService.segment

    async def segment_with_a_bug(self, *args, **kwargs):
        if broken["on"]:
            raise KeyError("a bug")
        return await real_segment(self, *args, **kwargs)

    monkeypatch.setattr(SegmentService, "segment", segment_with_a_bug)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        failed = segment(client, content=image, headers={"Origin": "https://app.example"})
        assert_backend_error(failed, 500, "The processing resulted in an internal error.")
        assert failed.headers["access-control-allow-origin"] == "*"
        broken["on"] = False
        assert segment(client, content=image).status_code == 200
        assert 'bgremoval_rejected_total{api="azure",reason="internal"} 1.0' in client.get("/metrics").text


def test_service_unavailable_once_stopping(image):
    """Work that arrives while the service drains gets Azure's 503."""

    async def scenario():
        batcher = Batcher(lambda batch: np.zeros(batch.shape[:3], np.float32), 1, 0.0, 4)
        service = SegmentService({"isnet-general-use": Lane(batcher, 64)}, "isnet-general-use", 1, PixelBudget(10**8), 1, 6, 1)
        with pytest.raises(ShuttingDown) as raised:
            await service.segment(image, "backgroundRemoval")
        return errors.from_pipeline(raised.value)

    error = asyncio.run(scenario())
    assert (error.status, error.code, error.message) == (503, "ServiceUnavailable", "The service is unavailable.")


def test_rate_limit_body_and_header():
    response = errors.rate_limited(3).response()
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    body = json.loads(response.body)
    assert body["error"]["code"] == "429" and "retry after 3 seconds" in body["error"]["message"]
    assert response.body.startswith(b'{"error":{"code":"429","message": "')
