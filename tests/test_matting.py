"""The matting stage (app/inference/matting.py): on synthetic photos of known alpha, in the service, and on real portraits."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from app.imaging.decode import decode_image
from app.imaging.png import iter_matte_png, iter_rgba_png
from app.inference.matting import DEFAULT_PARAMS, refine_matte, solve_band, worth_refining
from app.inference.pipeline import matte_at_size, model_input
from conftest import SEGMENT, png_bytes, require_shared

ROOT = Path(__file__).resolve().parents[1]


def strands(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A known soft alpha: a disc with a soft rim and thin strands (1-3 pixels, partly transparent) leaving it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx, radius = height / 2, width / 2, min(width, height) / 3
    distance = np.hypot(y - cy, x - cx)
    alpha = np.clip((radius - distance) / 6 + 0.5, 0, 1)
    for _ in range(120):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.15, 0.45) * radius
        thickness = rng.uniform(0.6, 1.6)
        opacity = rng.uniform(0.5, 1.0)
        start = radius - 5
        along = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        across = np.abs(-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle))
        bend = 0.002 * (along - start) ** 2 * rng.uniform(-1, 1)
        on = (along > start) & (along < start + length)
        strand = np.clip(thickness - np.abs(across - bend), 0, 1) * opacity * on
        alpha = np.maximum(alpha, strand)
    return alpha


def composite(alpha: np.ndarray, seed: int = 0) -> np.ndarray:
    """A photo of ``alpha``: a warm, slightly textured foreground over a cool gradient background."""
    rng = np.random.default_rng(seed)
    height, width = alpha.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    foreground = np.stack([190 + 20 * np.sin(x / 37), 120 + 10 * np.cos(y / 23), 60 + 0 * x], -1)
    background = np.stack([40 + 30 * x / width, 90 + 40 * y / height, 170 + 0 * x], -1)
    image = alpha[..., None] * foreground + (1 - alpha[..., None]) * background + rng.normal(0, 2, (height, width, 1))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def network_like(alpha: np.ndarray, side: int = 1024) -> np.ndarray:
    """What a network at ``side`` x ``side`` sees of ``alpha``: box-reduced to its square input, then blurred a little."""
    small = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).resize((side, side), Image.BOX), dtype=np.float32) / 255
    blurred = np.asarray(Image.fromarray(small, mode="F").resize((side // 2, side // 2), Image.BILINEAR).resize((side, side), Image.BILINEAR))
    return np.clip(blurred, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic():
    alpha = strands(2400, 1600)
    rgb = composite(alpha)
    matte = network_like(alpha)
    return rgb, alpha, matte, matte_at_size(matte, 2400, 1600)


def test_the_stage_recovers_a_soft_matte_the_scaled_up_one_loses(synthetic):
    rgb, alpha, matte, base = synthetic
    refined = refine_matte(rgb, matte, base)
    assert refined.dtype == np.uint8 and refined.shape == alpha.shape
    soft = (alpha > 0.03) & (alpha < 0.97)

    def errors(prediction: np.ndarray) -> tuple[float, float]:
        difference = np.abs(prediction.astype(np.float32) / 255 - alpha)
        return float(difference.mean()), float(difference[soft].mean())

    (base_mae, base_soft), (mae, soft_error) = errors(base), errors(refined)
    assert mae < 0.6 * base_mae and soft_error < 0.85 * base_soft, (base_mae, mae, base_soft, soft_error)


def test_only_the_band_is_solved_and_a_flat_matte_comes_back_as_it_was(synthetic):
    rgb, alpha, matte, base = synthetic
    refined = refine_matte(rgb, matte, base)
    # The band: the unsure matte at the working size (4 times smaller here), widened by DEFAULT_PARAMS.band network
    # pixels, then a working pixel of feathering and a bilinear sample's reach.
    work = (600, 400)
    unsure = Image.fromarray(((matte > DEFAULT_PARAMS.low) & (matte < DEFAULT_PARAMS.high)).astype(np.uint8) * 255).resize(work, Image.BILINEAR)
    reach = round(DEFAULT_PARAMS.band * 600 / 1024) + 3
    grown = unsure.filter(ImageFilter.MaxFilter(2 * reach + 1))
    far = np.asarray(grown.resize((2400, 1600), Image.NEAREST)) == 0
    assert far.mean() > 0.5
    # Off the band the matte is certain (under 0.05 or over 0.95), and certain regions become exactly 0 or 255.
    assert ((base[far] <= 12) | (base[far] >= 243)).all()
    assert (refined[far] == np.where(base[far] >= 128, 255, 0)).all()
    assert (refined != base)[~far].any()

    for level in (0.0, 1.0):  # no edge: nothing to solve
        flat = np.full_like(matte, level)
        flat_base = matte_at_size(flat, 2400, 1600)
        assert (refine_matte(rgb, flat, flat_base) == flat_base).all()


def test_the_solvers_second_target_pulls_by_its_confidence(synthetic):
    """solve_band's optional data term (bench/refine_ceiling.py's sampling term): no confidence changes nothing, an
    overwhelming one gives its target on the band, and the prior stays off the band either way."""
    import torch

    rgb, alpha, matte, base = synthetic
    image = torch.from_numpy(rgb[::8, ::8].astype(np.float32) / 255).permute(2, 0, 1)[None]
    prior = torch.from_numpy(network_like(alpha[::8, ::8], 100))[None, None]
    prior = torch.nn.functional.interpolate(prior, size=image.shape[2:], mode="bilinear", align_corners=False)
    band = ((prior > 0.05) & (prior < 0.95))[0, 0]
    target = torch.full_like(prior, 0.25)
    plain = solve_band(image, prior, band, DEFAULT_PARAMS)
    assert torch.equal(solve_band(image, prior, band, DEFAULT_PARAMS, data=(target, torch.zeros_like(prior))), plain)
    pulled = solve_band(image, prior, band, DEFAULT_PARAMS, data=(target, torch.full_like(prior, 100.0)))
    assert torch.equal(pulled[0, 0][~band], prior[0, 0][~band])
    assert (pulled[0, 0][band] - 0.25).abs().mean() < 0.01  # the band's rim still feels the fixed prior beside it
    halfway = solve_band(image, prior, band, DEFAULT_PARAMS, data=(target, torch.full_like(prior, 3e-3)))
    distance = lambda a: float((a[0, 0][band] - 0.25).abs().mean())  # noqa: E731
    assert distance(pulled) < distance(halfway) < distance(plain)


@pytest.mark.parametrize("size", [(57, 50), (301, 999), (1500, 7)])
def test_odd_and_tiny_sizes(size):
    width, height = size
    alpha = strands(width, height, seed=1)
    rgb = composite(alpha, seed=1)
    out = refine_matte(rgb, network_like(alpha, 64))
    assert out.shape == (height, width) and out.dtype == np.uint8


def test_a_matte_unsure_everywhere_is_solved_at_a_coarser_size():
    """The stage's cost follows its band; a band over MattingParams.max_band_pixels (a texture, a coarse network) is
    solved at a coarser working size, so no photo costs more than a band of that size."""
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    unsure = np.full((64, 64), 0.5, dtype=np.float32)
    seen: list[tuple[int, int]] = []

    def recording(image, prior, band, params):
        seen.append((int(band.sum()), image.shape[2] * image.shape[3]))
        return prior

    for cap in (10**9, 20_000):
        out = refine_matte(noise, unsure, params=replace(DEFAULT_PARAMS, max_band_pixels=cap), solve=recording)
        assert out.shape == (900, 1200)
    (whole, work), (capped, coarser) = seen
    assert whole == work > 100_000  # the band is the whole working image
    assert capped == coarser and capped <= 20_000


def test_auto_refines_large_photos_with_an_unsure_band(synthetic):
    _, _, matte, _ = synthetic
    network = matte.size
    assert worth_refining(2400, 1600, network, matte)
    assert not worth_refining(1000, 1000, network, matte)  # no larger than the network's input: it saw every pixel
    assert not worth_refining(4000, 3000, network, (matte > 0.5).astype(np.float32))  # a hard matte: nothing to re-solve
    assert worth_refining(1025, 1024, 1024 * 1024) and not worth_refining(1024, 1024, 1024 * 1024)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_matting import composite, network_like, strands
    from app.inference.matting import refine_matte
    from app.inference.pipeline import matte_at_size

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    width, height = 6000, 4000
    small = strands(1500, 1000)
    matte = network_like(small)
    rgb = np.asarray(Image.fromarray(composite(small)).resize((width, height)))
    base = matte_at_size(matte, width, height)
    refine_matte(rgb[:1000, :1500], matte)  # torch's and the allocator's one-off set-up, not the photo's
    open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
    before = status("VmRSS:")
    out = refine_matte(rgb, matte, base)
    print(json.dumps({{"peak_growth": status("VmHWM:") - before, "changed": int((out != base).sum())}}))
    """
)


