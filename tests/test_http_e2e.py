"""End to end over HTTP: a real service process on loopback, the real model, all body forms and both modes."""

from __future__ import annotations

import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import AZURE_SPEC, SEGMENT, decode_rgb, read_png, require_shared, start_server, stop_server, loopback_http

QUERY = {"api-version": "2023-02-01-preview"}


@pytest.fixture(scope="module")
def face() -> Path:
    return require_shared(AZURE_SPEC / "observed-outputs") / "input_face.jpeg"


@pytest.fixture(scope="module")
def building() -> Path:
    return require_shared(AZURE_SPEC / "observed-outputs") / "input_building.jpg"


@pytest.fixture(scope="module")
def image_host(face: Path, building: Path):
    """A plain HTTP server on loopback that serves the test images (and a redirect) for JSON url bodies."""
    directory = face.parent

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self):
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + self.path.removeprefix("/redirect/"))
                self.end_headers()
                return
            super().do_GET()

    with loopback_http(Handler) as url:
        yield url


def png_colour_type(data: bytes) -> int:
    return struct.unpack(">IIBB", data[16:26])[3]


def post(client, mode: str, path: str = SEGMENT, **kwargs):
    return client.post(path, params={**QUERY, "mode": mode}, **kwargs)


@pytest.mark.parametrize("body_form", ["raw", "json", "multipart"])
@pytest.mark.parametrize("mode", ["backgroundRemoval", "foregroundMatting"])
def test_each_body_form_and_mode(server, image_host, face, mode, body_form):
    data = face.read_bytes()
    with server.client() as client:
        if body_form == "raw":
            response = post(client, mode, content=data, headers={"Content-Type": "image/jpeg"})
        elif body_form == "json":
            response = post(client, mode, json={"url": f"{image_host}/{face.name}"})
        else:
            response = post(client, mode, files={"file": (face.name, data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["apim-request-id"] == response.headers["request-id"]
    image = read_png(response.content)
    assert image.size == (225, 225)
    if mode == "backgroundRemoval":
        assert png_colour_type(response.content) == 6 and image.mode == "RGBA"
        rgba = np.asarray(image)
        assert np.array_equal(rgba[:, :, :3], decode_rgb(face))  # RGB is the input, exactly
        alpha = rgba[:, :, 3]
    else:
        assert png_colour_type(response.content) == 3 and image.mode == "P"
        alpha = np.asarray(image)
    # A portrait: the face in the middle is foreground, the top corners background.
    assert alpha[100:140, 90:140].mean() > 200
    assert alpha[:15, :15].mean() < 50 and alpha[:15, -15:].mean() < 50


def test_mattes_agree_across_modes_and_with_azure(server, face):
    with server.client() as client:
        cutout = read_png(post(client, "backgroundRemoval", content=face.read_bytes()).content)
        matte = read_png(post(client, "foregroundMatting", content=face.read_bytes()).content)
    alpha = np.asarray(cutout)[:, :, 3].astype(float)
    assert np.abs(alpha - np.asarray(matte).astype(float)).max() <= 1
    azure = np.asarray(read_png((AZURE_SPEC / "observed-outputs" / "backgroundRemoval_face_225x225.png").read_bytes()))
    assert np.abs(alpha - azure[:, :, 3]).mean() / 255 < 0.05


def test_non_square_size_is_preserved(server, building):
    with server.client() as client:
        response = post(client, "foregroundMatting", path="/imageanalysis:segment", content=building.read_bytes(),
                        headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert read_png(response.content).size == (800, 600)


def test_png_and_gif_inputs_and_double_slash_paths(server, face):
    rgb = decode_rgb(face)
    with server.client() as client:
        for fmt in ("PNG", "GIF", "WEBP"):
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            response = post(client, "backgroundRemoval", path="//computervision/imageanalysis:segment",
                            content=buffer.getvalue(), headers={"Content-Type": f"image/{fmt.lower()}"})
            assert response.status_code == 200, (fmt, response.text)
            assert read_png(response.content).size == (225, 225)


def test_url_redirects_are_followed(server, image_host, face):
    with server.client() as client:
        response = post(client, "foregroundMatting", json={"url": f"{image_host}/redirect/{face.name}"})
    assert response.status_code == 200


def test_single_quoted_json_as_azures_curl_sample_sends(server, image_host, face):
    with server.client() as client:
        body = "{'url':'" + f"{image_host}/{face.name}" + "'}"
        response = post(client, "foregroundMatting", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


def test_errors_are_azure_shaped(server):
    with server.client() as client:
        cases = [
            (post(client, "backgroundRemoval", content=b""), 400, "The image size is not allowed to be zero or larger than 20971520 bytes."),
            (post(client, "backgroundRemoval", content=b"not an image"), 400, "Image format is not valid."),
            (post(client, "sideways", content=b"x"), 400, "Value for mode is invalid."),
            (client.post(SEGMENT, params={"api-version": "2023-02-01-preview"}, content=b"x"), 400, "Value for mode is invalid."),
            (post(client, "backgroundRemoval", json={"url": "http://10.0.0.1/x.jpg"}), 400, "The provided image url is not accessible."),
            (post(client, "backgroundRemoval", json={"url": "http://127.0.0.1:1/nothing.jpg"}), 400, "The provided image url is not accessible."),
            (post(client, "backgroundRemoval", content=b"x", headers={"Content-Type": "text/plain"}), 400, None),
        ]
        for response, status, message in cases:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json; charset=utf-8"
            body = response.json()
            assert body["error"]["code"] == "InvalidRequest" == response.headers["x-ms-error-code"]
            if message:
                assert body["error"]["message"] == message
            assert response.content == json.dumps(body, separators=(",", ":")).encode()
        corrupt = post(client, "backgroundRemoval", content=b"not an image").json()
        assert corrupt["error"]["innererror"] == {"code": "InvalidImageFormat", "message": "Input data is not a valid image."}
        tiny = io.BytesIO()
        Image.new("RGB", (40, 400)).save(tiny, "PNG")
        response = post(client, "backgroundRemoval", content=tiny.getvalue())
        assert response.json()["error"]["message"] == "The image dimension is not allowed to be smaller than 50 and larger than 16000."
        for version in ("2023-10-01", None):
            params = {"mode": "backgroundRemoval", **({"api-version": version} if version else {})}
            response = client.post(SEGMENT, params=params, content=b"x")
            assert response.status_code == 404
            assert response.content == b'{"error":{"code":"404","message": "Resource not found"}}'
            assert response.headers["content-type"] == "application/json"


def test_oversized_body_is_refused(server):
    with server.client() as client:
        response = post(client, "backgroundRemoval", content=b"\xff" * (20_971_520 + 1))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The image size is not allowed to be zero or larger than 20971520 bytes."


def test_full_queue_answers_429_with_retry_after(weights, face, tmp_path):
    busy = start_server({"BGR_QUEUE_SIZE": "1", "BGR_MAX_BATCH_SIZE": "1", "BGR_RETRY_AFTER_S": "2"}, tmp_path / "busy.log")
    try:
        data = face.read_bytes()

        def one(_):
            with busy.client() as client:
                return post(client, "foregroundMatting", content=data)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(8)))
    finally:
        stop_server(busy)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["code"] == "429"
    assert limited.headers["content-type"] == "application/json"
