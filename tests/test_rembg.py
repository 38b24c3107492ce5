"""rembg's server API (app/http/rembg/routes.py) as its users call it: the README's curl lines, Python ``requests``, and a row
for every parameter, against a real service process on loopback with the real model (at a 64-pixel input)."""

from __future__ import annotations

import io
import shutil
import subprocess
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import KEYS, SEGMENT, photo, png_bytes, run_schemathesis, loopback_http
from app.imaging.output import fill_colour

REMOVE = "/api/remove"
AZURE = {"api-version": "2023-04-01-preview"}


@pytest.fixture(scope="module")
def input_jpg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rembg") / "input.jpg"
    photo((180, 120)).save(path, "JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def image_host(input_jpg: Path):
    """A plain HTTP server on loopback serving input.jpg, for ``?url=``."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(input_jpg.parent), **kwargs)

    with loopback_http(Handler) as url:
        yield url


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def azure(server, data: bytes, mode: str = "backgroundRemoval", **params) -> bytes:
    response = requests.post(server.url + SEGMENT, params={**AZURE, "mode": mode, **params}, data=data, timeout=120)
    assert response.status_code == 200, response.text
    return response.content


def post(server, data: bytes, form: dict | None = None, params: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(server.url + REMOVE, files={"file": ("input.jpg", data, "image/jpeg")}, data=form, params=params, timeout=120, **kwargs)


def detail(response: requests.Response, status: int):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["detail"]


# --- the calls rembg's README shows ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_upload(fast_server, input_jpg, tmp_path):
    """curl -s -F file=@/path/to/input.jpg "http://localhost:7000/api/remove" -o output.png"""
    output = tmp_path / "output.png"
    subprocess.run(["curl", "-s", "-F", f"file=@{input_jpg}", f"{fast_server.url}/api/remove", "-o", str(output)], check=True, timeout=120)
    cut = pixels(output.read_bytes())
    assert cut.shape == (120, 180, 4)
    # The same pipeline as Azure's backgroundRemoval: the same cut-out.
    assert (cut == pixels(azure(fast_server, input_jpg.read_bytes()))).all()
    assert int(cut[..., 3].max()) - int(cut[..., 3].min()) > 200  # a cut-out, not the photo: some kept, some dropped


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_url(fast_server, image_host, input_jpg, tmp_path):
    """curl -s "http://localhost:7000/api/remove?url=http://input.png" -o output.png"""
    output = tmp_path / "output.png"
    url = f"{fast_server.url}/api/remove?url={image_host}/input.jpg"
    subprocess.run(["curl", "-s", url, "-o", str(output)], check=True, timeout=120)
    assert (pixels(output.read_bytes()) == pixels(azure(fast_server, input_jpg.read_bytes()))).all()


def test_requests_upload_and_url(fast_server, image_host, input_jpg):
    with input_jpg.open("rb") as file:
        uploaded = requests.post(f"{fast_server.url}/api/remove", files={"file": file}, timeout=120)
    fetched = requests.get(f"{fast_server.url}/api/remove", params={"url": f"{image_host}/input.jpg"}, timeout=120)
    for response in (uploaded, fetched):
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert (pixels(uploaded.content) == pixels(fetched.content)).all()


def test_requests_with_options_in_the_form(fast_server, input_jpg):
    with input_jpg.open("rb") as file:
        response = requests.post(f"{fast_server.url}/api/remove", files={"file": file}, data={"om": "true", "model": "isnet-general-use"}, timeout=120)
    assert response.status_code == 200
    assert (pixels(response.content) == pixels(azure(fast_server, input_jpg.read_bytes(), "foregroundMatting"))).all()


# --- one row per parameter ------------------------------------------------------------------------------------


def test_model_names_a_loaded_network(fast_server, input_jpg):
    data = input_jpg.read_bytes()
    assert (pixels(post(fast_server, data, {"model": "isnet-general-use"}).content) == pixels(azure(fast_server, data))).all()


@pytest.mark.parametrize("name", ["u2net", "no-such-network"])
def test_a_model_not_loaded_is_a_422_naming_the_loaded_ones(fast_server, input_jpg, name):
    """u2net is rembg's default and in the catalogue, but this server has not loaded it."""
    for response, source in (
        (post(fast_server, input_jpg.read_bytes(), {"model": name}), "body"),
        (requests.get(fast_server.url + REMOVE, params={"url": "http://127.0.0.1/x.jpg", "model": name}, timeout=60), "query"),
    ):
        [problem] = detail(response, 422)
        assert problem["type"] == "literal_error" and problem["loc"] == [source, "model"] and problem["input"] == name
        assert "'isnet-general-use'" in problem["msg"] and "loaded" in problem["msg"]


def test_om_returns_the_matte_and_ignores_bgc(fast_server, input_jpg):
    data = input_jpg.read_bytes()
    matte = pixels(azure(fast_server, data, "foregroundMatting"))
    for form, params in (({"om": "true"}, None), (None, {"om": "1"}), ({"om": "yes"}, {"bgc": "255,255,255,255"})):
        mask = pixels(post(fast_server, data, form, params).content)
        assert mask.shape == (120, 180) and (mask == matte).all()


@pytest.mark.parametrize("flag", ["false", "0", "no", "off", "False"])
def test_false_spellings_are_false(fast_server, input_jpg, flag):
    data = input_jpg.read_bytes()
    assert pixels(post(fast_server, data, {"om": flag, "ppm": flag}).content).ndim == 3


@pytest.mark.parametrize(
    "bgc, colour",
    [("255,255,255,255", (255, 255, 255, 255)), ("0,0,255,128", (0, 0, 255, 128)), ("10,200,30", (10, 200, 30, 255)),
     ("#ff000080", (255, 0, 0, 128)), ("green", (0, 128, 0, 255))],
)
def test_bgc_composites_over_the_colour(fast_server, input_jpg, bgc, colour):
    """rembg's r,g,b,a (from the query, as its server reads it on POST too), and hex or names beyond rembg."""
    data = input_jpg.read_bytes()
    cut = pixels(azure(fast_server, data))
    want_rgb, want_alpha = fill_colour(np.ascontiguousarray(cut[..., :3]), np.ascontiguousarray(cut[..., 3]), colour)
    for response in (post(fast_server, data, params={"bgc": bgc}), post(fast_server, data, form={"bgc": bgc})):
        got = pixels(response.content)
        assert got.shape == (120, 180, 4)
        assert (got[..., 3] == want_alpha).all()
        seen = want_alpha > 0
        assert (got[..., :3][seen] == want_rgb[seen]).all()
    if colour[3] == 255:
        assert (got[..., 3] == 255).all()


def test_bgc_over_a_url_image(fast_server, image_host):
    response = requests.get(fast_server.url + REMOVE, params={"url": f"{image_host}/input.jpg", "bgc": "0,0,0,255"}, timeout=120)
    assert (pixels(response.content)[..., 3] == 255).all()


@pytest.mark.parametrize("bgc", ["1,2", "1,2,3,4,5", "256,0,0,255", "-1,0,0,255", "a,b,c,d", "notacolour", "#12345"])
def test_a_bad_bgc_is_a_422_not_rembgs_500(fast_server, input_jpg, bgc):
    [problem] = detail(post(fast_server, input_jpg.read_bytes(), params={"bgc": bgc}), 422)
    assert problem["type"] == "value_error" and problem["loc"] == ["query", "bgc"] and problem["input"] == bgc


@pytest.fixture(scope="module")
def subject_server(weights, tmp_path_factory):
    """FAST with every photo taken for a subject: the 64-pixel sky network takes the small test photo for a scene,
    whose matte the matting stage leaves alone."""
    from conftest import FAST, start_server, stop_server

    running = start_server({**FAST, "BGR_TARGET": "subject"}, tmp_path_factory.mktemp("subject") / "server.log")
    yield running
    stop_server(running)


def test_a_is_the_matting_stage_with_the_foregrounds_colours(subject_server, input_jpg):
    """a=true: rembg's alpha matting re-solves the matte and estimates the soft edge's colours: here the matting stage
    (refine=true) with decontaminate=true; a=false neither. af, ab and ae are checked, not used."""
    fast_server = subject_server
    data = input_jpg.read_bytes()
    plain = pixels(post(fast_server, data, {"a": "false"}).content)
    matted = pixels(post(fast_server, data, {"a": "true", "af": "200", "ab": "20", "ae": "5"}).content)
    assert (matted == pixels(azure(fast_server, data, refine="true", decontaminate="true"))).all()
    assert (plain == pixels(azure(fast_server, data, refine="false", decontaminate="false"))).all()
    assert (matted[..., 3] != plain[..., 3]).any()  # the matte re-solved
    # Opaque and transparent pixels keep the photo's colour; only the soft edge's are estimated.
    settled = ((plain[..., 3] == 255) & (matted[..., 3] == 255)) | ((plain[..., 3] == 0) & (matted[..., 3] == 0))
    assert settled.any() and (matted[..., :3][settled] == plain[..., :3][settled]).all()


@pytest.mark.parametrize(
    "name, value, kind, context",
    [
        ("af", "256", "less_than_equal", {"le": 255}),
        ("af", "-1", "greater_than_equal", {"ge": 0}),
        ("ab", "300", "less_than_equal", {"le": 255}),
        ("ae", "-5", "greater_than_equal", {"ge": 0}),
        ("af", "ten", "int_parsing", None),
        ("a", "maybe", "bool_parsing", None),
        ("om", "2", "bool_parsing", None),
        ("ppm", "yess", "bool_parsing", None),
    ],
)
def test_bad_values_are_fastapis_422(fast_server, input_jpg, name, value, kind, context):
    [problem] = detail(post(fast_server, input_jpg.read_bytes(), {name: value}), 422)
    assert problem["type"] == kind and problem["loc"] == ["body", name] and problem["input"] == value
    assert problem.get("ctx") == context and problem["msg"].startswith("Input should be")


def test_every_problem_is_listed_at_once(fast_server):
    problems = detail(requests.get(fast_server.url + REMOVE, params={"af": "x", "ab": "999", "bgc": "1"}, timeout=60), 422)
    assert [p["loc"] for p in problems] == [["query", "url"], ["query", "af"], ["query", "ab"], ["query", "bgc"]]
    assert problems[0] == {"type": "missing", "loc": ["query", "url"], "msg": "Field required", "input": None}


def test_accepted_and_ignored_parameters_change_nothing(fast_server, input_jpg):
    """af, ab, ae without a; ppm; extras (even not JSON, which rembg also lets pass)."""
    data = input_jpg.read_bytes()
    plain = pixels(post(fast_server, data).content)
    form = {"af": "100", "ab": "100", "ae": "0", "ppm": "true"}
    assert (pixels(post(fast_server, data, form, params={"extras": '{"sam_prompt": []}'}).content) == plain).all()
    assert (pixels(post(fast_server, data, params={"extras": "{not json"}).content) == plain).all()


def test_post_reads_options_from_the_query_as_older_servers_did_and_the_form_wins(fast_server, input_jpg):
    data = input_jpg.read_bytes()
    assert pixels(post(fast_server, data, params={"om": "true"}).content).ndim == 2
    assert pixels(post(fast_server, data, {"om": "false"}, params={"om": "true"}).content).ndim == 3


# --- errors ---------------------------------------------------------------------------------------------------


def test_post_without_a_file_is_422(fast_server):
    expected = [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}]
    assert detail(requests.post(fast_server.url + REMOVE, data={"om": "true"}, timeout=60), 422) == expected
    assert detail(requests.post(fast_server.url + REMOVE, data=b"\xff\xd8", headers={"Content-Type": "image/jpeg"}, timeout=60), 422) == expected
    assert detail(requests.post(fast_server.url + REMOVE, files={"image": b"x"}, timeout=60), 422) == expected