def test_a_24_megapixel_photo_stays_inside_the_pixel_budgets_accounting():
    """BGR_MAX_PIXELS_IN_FLIGHT counts about 12 bytes a pixel at peak, the photo (3) and the matte (1) among them. The
    stage adds its own alpha (1) and little more: it works at a fixed size and takes the photo in chunks (measured:
    1.6 bytes a pixel)."""
    script = MEMORY_PROBE.format(root=str(ROOT), tests=str(ROOT / "tests"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    pixels = 6000 * 4000
    assert measured["changed"] > 0
    assert measured["peak_growth"] < 2 * pixels, measured  # bytes


def _service(engine, refine: str):
    from app.inference.batcher import Batcher
    from app.pixel_budget import PixelBudget
    from app.service import Lane, SegmentService

    batcher = Batcher(engine.analyse, 1, 0.0, 4)
    service = SegmentService({engine.name: Lane(batcher, engine.resolution)}, engine.name, 1, PixelBudget(10**8), 2, 6, 1, refine=refine)
    return service, batcher


def _run(engine, refine_setting: str, data: bytes, mode: str, refine: str | None = None) -> bytes:
    async def scenario() -> bytes:
        service, batcher = _service(engine, refine_setting)
        await batcher.start()
        try:
            stream = await service.segment(data, mode, refine=refine)  # type: ignore[arg-type]
            try:
                return b"".join(stream.chunks)
            finally:
                stream.close()
        finally:
            await batcher.stop()

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def large_photo() -> bytes:
    alpha = strands(1920, 1280, seed=3)
    return png_bytes(Image.fromarray(composite(alpha, seed=3)))


def test_off_gives_todays_bytes(engine, large_photo):
    """refine off (the setting, or the request) is the pipeline as it was before the stage: byte for byte."""
    rgb = decode_image(large_photo).rgb
    matte = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0].matte
    cutout = b"".join(iter_rgba_png(rgb, matte_at_size(matte, 1920, 1280), 2))
    small = decode_image(large_photo, (engine.resolution, engine.resolution)).rgb
    small_matte = engine.analyse(model_input(small, engine.resolution, engine.input_filter)[None])[0].matte
    matte_png = b"".join(iter_matte_png(matte_at_size(small_matte, 1920, 1280), 6))
    assert _run(engine, "off", large_photo, "backgroundRemoval") == cutout
    assert _run(engine, "auto", large_photo, "backgroundRemoval", refine="off") == cutout
    assert _run(engine, "off", large_photo, "foregroundMatting") == matte_png
    assert _run(engine, "on", large_photo, "foregroundMatting", refine="off") == matte_png
    refined = _run(engine, "off", large_photo, "backgroundRemoval", refine="on")
    assert refined != cutout  # the test can fail: the stage changes this photo's cut-out
    with Image.open(io.BytesIO(refined)) as image:
        assert image.size == (1920, 1280) and image.mode == "RGBA"


QUALITY_PHOTOS = 4


@pytest.mark.slow
def test_the_stage_gains_on_real_portraits(engine):
    """On the smallest high-resolution portraits of ../shared/evaldata-hires, with the real network: soft-band error and
    gradient error down, MAE not up (bench/quality.py --refine measures all 40)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from hires import HIRES_MANIFEST, load_truth, read_pairs

    from app.quality import grad_error, mae, soft_band_error

    require_shared(HIRES_MANIFEST)
    pairs = sorted(read_pairs(), key=lambda pair: pair.megapixels)[:QUALITY_PHOTOS]
    before, after = [], []
    for pair in pairs:
        rgb = decode_image(pair.image.read_bytes()).rgb
        matte = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0].matte
        truth = load_truth(pair.gt)
        base = matte_at_size(matte, pair.width, pair.height)
        for out, alpha in ((before, base), (after, refine_matte(rgb, matte, base))):
            prediction = alpha.astype(np.float32) / 255
            out.append((mae(prediction, truth), soft_band_error(prediction, truth), grad_error(prediction, truth)))
    before_mean, after_mean = np.mean(before, 0), np.mean(after, 0)
    assert after_mean[0] <= before_mean[0] * 1.02, (before_mean, after_mean)
    assert after_mean[1] < before_mean[1] * 0.9, (before_mean, after_mean)
    assert after_mean[2] < before_mean[2], (before_mean, after_mean)


# --- through the APIs, on a real server ---------------------------------------------------------------------------------
# The real network at a 64-pixel input (conftest.FAST) with BGR_REFINE at its default, auto: the mattes are coarse and
# unsure along the whole outline, and every photo is larger than the network's input, so every photo is refined.


@pytest.fixture(scope="module")
def refining_server(weights, tmp_path_factory):
    from conftest import FAST, start_server, stop_server

    running = start_server({**FAST, "BGR_REFINE": "auto"}, tmp_path_factory.mktemp("refining") / "server.log")
    yield running
    stop_server(running)


AZURE = {"api-version": "2023-02-01-preview"}


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    alpha = strands(1800, 1200, seed=4)
    return png_bytes(Image.fromarray(composite(alpha, seed=4)), "JPEG", quality=92)


def azure(server, data: bytes, mode: str = "backgroundRemoval", **params: str):
    with server.client() as client:
        return client.post(SEGMENT, params={**AZURE, "mode": mode, **params}, content=data, headers={"Content-Type": "application/octet-stream"})


def rgba(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def test_azures_refine_parameter(refining_server, large_jpeg):
    refined, plain, auto, absent = (azure(refining_server, large_jpeg, **params) for params in
                                    ({"refine": "true"}, {"refine": "FALSE"}, {"refine": "auto"}, {}))
    assert all(r.status_code == 200 for r in (refined, plain, auto, absent))
    assert [r.headers["x-segment-refined"] for r in (refined, plain, auto, absent)] == ["true", "false", "true", "true"]
    assert auto.content == absent.content == refined.content  # the server's default is auto, and this photo qualifies
    assert rgba(refined.content)[..., 3].tolist() != rgba(plain.content)[..., 3].tolist()
    # A refined cut-out gets the foreground's colours in its soft edge unless the request says otherwise.
    assert azure(refining_server, large_jpeg, refine="true", decontaminate="true").content == refined.content
    kept = rgba(azure(refining_server, large_jpeg, refine="true", decontaminate="false").content)
    assert (kept[..., 3] == rgba(refined.content)[..., 3]).all() and (kept[..., :3] == rgba(plain.content)[..., :3]).all()
    matte = azure(refining_server, large_jpeg, "foregroundMatting", refine="true")
    assert (rgba(matte.content) == rgba(refined.content)[..., 3]).all()
    for bad in ("yes", "1", "on", ""):
        response = azure(refining_server, large_jpeg, refine=bad)
        assert response.status_code == 400, bad
        assert response.json() == {"error": {"code": "InvalidRequest", "message": "Value for refine is invalid. Use true, false or auto."}}


def test_rembgs_alpha_matting_is_the_stage_with_the_foregrounds_colours(refining_server, large_jpeg):
    import requests

    def remove(**params: str) -> np.ndarray:
        response = requests.post(refining_server.url + "/api/remove", files={"file": ("a.jpg", large_jpeg, "image/jpeg")}, params=params, timeout=300)
        assert response.status_code == 200, response.text
        return rgba(response.content)

    assert (remove(a="true") == rgba(azure(refining_server, large_jpeg, refine="true", decontaminate="true").content)).all()
    assert (remove(a="false") == rgba(azure(refining_server, large_jpeg, refine="false", decontaminate="false").content)).all()
    assert (remove(a="true", om="true") == rgba(azure(refining_server, large_jpeg, "foregroundMatting", refine="true").content)).all()


def test_remove_bgs_default_path_is_the_servers_default(refining_server, large_jpeg):
    with refining_server.client() as client:
        response = client.post("/v1.0/removebg", files={"image_file": ("a.jpg", large_jpeg)}, data={"size": "full", "channels": "alpha"})
    assert response.status_code == 200, response.text
    assert response.headers["x-segment-refined"] == "true"
    with Image.open(io.BytesIO(response.content)) as matte:
        assert matte.size == (1800, 1200)
        served = np.asarray(matte.convert("L"))
    assert (served == rgba(azure(refining_server, large_jpeg).content)[..., 3]).all()
    assert (served != rgba(azure(refining_server, large_jpeg, refine="false").content)[..., 3]).any()  # refined


def test_the_refine_setting_is_the_default_a_request_overrides(weights, tmp_path_factory, large_jpeg):
    from conftest import FAST, start_server, stop_server

    server = start_server({**FAST, "BGR_REFINE": "off"}, tmp_path_factory.mktemp("refine-off") / "server.log")
    try:
        absent, off, on = (azure(server, large_jpeg, **params) for params in ({}, {"refine": "false"}, {"refine": "true"}))
        assert absent.content == off.content != on.content
        assert (absent.headers["x-segment-refined"], on.headers["x-segment-refined"]) == ("false", "true")
    finally:
        stop_server(server)


def test_the_cli_sends_its_refine_option_to_an_endpoint(refining_server, large_jpeg, tmp_path):
    from test_cli import run

    photo = tmp_path / "large.jpg"
    photo.write_bytes(large_jpeg)
    for option, query in (("on", "true"), ("off", "false")):
        out = tmp_path / option
        done = run("remove", str(photo), "-o", str(out), "--endpoint", refining_server.url, "--refine", option)
        assert done.returncode == 0, done.stderr
        assert (out / "large.png").read_bytes() == azure(refining_server, large_jpeg, refine=query).content, option
    wrong = run("remove", str(photo), "-o", str(tmp_path / "x"), "--endpoint", refining_server.url, "--refine", "maybe")
    assert wrong.returncode == 2 and "--refine must be auto, on or off" in wrong.stderr


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (50, 50), (200, 10, 10)),  # Azure's smallest side, one colour
        Image.fromarray(np.random.default_rng(5).integers(0, 256, (50, 6000, 3), dtype=np.uint8)),  # a strip
        Image.fromarray(np.random.default_rng(6).integers(0, 256, (6000, 50, 3), dtype=np.uint8)),
        Image.fromarray(np.random.default_rng(7).integers(0, 256, (900, 1300), dtype=np.uint8)),  # grey, larger than 1024²
        Image.fromarray(np.random.default_rng(8).integers(0, 256, (1000, 1200, 4), dtype=np.uint8)),  # RGBA
    ],
    ids=["50x50", "6000x50", "50x6000", "grey", "rgba"],
)
def test_odd_photos_go_through_the_stage(refining_server, picture):
    """Whatever its shape or mode, a photo the service takes is answered with the stage on: a cut-out of its size."""
    for mode in ("backgroundRemoval", "foregroundMatting"):
        response = azure(refining_server, png_bytes(picture), mode, refine="true")
        assert response.status_code == 200, response.text
        with Image.open(io.BytesIO(response.content)) as out:
            assert out.size == picture.size
