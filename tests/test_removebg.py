"""remove.bg's v1.0 API as its users call it: every parameter and error code of its OpenAPI, a real client library
(PyPI's `removebg`) pointed at the service, schemathesis against /openapi.json's remove.bg paths, and its mattes
against Azure's endpoint's for the same photo at full resolution.

Most tests use the real model at a 64-pixel input (``fast_server``): the HTTP and imaging paths are exact there, only
the matte is coarse.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.http.removebg.errors import RemoveBgError
from app.http.removebg.options import parse_options
from app.http.removebg.output import Result
from app.imaging.output import foreground_box
from app.service import Cutout
from conftest import AZURE_SPEC, KEYS, SEGMENT, photo, png_bytes, require_shared, run_schemathesis, start_server, stop_server, loopback_http

PATH = "/v1.0/removebg"


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rgba(data: bytes) -> np.ndarray:
    image = decode(data)
    assert image.mode == "RGBA", image.mode
    return np.asarray(image)


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(photo((320, 240)))


@pytest.fixture(scope="module")
def plain(fast_server, image) -> np.ndarray:
    """The default result (an RGBA PNG at the input's size, 0.08 MP being under preview's cap) every option is checked against."""
    with fast_server.client() as client:
        response = client.post(PATH, files={"image_file": ("photo.png", image)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return rgba(response.content)


@pytest.fixture(scope="module")
def image_host(image):
    """Loopback HTTP: /photo.png (the test image), /bg.png (a background), /missing (404)."""
    background = png_bytes(Image.new("RGB", (320, 240), (10, 200, 30)))
    pages = {"/photo.png": image, "/bg.png": background}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    with loopback_http(Handler) as url:
        yield url


def post(server, data=None, files=None, json_body=None, headers=None, **kwargs):
    with server.client() as client:
        return client.post(PATH, data=data, files=files, json=json_body, headers=headers, **kwargs)


def assert_error(response, status: int, code: str, title: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["code"] == code
    assert error["title"]
    if title is not None:
        assert error["title"] == title
    return error


# --- sources ---------------------------------------------------------------------------------------------------------


def test_every_source_in_every_body_form_gives_the_same_cut_out(fast_server, image, image_host, plain):
    b64 = base64.b64encode(image).decode()
    url = f"{image_host}/photo.png"
    forms = [
        {"files": {"image_file": ("photo.png", image)}},
        {"files": {"image_file": (None, image)}},  # a file sent as a plain field
        {"files": {"image_file_b64": (None, b64)}},
        {"data": {"image_file_b64": b64}},
        {"data": {"image_url": url}},
        {"files": {"image_url": (None, url)}},
        {"json_body": {"image_file_b64": b64}},
        {"json_body": {"image_file_b64": "data:image/png;base64," + base64.urlsafe_b64encode(image).decode().rstrip("=")}},
        {"json_body": {"image_url": url}},
    ]
    for form in forms:
        response = post(fast_server, **form)
        assert response.status_code == 200, (form.keys(), response.text)
        assert np.array_equal(rgba(response.content), plain), form.keys()


def test_missing_and_multiple_sources(fast_server, image, image_host):
    b64 = base64.b64encode(image).decode()
    for form in ({"data": {"size": "preview"}}, {"data": {"image_url": "", "image_file_b64": " "}}, {"json_body": {}}):
        error = assert_error(post(fast_server, **form), 400, "missing_source", "No image given")
        assert "image_url, image_file or image_file_b64" in error["detail"]
    both = [
        {"files": {"image_file": ("a.png", image)}, "data": {"image_url": f"{image_host}/photo.png"}},
        {"data": {"image_file_b64": b64, "image_url": f"{image_host}/photo.png"}},
        {"json_body": {"image_file_b64": b64, "image_url": "https://example.com/a.jpg"}},
    ]
    for form in both:
        assert_error(post(fast_server, **form), 400, "multiple_sources")


def test_url_errors(fast_server, image_host):
    for url in ("ftp://example.com/a.jpg", "not a url", "http://", "javascript:alert(1)"):
        assert_error(post(fast_server, data={"image_url": url}), 400, "invalid_image_url", "Invalid image_url: Please provide a valid URL.")
    error = assert_error(post(fast_server, data={"image_url": f"{image_host}/missing"}), 400, "failed_image_download")
    assert error["title"] == f"Failed to download image from given image_url: {image_host}/missing"
    # The SSRF rules hold: only 127.0.0.1 is allowed on this server, so a private address is refused.
    assert_error(post(fast_server, data={"image_url": "http://10.0.0.1/a.jpg"}), 400, "failed_image_download")


# --- size, format, channels ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return png_bytes(photo((2400, 1800)), "JPEG", quality=80)  # 4.32 MP


def test_size_caps_the_output_as_documented(fast_server, large_jpeg):
    caps = {
        None: 250_000, "preview": 250_000, "small": 250_000, "regular": 250_000, "medium": 1_500_000, "hd": 4_000_000,
        "full": 4_320_000, "4k": 4_320_000, "auto": 4_320_000, "50MP": 4_320_000,
    }
    for size, cap in caps.items():
        data = {"format": "jpg"} | ({"size": size} if size else {})
        response = post(fast_server, data=data, files={"image_file": ("big.jpg", large_jpeg)})
        assert response.status_code == 200, response.text
        result = decode(response.content)
        width, height = result.size
        assert (int(response.headers["x-width"]), int(response.headers["x-height"])) == (width, height)
        assert width * height <= cap and width * height > cap * 0.99, (size, result.size)
        assert abs(width / height - 4 / 3) < 0.01
    assert_error(post(fast_server, data={"size": "huge"}, files={"image_file": ("a.jpg", large_jpeg)}), 400, "invalid_size",
                 "Invalid value for parameter 'size'")


def test_full_size_png_is_capped_at_10_megapixels_and_jpg_is_not(fast_server):
    data = png_bytes(photo((4000, 3000)), "JPEG", quality=70)  # 12 MP
    sizes = {}
    for output_format in ("png", "jpg"):
        response = post(fast_server, data={"size": "full", "format": output_format}, files={"image_file": ("a.jpg", data)})
        assert response.status_code == 200, response.text
        sizes[output_format] = decode(response.content).size
    assert sizes["jpg"] == (4000, 3000)
    width, height = sizes["png"]
    assert 9_900_000 < width * height <= 10_000_000


def test_formats(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    results = {}
    for output_format in ("png", "jpg", "zip", "webp", "auto"):
        response = post(fast_server, data={"format": output_format}, files=files)
        assert response.status_code == 200, response.text
        results[output_format] = response
    assert np.array_equal(rgba(results["png"].content), plain)
    assert results["auto"].headers["content-type"] == "image/png"  # transparency remains
    assert np.array_equal(rgba(results["auto"].content), plain)
    jpeg = decode(results["jpg"].content)
    assert results["jpg"].headers["content-type"] == "image/jpeg" and jpeg.format == "JPEG" and jpeg.mode == "RGB"
    # A JPEG has no transparency: the cut-out over white.
    a = plain[:, :, 3:].astype(float) / 255
    expected = plain[:, :, :3] * a + 255 * (1 - a)
    assert np.abs(np.asarray(jpeg, float) - expected).mean() < 3
    webp = decode(results["webp"].content)
    assert results["webp"].headers["content-type"] == "image/webp" and webp.mode == "RGBA"
    assert np.array_equal(np.asarray(webp)[:, :, 3], plain[:, :, 3])  # lossy colours, exact alpha
    assert results["zip"].headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(results["zip"].content)) as archive:
        assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
        colour, alpha = decode(archive.read("color.jpg")), decode(archive.read("alpha.png"))
    assert colour.format == "JPEG" and colour.mode == "RGB"
    assert np.abs(np.asarray(colour, float) - plain[:, :, :3]).mean() < 3
    assert alpha.mode == "L" and np.array_equal(np.asarray(alpha), plain[:, :, 3])
    assert_error(post(fast_server, data={"format": "gif"}, files=files), 400, "invalid_format", "Invalid format parameter given")


def test_auto_format_is_jpeg_when_nothing_is_transparent(fast_server, image):
    response = post(fast_server, data={"bg_color": "ffffff"}, files={"image_file": ("p.png", image)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert decode(response.content).format == "JPEG"


def test_channels_alpha_gives_the_matte_as_a_greyscale_image(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    response = post(fast_server, data={"channels": "alpha"}, files=files)
    matte = decode(response.content)
    assert response.headers["content-type"] == "image/png" and matte.mode == "L"
    assert np.array_equal(np.asarray(matte), plain[:, :, 3])
    response = post(fast_server, data={"channels": "alpha", "format": "jpg", "bg_color": "red"}, files=files)
    matte = decode(response.content)
    assert matte.format == "JPEG" and matte.mode == "L"
    assert np.abs(np.asarray(matte, float) - plain[:, :, 3]).mean() < 3  # the subject's matte; the background has no say
    assert_error(post(fast_server, data={"channels": "rgb"}, files=files), 400, "invalid_channels", "Invalid value for parameter 'channels'")


# --- backgrounds -----------------------------------------------------------------------------------------------------


def composite(plain: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The cut-out over an opaque background (a colour, or an image of its size)."""
    a = plain[:, :, 3:].astype(float) / 255
    return plain[:, :, :3] * a + np.asarray(background, float) * (1 - a)