@pytest.mark.parametrize(
    "data, status, words",
    [(b"", 400, "empty"), (b"not an image", 400, "not an image"), (None, 400, "50 to 16000")],
)
def test_bad_files_are_4xx_with_a_detail(fast_server, data, status, words):
    if data is None:
        data = png_bytes(Image.new("RGB", (40, 40)))
    assert words in detail(post(fast_server, data), status)


def test_a_body_over_the_limit_is_413(fast_server):
    assert "at most" in detail(post(fast_server, b"\0" * (20_971_520 + 70_000)), 413)


def test_a_malformed_multipart_body_is_400(fast_server):
    response = requests.post(
        fast_server.url + REMOVE, data=b"--b\r\nno headers", headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60
    )
    assert detail(response, 400) == "There was an error parsing the body"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/none.jpg", "http://10.0.0.1/x.jpg", "file:///etc/passwd", "not a url", ""])
def test_an_inaccessible_url_is_400(fast_server, url):
    response = requests.get(fast_server.url + REMOVE, params={"url": url}, timeout=60)
    assert detail(response, 400) == "The image URL is not accessible."


def test_a_url_that_is_not_an_image_is_400(fast_server, image_host):
    response = requests.get(fast_server.url + REMOVE, params={"url": f"{image_host}/"}, timeout=60)  # a directory listing
    assert "not an image" in detail(response, 400)