def test_bg_color_in_every_spelling(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    for spelling, colour in (("81d4fa", (0x81, 0xD4, 0xFA)), ("#fff", (255, 255, 255)), ("green", (0, 128, 0)), ("F00F", (255, 0, 0))):
        response = post(fast_server, data={"bg_color": spelling, "format": "png"}, files=files)
        assert response.status_code == 200, (spelling, response.text)
        result = rgba(response.content)
        assert result[:, :, 3].min() == 255
        assert np.abs(result[:, :, :3] - composite(plain, np.array(colour))).max() <= 1, spelling
    # Semi-transparent: an 8-digit hex keeps some transparency where the cut-out had none.
    result = rgba(post(fast_server, data={"bg_color": "0000ff80"}, files=files).content)
    expected_alpha = plain[:, :, 3] + 128 * (1 - plain[:, :, 3] / 255)
    assert np.abs(result[:, :, 3] - expected_alpha).max() <= 1
    for bad in ("nocolour", "12345", "#ggg"):
        assert_error(post(fast_server, data={"bg_color": bad}, files=files), 400, "invalid_bg_color", "Invalid bg_color parameter given")


def test_bg_image_file_and_url(fast_server, image, image_host, plain):
    files = {"image_file": ("photo.png", image)}
    same_size = png_bytes(Image.new("RGB", (320, 240), (10, 200, 30)))
    by_file = post(fast_server, data={"format": "png"}, files={**files, "bg_image_file": ("bg.png", same_size)})
    by_url = post(fast_server, data={"format": "png", "bg_image_url": f"{image_host}/bg.png"}, files=files)
    for response in (by_file, by_url):
        assert response.status_code == 200, response.text
        result = rgba(response.content)
        assert np.abs(result[:, :, :3] - composite(plain, np.array((10, 200, 30)))).max() <= 1
    # A background of another shape is centred and scaled to cover: a left half red, right half blue, twice as wide.
    wide = np.zeros((240, 1280, 3), np.uint8)
    wide[:, :640] = (255, 0, 0)
    wide[:, 640:] = (0, 0, 255)
    result = rgba(post(fast_server, data={"format": "png"}, files={**files, "bg_image_file": ("w.png", png_bytes(Image.fromarray(wide)))}).content)
    transparent = plain[:, :, 3] == 0
    if transparent[:, :150].any():
        assert (result[:, :150][transparent[:, :150]] == (255, 0, 0, 255)).all()
    bad = [
        ({"bg_image_url": "ftp://x/y.png"}, {}, "invalid_bg_image_url"),
        ({"bg_image_url": f"{image_host}/missing"}, {}, "failed_bg_download"),
        ({}, {"bg_image_file": ("bg.txt", b"not an image at all")}, "failed_to_read_image"),
        ({"bg_color": "red", "bg_image_url": f"{image_host}/bg.png"}, {}, "multiple_bg_sources"),
        ({"bg_color": "red"}, {"bg_image_file": ("bg.png", same_size)}, "multiple_bg_sources"),
    ]
    for data, extra, code in bad:
        assert_error(post(fast_server, data=data, files={**files, **extra}), 400, code)


# --- crop, margins, scale, position, roi -----------------------------------------------------------------------------


def test_crop_with_every_margin_form(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    box = foreground_box(plain[:, :, 3])
    margins = {  # crop_margin -> top, right, bottom, left in pixels
        None: (0, 0, 0, 0),
        "0": (0, 0, 0, 0),
        "10px": (10, 10, 10, 10),
        "10%": (round(0.1 * box.height), round(0.1 * box.width)) * 2,
        "5px 20px": (5, 20, 5, 20),
        "1px 2px 3px 4px": (1, 2, 3, 4),
        "600px": (500, 500, 500, 500),  # at most 500 px a side
        "80%": (round(0.5 * box.height), round(0.5 * box.width)) * 2,  # at most half the subject
    }
    for margin, (top, right, bottom, left) in margins.items():
        data = {"crop": "true"} | ({"crop_margin": margin} if margin else {})
        response = post(fast_server, data=data, files=files)
        assert response.status_code == 200, (margin, response.text)
        result = rgba(response.content)
        assert result.shape[:2] == (box.height + top + bottom, box.width + left + right), margin
        inner = result[top : top + box.height, left : left + box.width]
        assert np.array_equal(inner, plain[box.top : box.top + box.height, box.left : box.left + box.width])
        headers = response.headers
        assert (int(headers["x-foreground-left"]), int(headers["x-foreground-top"])) == (left, top)
        assert (int(headers["x-foreground-width"]), int(headers["x-foreground-height"])) == (box.width, box.height)
    # Without crop, crop_margin has no effect.
    assert np.array_equal(rgba(post(fast_server, data={"crop_margin": "30px"}, files=files).content), plain)
    for bad in ("1px 2px 3px", "abc", "-5px", "10em", "1px 2px 3px 4px 5px"):
        assert_error(post(fast_server, data={"crop": "true", "crop_margin": bad}, files=files), 400, "invalid_crop_margin")
    assert_error(post(fast_server, data={"crop": "maybe"}, files=files), 400, "invalid_crop")


def test_scale_and_position(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    box = foreground_box(plain[:, :, 3])
    factor = min(0.5 * 320 / box.width, 0.5 * 240 / box.height)
    width, height = round(box.width * factor), round(box.height * factor)
    cases = {  # (scale, position) -> expected left, top
        ("50%", None): ((320 - width) // 2, (240 - height) // 2),  # scale implies center
        ("50%", "0%"): (0, 0),
        ("50%", "100% 0%"): (320 - width, 0),
        ("50%", "center"): ((320 - width) // 2, (240 - height) // 2),
    }
    for (scale, position), (left, top) in cases.items():
        data = {"scale": scale} | ({"position": position} if position else {})
        response = post(fast_server, data=data, files=files)
        assert response.status_code == 200, response.text
        result = rgba(response.content)
        assert result.shape[:2] == (240, 320)  # the canvas keeps its size
        fg = foreground_box(result[:, :, 3])
        assert abs(fg.left - left) <= 1 and abs(fg.top - top) <= 1, (scale, position, fg)
        assert abs(fg.width - width) <= 2 and abs(fg.height - height) <= 2
        assert int(response.headers["x-foreground-width"]) == fg.width
    # Position alone moves the subject at its own size; "original" leaves everything where it was.
    assert np.array_equal(rgba(post(fast_server, data={"scale": "original", "position": "original"}, files=files).content), plain)
    for name, bad in (("scale", "5%"), ("scale", "150%"), ("scale", "half"), ("position", "101%"), ("position", "1% 2% 3%"), ("position", "left")):
        assert_error(post(fast_server, data={name: bad}, files=files), 400, f"invalid_{name}")


def test_roi_keeps_only_the_region(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    for roi in ("0% 0% 50% 100%", "0px 0px 160px 240px", "0 0 50% 240px"):
        response = post(fast_server, data={"roi": roi}, files=files)
        if roi == "0 0 50% 240px":
            assert_error(response, 400, "invalid_roi", "Invalid roi parameter given")  # every value needs its unit
            continue
        result = rgba(response.content)
        assert result[:, 160:, 3].max() == 0
        assert np.array_equal(result[:, :160, 3], plain[:, :160, 3])
    # On a scaled output (preview of a larger image) the region is carried over in proportion.
    large = png_bytes(photo((1000, 750)))
    result = rgba(post(fast_server, data={"roi": "500px 0px 1000px 750px"}, files={"image_file": ("l.png", large)}).content)
    width = result.shape[1]
    assert result[:, : width // 2 - 1, 3].max() == 0 and result[:, width // 2 + 1 :, 3].max() > 0
    assert_error(post(fast_server, data={"roi": "0px 0px 400px 100px"}, files=files), 400, "roi_exceeds_bounds", "ROI exceeds image bounds")
    assert_error(post(fast_server, data={"roi": "10% 10% 10% 50%"}, files=files), 400, "roi_region_empty", "ROI region is empty")
    assert_error(post(fast_server, data={"roi": "1px 2px 3px"}, files=files), 400, "invalid_roi")


def test_an_empty_matte_is_unknown_foreground():
    options = parse_options({}, has_bg_file=False)
    result = Result(options, None, None, as_json=False, png_level=2, matte_png_level=6)
    cutout = Cutout(np.zeros((60, 80, 3), np.uint8), np.zeros((60, 80), np.uint8), "subject")
    with pytest.raises(RemoveBgError) as raised:
        result.encoder()(cutout)
    assert raised.value.status == 400 and raised.value.code == "unknown_foreground"


def test_a_webp_too_wide_for_the_format_is_a_400():
    options = parse_options({"format": "webp"}, has_bg_file=False)
    result = Result(options, None, None, as_json=False, png_level=2, matte_png_level=6)
    alpha = np.full((60, 16400), 255, np.uint8)
    with pytest.raises(RemoveBgError) as raised:
        result.encoder()(Cutout(np.zeros((60, 16400, 3), np.uint8), alpha, "subject"))
    assert raised.value.status == 400 and raised.value.code == "invalid_format"


# --- response forms and headers --------------------------------------------------------------------------------------


def test_accept_json_gives_the_result_in_base64_with_the_foreground(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    for accept in ("application/json", "application/json, image/*;q=0.5"):
        response = post(fast_server, files=files, data={"crop": "true"}, headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        data = response.json()["data"]
        result = rgba(base64.b64decode(data["result_b64"]))
        box = foreground_box(plain[:, :, 3])
        assert result.shape[:2] == (box.height, box.width)
        for name in ("top", "left", "width", "height"):
            assert data[f"foreground_{name}"] == int(response.headers[f"x-foreground-{name}"])
    # Clients that take either (an image first) get the image.
    for accept in ("image/png, application/json", "*/*", None):
        response = post(fast_server, files=files, headers={"Accept": accept} if accept else None)
        assert response.headers["content-type"] == "image/png", accept


def test_headers_and_x_type(fast_server, image, plain):
    files = {"image_file": ("photo.png", image)}
    response = post(fast_server, files=files)
    headers = response.headers
    assert headers["x-credits-charged"] == "0"
    assert (headers["x-width"], headers["x-height"]) == ("320", "240")
    box = foreground_box(plain[:, :, 3])
    assert [int(headers[f"x-foreground-{n}"]) for n in ("left", "top", "width", "height")] == [box.left, box.top, box.width, box.height]
    assert "x-type" not in headers  # a yellow disc: no person, and nothing else this service can name


def test_type_and_accepted_flags(fast_server, image):
    files = {"image_file": ("photo.png", image)}
    for name, value in (("type", "person"), ("type", "product"), ("type", "car"), ("type", "animal"), ("type_level", "2"),
                        ("type_level", "none"), ("type_level", "latest"), ("add_shadow", "true"), ("semitransparency", "false"),
                        ("shadow_method", "legacy")):
        response = post(fast_server, data={name: value}, files=files)
        assert response.status_code == 200, (name, value, response.text)
        if name == "type":
            assert response.headers["x-segment-target"] == "subject"  # a named foreground is a subject to cut out
    for name, value in (("type", "building"), ("type_level", "3"), ("add_shadow", "yes"), ("semitransparency", "2"), ("shadow_method", "new")):
        error = assert_error(post(fast_server, data={name: value}, files=files), 400, f"invalid_{name}")
        if name == "semitransparency":
            assert error["title"] == "Invalid semitransparency parameter given"
    # JSON booleans and numbers as its schema types them.
    response = post(fast_server, json_body={"image_file_b64": base64.b64encode(image).decode(), "crop": False, "type_level": 1})
    assert response.status_code == 200, response.text


def test_unknown_parameters_and_unreadable_bodies(fast_server, image):
    files = {"image_file": ("photo.png", image)}
    assert_error(post(fast_server, data={"colour": "red"}, files=files), 400, "unknown_parameter", "Unknown parameter given: colour")
    assert_error(post(fast_server, json_body={"image_file_b64": "x", "model": "u2net"}), 400, "unknown_parameter")
    with fast_server.client() as client:
        assert_error(client.post(PATH, content=b"{not json", headers={"Content-Type": "application/json"}), 400, "invalid_request_body")
        assert_error(client.post(PATH, content=b"[1, 2]", headers={"Content-Type": "application/json"}), 400, "invalid_request_body")
        assert_error(client.post(PATH, content=image, headers={"Content-Type": "image/png"}), 400, "invalid_request_body")
        assert_error(client.post(PATH), 400, "missing_source")
        broken = b"--b\r\nContent-Disposition: form-data; name=\"image_file\"\r\n\r\nabc"  # no closing boundary
        response = client.post(PATH, content=broken, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert response.status_code == 400 and response.json()["errors"][0]["code"] in ("invalid_request_body", "invalid_file_type", "missing_source")
    assert_error(post(fast_server, json_body={"image_file_b64": base64.b64encode(image).decode(), "size": ["full"]}), 400, "invalid_size")


def test_unknown_operations_answer_in_remove_bg_s_envelope(fast_server):
    with fast_server.client() as client:
        assert_error(client.get(PATH), 405, "method_not_allowed")
        assert_error(client.post("/v1.0/improve", data={"image_url": "https://example.com/a.jpg"}), 404, "not_found")


# --- input errors ----------------------------------------------------------------------------------------------------


def test_unreadable_inputs(fast_server):
    jpeg = png_bytes(photo((200, 150)), "JPEG")
    cases = [
        (jpeg[: len(jpeg) // 2], "failed_to_read_image"),  # a JPEG, cut short
        (b"%PDF-1.7 a document", "invalid_file_type"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00" + b"\x00" * 64, "invalid_file_type"),
        (b"just some text", "invalid_file_type"),
    ]
    for data, code in cases:
        error = assert_error(post(fast_server, files={"image_file": ("x", data)}), 400, code)
        if data.startswith(b"%PDF"):
            assert error["detail"].endswith("received pdf")
        if b"ftyp" in data:
            assert error["detail"].endswith("received mp4")
    error = assert_error(post(fast_server, data={"image_file_b64": "@@@not base64@@@"}), 400, "failed_to_read_image")
    assert "base64" in error["detail"]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for a header check."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_dimensions_and_resolution(fast_server):
    error = assert_error(post(fast_server, files={"image_file": ("t.png", png_bytes(photo((20, 20))))}), 400, "invalid_dimensions")
    assert error["title"] == "Failed to read image dimensions"
    error = assert_error(post(fast_server, files={"image_file": ("h.png", png_header(8000, 7000))}), 400, "resolution_too_high")
    assert error["detail"] == "Input image has 56 megapixels, maximum supported input resolution is 50 megapixels"
    assert_error(post(fast_server, files={"image_file": ("w.png", png_header(20000, 100))}), 400, "invalid_dimensions")


def test_file_too_large(fast_server):
    big = b"\xff\xd8\xff" + b"\x00" * (12 * 1024 * 1024)
    error = assert_error(post(fast_server, files={"image_file": ("big.jpg", big)}), 400, "file_too_large", "File too large")
    assert error["detail"] == "File exceeds limit of 12MB"
    assert_error(post(fast_server, data={"image_file_b64": base64.b64encode(big).decode()}), 400, "file_too_large")
    bg = post(fast_server, files={"image_file": ("a.png", png_bytes(photo())), "bg_image_file": ("bg.jpg", big)})
    assert assert_error(bg, 400, "file_too_large")["detail"] == "Background image exceeds limit of 12MB"


def test_a_body_refused_unread_is_still_answered_to_clients_that_send_it_all_first(fast_server):
    # http.client sends the whole body before reading: the answer must come after the drain, not as a reset.
    host, port = fast_server.url.removeprefix("http://").split(":")
    body = b"x" * (30 * 1024 * 1024)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", PATH, body=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    response = connection.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["errors"][0]["code"] == "file_too_large"
    connection.close()


# --- auth, account ---------------------------------------------------------------------------------------------------


def test_api_keys(keyed_server):
    files = {"image_file": ("p.png", png_bytes(photo()))}
    with keyed_server.client() as client:
        assert_error(client.post(PATH, files=files), 403, "auth_failed", "Missing API Key")
        assert_error(client.post(PATH, files=files, headers={"X-Api-Key": "wrong"}), 403, "auth_failed", "API Key invalid")
        # Azure's key header is not remove.bg's.
        assert_error(client.post(PATH, files=files, headers={"Ocp-Apim-Subscription-Key": KEYS[0]}), 403, "auth_failed")
        for key in KEYS:
            assert client.post(PATH, files=files, headers={"X-API-Key": key}).status_code == 200
        assert_error(client.get("/v1.0/account"), 403, "auth_failed")
        account = client.get("/v1.0/account", headers={"x-api-key": KEYS[1]})
    assert account.status_code == 200
    attributes = account.json()["data"]["attributes"]
    assert attributes["credits"] == {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0}
    assert attributes["api"] == {"free_calls": 2**31 - 1, "sizes": "all"}
    # Refused before its body is read, the 403 still reaches a client that sends the whole body first.
    host, port = keyed_server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", PATH, body=b"x" * (8 * 1024 * 1024), headers={"Content-Type": "multipart/form-data; boundary=b"})
    response = connection.getresponse()
    assert response.status == 403 and json.loads(response.read())["errors"][0]["code"] == "auth_failed"
    connection.close()


def test_a_full_queue_is_429_with_retry_after(weights, tmp_path):
    busy = start_server({"BGR_QUEUE_SIZE": "1", "BGR_MAX_BATCH_SIZE": "1", "BGR_RETRY_AFTER_S": "3"}, tmp_path / "busy.log")
    data = png_bytes(photo((640, 480)))
    try:
        def one(_):
            with busy.client() as client:
                return client.post(PATH, files={"image_file": ("p.png", data)}, data={"channels": "alpha"})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(8)))
    finally:
        stop_server(busy)
    assert {r.status_code for r in responses} == {200, 429}, [r.status_code for r in responses]
    limited = next(r for r in responses if r.status_code == 429)
    assert_error(limited, 429, "rate_limit_exceeded", "Rate limit exceeded")
    assert limited.headers["retry-after"] == "3"


# --- the real client library -----------------------------------------------------------------------------------------


def test_the_removebg_client_library_against_the_service(fast_server, image, image_host, plain, tmp_path, monkeypatch):
    from removebg import RemoveBg
    from removebg import removebg as client_module

    # The library has no base-URL option: its endpoint is a module constant, read at each call.
    monkeypatch.setattr(client_module, "API_ENDPOINT", f"{fast_server.url}{PATH}")
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "photo.png"
    source.write_bytes(image)
    client = RemoveBg("any-key-the-open-server-accepts", str(tmp_path / "error.log"))

    client.remove_background_from_img_file(str(source))  # size="regular", as the library sends by default
    assert np.array_equal(rgba((tmp_path / "photo.png_no_bg.png").read_bytes()), plain)
    client.remove_background_from_img_url(f"{image_host}/photo.png", new_file_name=str(tmp_path / "by-url.png"))
    assert np.array_equal(rgba((tmp_path / "by-url.png").read_bytes()), plain)
    client.remove_background_from_base64_img(base64.b64encode(image).decode(), new_file_name=str(tmp_path / "by-b64.png"))
    assert np.array_equal(rgba((tmp_path / "by-b64.png").read_bytes()), plain)
    # With its options: a size and a background colour (the result is then opaque: format auto gives a JPEG).
    client.remove_background_from_base64_img(base64.b64encode(image).decode(), size="hd", bg_color="green", new_file_name=str(tmp_path / "green"))
    green = decode((tmp_path / "green").read_bytes())
    assert green.format == "JPEG" and green.size == (320, 240)
    assert np.abs(np.asarray(green, float) - composite(plain, np.array((0, 128, 0)))).mean() < 3


def test_the_client_library_sees_remove_bg_errors(keyed_server, tmp_path, monkeypatch):
    import requests
    from removebg import RemoveBg
    from removebg import removebg as client_module

    monkeypatch.setattr(client_module, "API_ENDPOINT", f"{keyed_server.url}{PATH}")
    source = tmp_path / "photo.png"
    source.write_bytes(png_bytes(photo()))
    with pytest.raises(requests.HTTPError) as raised:
        RemoveBg("wrong-key", str(tmp_path / "error.log")).remove_background_from_img_file(str(source))
    assert raised.value.response.status_code == 403
    assert raised.value.response.json()["errors"][0]["title"] == "API Key invalid"


def test_answers_under_v1_carry_a_request_id_but_not_azures_headers(fast_server):
    with fast_server.client() as client:
        answers = (client.get("/v1.0/account"), client.get("/v1.0/nothing-here"), client.get(PATH))
    assert [answer.status_code for answer in answers] == [200, 404, 405]
    for answer in answers:
        assert answer.headers["request-id"]
        assert "apim-request-id" not in answer.headers and "api-supported-versions" not in answer.headers


# --- schemathesis ----------------------------------------------------------------------------------------------------


def test_schemathesis_against_the_remove_bg_paths(keyed_server):
    # unsupported_method: Starlette's 405 for GET on an operation that is POST, in remove.bg's envelope, not in its spec.
    # positive_data_acceptance: schema-valid bodies mostly have no image (or text that is not one), so 400 is right.
    for path in ("/v1.0/removebg", "/v1.0/account"):
        run_schemathesis(keyed_server, path, f"X-Api-Key: {KEYS[0]}", "unsupported_method,positive_data_acceptance", 60)


# --- full resolution: the same matte as Azure's endpoint -------------------------------------------------------------


@pytest.fixture(scope="module")
def observed() -> Path:
    return require_shared(AZURE_SPEC / "observed-outputs")


def test_mattes_are_azures_for_the_same_photo_at_full_resolution(server, observed):
    face, building = observed / "input_face.jpeg", observed / "input_building.jpg"
    with server.client() as client:
        for photo_path in (face, building):
            data = photo_path.read_bytes()
            azure = client.post(SEGMENT, params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}, content=data)
            ours = client.post(PATH, files={"image_file": (photo_path.name, data)}, data={"size": "full", "channels": "alpha"})
            assert azure.status_code == 200 and ours.status_code == 200, ours.text
            azure_alpha = np.asarray(decode(azure.content))[:, :, 3].astype(int)
            matte = np.asarray(decode(ours.content)).astype(int)
            assert matte.shape == azure_alpha.shape
            assert np.abs(matte - azure_alpha).max() <= 1, photo_path.name
            assert ours.headers["x-segment-target"] == azure.headers["x-segment-target"]
            if photo_path == face:
                assert ours.headers["x-type"] == "person"
        # type names a foreground, so the building is cut out as a subject rather than kept as a scene.
        product = client.post(
            PATH, files={"image_file": ("b.jpg", building.read_bytes())}, data={"size": "full", "type": "product", "type_level": "none"}
        )
    assert product.headers["x-segment-target"] == "subject"
    assert "x-type" not in product.headers  # type_level=none: no classification asked