def test_other_methods_are_405(fast_server):
    response = requests.put(fast_server.url + REMOVE, data=b"x", timeout=60)
    assert detail(response, 405) == "Method Not Allowed"
    assert response.headers["allow"] == "GET, POST"


def test_answers_carry_a_request_id_but_not_azures_headers(fast_server, input_jpg):
    for response in (post(fast_server, input_jpg.read_bytes()), post(fast_server, b"junk")):
        assert response.headers["request-id"]
        assert "apim-request-id" not in response.headers and "api-supported-versions" not in response.headers


# --- keys -----------------------------------------------------------------------------------------------------


def test_keys_are_required_when_the_service_has_them(keyed_server, input_jpg):
    data = input_jpg.read_bytes()
    missing = post(keyed_server, data)
    assert detail(missing, 401) == "Not authenticated" and missing.headers["www-authenticate"] == "APIKey"
    assert detail(post(keyed_server, data, headers={"X-Api-Key": "wrong"}), 401) == "Invalid API key"
    assert detail(requests.get(keyed_server.url + REMOVE, params={"url": "http://x/", "api_key": "wrong"}, timeout=60), 401) == "Invalid API key"
    # Azure's key header is Azure's: rembg's route reads its own.
    assert post(keyed_server, data, headers={"Ocp-Apim-Subscription-Key": KEYS[0]}).status_code == 401
    assert post(keyed_server, data, headers={"X-Api-Key": KEYS[0]}).status_code == 200
    assert post(keyed_server, data, params={"api_key": KEYS[1]}).status_code == 200


# --- schemathesis ---------------------------------------------------------------------------------------------


def test_schemathesis_over_rembgs_paths(keyed_server):
    """Every generated request, valid or not, gets a documented answer in FastAPI's shape, never a 500."""
    # positive_data_acceptance: schema-valid values are mostly not images, URLs or loaded models, so 4xx is right.
    run_schemathesis(keyed_server, REMOVE, f"X-Api-Key: {KEYS[0]}", "positive_data_acceptance", 60)


def test_a_bug_is_rembgs_bare_500_with_the_request_id(input_jpg, monkeypatch):
    """An exception no handler expects gets what rembg's server (Starlette) answers, through every middleware."""
    from fastapi.testclient import TestClient

    from app.inference.engine import MattingEngine
    from app.main import create_app
    from app.service import SegmentService
    from app.settings import Settings
    from conftest import WEIGHTS

    async def segment_with_a_bug(self, *args, **kwargs):
        raise KeyError("a bug")

    settings = Settings(weights=WEIGHTS, device="cpu", resolution=64)
    monkeypatch.setattr(SegmentService, "segment", segment_with_a_bug)
    with TestClient(create_app(settings, engine=MattingEngine.from_settings(settings)), raise_server_exceptions=False) as client:
        failed = client.post(REMOVE, files={"file": ("input.jpg", input_jpg.read_bytes())}, headers={"Origin": "https://app.example"})
        assert (failed.status_code, failed.text, failed.headers["content-type"]) == (500, "Internal Server Error", "text/plain; charset=utf-8")
        assert failed.headers["request-id"] and failed.headers["access-control-allow-origin"] == "*"
        assert 'bgremoval_rejected_total{api="rembg",reason="internal"} 1.0' in client.get("/metrics").text
