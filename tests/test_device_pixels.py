"""Pixels on the device (BGR_DEVICE_PIXELS), run here on the CPU: the same torch code a GPU runs, against the CPU path.

Bounds asserted are the ones BENCHMARKS.md ("Pixels on the device") documents: on the CPU the decode and the
model input are Pillow's exactly, and the matte differs by at most one grey level on a few pixels in a million.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchvision", reason="the device pixel path decodes with torchvision (pip install '.[gpu]')")

from app.imaging.decode import decode_image  # noqa: E402
from app.imaging.png import iter_matte_png  # noqa: E402
from app.inference.device_pixels import DevicePixels, jpeg_on_device, use_device_pixels  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.settings import Settings, SettingsError  # noqa: E402
from conftest import AZURE_SPEC, FAST, SEGMENT, photo, read_png, require_shared, sample_photos, start_server, stop_server  # noqa: E402

CPU = DevicePixels(torch.device("cpu"))
FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.LANCZOS, Image.Resampling.BICUBIC)
MATTE_MAX_DIFFERENCE = 1  # grey levels, device matte against Pillow's (float sums in another order)
MATTE_DIFFERING_SHARE = 1e-4  # of the pixels


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def textured(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Noise over the synthetic photo: every resize weight matters, unlike on flat colour."""
    base = np.asarray(photo(size)).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-40, 40, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # a writable copy


@pytest.mark.parametrize("resample", FILTERS)
@pytest.mark.parametrize("size", [(800, 497), (1732, 1155), (70, 60), (900, 1024), (1024, 2000), (1024, 1024)])
def test_model_input_is_pillows_byte_for_byte(size, resample):
    rgb = np.asarray(textured(size))
    expected = model_input(rgb, 1024, resample)
    assert np.array_equal(CPU.model_input(chw(rgb), 1024, resample).numpy(), expected)


@pytest.mark.parametrize("size", [(225, 225), (800, 600), (1732, 1155), (60, 70), (1024, 1024), (4000, 3000)])
def test_matte_upsampling_is_pillows_within_one_level(size):
    rng = np.random.default_rng(1)
    # A smooth matte with soft edges and saturated areas, as the model gives (plus exact 0 and 1).
    coarse = np.asarray(Image.fromarray(rng.random((32, 32), dtype=np.float32)).resize((1024, 1024), Image.BICUBIC))
    matte = np.clip((coarse - 0.3) * 3, 0, 1).astype(np.float32)
    expected = matte_at_size(matte, *size)
    got = CPU.matte_at_size(torch.from_numpy(matte), *size)
    assert got.shape == expected.shape == (size[1], size[0]) and got.dtype == np.uint8
    difference = np.abs(got.astype(int) - expected)
    assert difference.max() <= MATTE_MAX_DIFFERENCE
    assert (difference > 0).mean() <= MATTE_DIFFERING_SHARE


@pytest.mark.parametrize(
    "options",
    [{"quality": 90}, {"quality": 75, "progressive": True}, {"quality": 95, "subsampling": 0}, {"quality": 85, "subsampling": 1}],
    ids=["baseline-420", "progressive", "444", "422"],
)
def test_decode_is_pillows_for_colour_and_grey_jpegs(options):
    for image in (textured((333, 217)), textured((333, 217)).convert("L")):
        data = jpeg(image, **options)
        assert jpeg_on_device(data)
        decoded = CPU.decode_jpeg(data)
        assert decoded is not None
        assert np.array_equal(CPU.to_cpu(decoded), decode_image(data).rgb)


def test_exif_orientation_is_ignored_as_on_the_cpu_path():
    image = textured((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": the CPU path (and Azure) return the stored pixels
    data = jpeg(image, exif=exif.tobytes())
    decoded = CPU.to_cpu(CPU.decode_jpeg(data))
    assert decoded.shape == (80, 120, 3)
    assert np.array_equal(decoded, decode_image(data).rgb)


def test_what_the_device_does_not_decode_is_left_to_the_cpu():
    good = jpeg(textured((200, 150)))
    cases = {
        "truncated": good[: len(good) - 300],
        "cut in the header": good[:200],
        "garbage": b"\xff\xd8" + b"\x00" * 500,
        "cmyk": jpeg(textured((200, 150)).convert("CMYK")),
        "png": (lambda b: (textured((200, 150)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO()),
        "cut at half": good[: len(good) // 2],
    }
    for name, data in cases.items():
        assert not jpeg_on_device(data), name
        assert CPU.decode_jpeg(data) is None, name
        assert CPU.prepare(data, 200, 150, 64, Image.Resampling.BILINEAR, keep_rgb=True) is None, name


def test_a_stream_the_decoder_refuses_goes_back_to_the_cpu_path():
    good = bytearray(jpeg(textured((200, 150))))
    sos = good.index(b"\xff\xda")
    good[sos + 20 : sos + 400] = b"\xff\xd0" * 190  # restart markers where none belong, the EOI kept
    assert jpeg_on_device(bytes(good))
    # libjpeg may repair or refuse it; either way no exception escapes, and None means the CPU path answers.
    result = CPU.prepare(bytes(good), 200, 150, 64, Image.Resampling.BILINEAR, keep_rgb=False)
    assert result is None or tuple(result[1].shape) == (64, 64, 3)


def test_the_batch_mixes_device_inputs_and_cpu_fallbacks():
    on_device = CPU.model_input(chw(np.asarray(textured((90, 70)))), 64, Image.Resampling.BILINEAR)
    fallback = model_input(np.asarray(textured((90, 70), seed=3)), 64)
    batch = CPU.stack([on_device, fallback])
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == torch.uint8
    assert np.array_equal(batch[1].numpy(), fallback)


def test_the_switch():
    assert not use_device_pixels("auto", torch.device("cpu"))
    assert use_device_pixels("on", torch.device("cpu"))
    assert not use_device_pixels("off", torch.device("cuda"))
    assert use_device_pixels("auto", torch.device("cuda"))
    assert Settings.from_env({"BGR_DEVICE_PIXELS": "on"}).device_pixels == "on"
    with pytest.raises(SettingsError):
        Settings.from_env({"BGR_DEVICE_PIXELS": "gpu"})


# --- Through the real service over HTTP: device pixels forced on (on the CPU) against the CPU path ---------------

# The second pass makes the model input Lanczos (the GPU default); 64² keeps the model cheap.
SERVED = {**FAST, "BGR_SECOND_RESOLUTION": "32"}
QUERY = {"api-version": "2023-02-01-preview"}


@pytest.fixture(scope="module")
def servers(weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device-pixels")
    cpu = start_server({**SERVED, "BGR_DEVICE_PIXELS": "off"}, folder / "cpu.log")
    try:
        device = start_server({**SERVED, "BGR_DEVICE_PIXELS": "on"}, folder / "device.log")
    except BaseException:
        stop_server(cpu)
        raise
    yield cpu, device
    stop_server(device)
    stop_server(cpu)
    loaded = [json.loads(line) for line in (folder / "device.log").read_text().splitlines() if '"model loaded"' in line]
    assert loaded and all(record["device_pixels"] is True for record in loaded)


def post(server, data: bytes, mode: str):
    with server.client() as client:
        return client.post(SEGMENT, params={**QUERY, "mode": mode}, content=data)


def inputs() -> dict[str, bytes]:
    face = require_shared(AZURE_SPEC / "observed-outputs") / "input_face.jpeg"
    photos = {f"photo{i}": jpeg(Image.open(path).convert("RGB"), quality=90) for i, path in enumerate(sample_photos()[:3])}
    return {"face": face.read_bytes(), "grey": jpeg(textured((300, 200)).convert("L")), **photos}


@pytest.mark.parametrize("mode", ["backgroundRemoval", "foregroundMatting"])
def test_the_service_answers_as_the_cpu_path_within_the_bounds(servers, mode):
    cpu, device = servers
    for name, data in inputs().items():
        expected, got = post(cpu, data, mode), post(device, data, mode)
        assert expected.status_code == got.status_code == 200, (name, got.text)
        want, have = np.asarray(read_png(expected.content)), np.asarray(read_png(got.content))
        assert want.shape == have.shape, name
        if mode == "backgroundRemoval":
            assert np.array_equal(want[:, :, :3], have[:, :, :3]), name  # the cut-out's pixels: the decode, exactly
            want, have = want[:, :, 3], have[:, :, 3]
        difference = np.abs(want.astype(int) - have)
        assert difference.max() <= MATTE_MAX_DIFFERENCE, name
        assert (difference > 0).mean() <= MATTE_DIFFERING_SHARE, name


def test_mattes_are_deflated_as_azures_at_the_default_level(servers):
    # The encoder stays on the CPU: the matte's PNG is exactly what the encoder that reproduces Azure's recorded
    # output byte for byte (tests/test_png.py) makes of these grey levels.
    _, device = servers
    face = require_shared(AZURE_SPEC / "observed-outputs") / "input_face.jpeg"
    response = post(device, face.read_bytes(), "foregroundMatting")
    assert response.status_code == 200
    levels = np.asarray(read_png(response.content))
    assert b"".join(iter_matte_png(levels, Settings().matte_png_compression)) == response.content


def test_formats_the_device_cannot_decode_are_served_from_the_cpu(servers):
    cpu, device = servers
    image = textured((240, 180))
    for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True}), ("GIF", {}), ("JPEG-CMYK", {})):
        buffer = io.BytesIO()
        (image.convert("CMYK") if fmt == "JPEG-CMYK" else image).save(buffer, fmt.split("-")[0], **options)
        for mode in ("backgroundRemoval", "foregroundMatting"):
            expected, got = post(cpu, buffer.getvalue(), mode), post(device, buffer.getvalue(), mode)
            assert got.status_code == 200, (fmt, got.text)
            assert got.content == expected.content, (fmt, mode)  # the CPU path, exactly


def test_bad_jpegs_get_azures_400_never_a_500(servers):
    cpu, device = servers
    good = jpeg(textured((240, 180)))
    corrupt = bytearray(good)
    sos = corrupt.index(b"\xff\xda")
    corrupt[sos + 20 : sos + 600] = bytes(range(256)) * 2 + bytes(68)
    cases = {
        "truncated": good[: len(good) * 2 // 3],
        "header only": good[: good.index(b"\xff\xda") + 12],
        "no scan at all": good[:300],
        "corrupt scan": bytes(corrupt),
        "garbage after the marker": b"\xff\xd8\xff" + bytes(range(256)) * 8,
    }
    for name, data in cases.items():
        for mode in ("backgroundRemoval", "foregroundMatting"):
            expected, got = post(cpu, data, mode), post(device, data, mode)
            assert got.status_code == expected.status_code, (name, got.text)
            assert got.status_code in (200, 400), (name, got.text)
            if got.status_code == 400:
                assert got.content == expected.content, name
                assert got.json()["error"]["code"] == "InvalidRequest"
                assert got.json()["error"]["innererror"]["code"] == "InvalidImageFormat"
    truncated = post(device, good[: len(good) * 2 // 3], "foregroundMatting")
    assert truncated.status_code == 400  # Pillow refuses a truncated JPEG; the device path must not pass it as grey


# --- The same code on CUDA, where there is one ------------------------------------------------------------------

# Provisional bounds for nvJPEG against libjpeg-turbo (BENCHMARKS.md: bench/device_pixels.py on the GPU fills them).
CUDA_DECODE_MEAN_DIFFERENCE = 1.0  # grey levels, mean over the pixels
CUDA_MATTE_INPUT_MEAN_DIFFERENCE = 1.0  # the model input, mean


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the cuda path is checked against the cpu path only on a GPU machine (bench/gpu.sh runs this)")
def test_cuda_path_agrees_with_the_cpu_path():
    cuda = DevicePixels(torch.device("cuda"))
    for path in sample_photos():
        data = jpeg(Image.open(path).convert("RGB"), quality=90)
        on_gpu, on_cpu = cuda.decode_jpeg(data), CPU.decode_jpeg(data)
        assert on_gpu is not None and on_cpu is not None
        decode_difference = np.abs(cuda.to_cpu(on_gpu).astype(int) - CPU.to_cpu(on_cpu))
        assert decode_difference.mean() <= CUDA_DECODE_MEAN_DIFFERENCE, path
        # The resizes on the GPU, from the same pixels: Pillow's exactly (integer sums in float64).
        same_input = cuda.model_input(on_cpu.cuda(), 1024, Image.Resampling.LANCZOS).cpu()
        assert torch.equal(same_input, CPU.model_input(on_cpu, 1024, Image.Resampling.LANCZOS)), path
        from_gpu_decode = cuda.model_input(on_gpu, 1024, Image.Resampling.LANCZOS).cpu().int()
        assert (from_gpu_decode - same_input.int()).abs().float().mean() <= CUDA_MATTE_INPUT_MEAN_DIFFERENCE, path
        matte = torch.rand(1024, 1024)
        height, width = on_cpu.shape[1:]
        difference = np.abs(cuda.matte_at_size(matte.cuda(), width, height).astype(int) - matte_at_size(matte.numpy(), width, height))
        assert difference.max() <= MATTE_MAX_DIFFERENCE and (difference > 0).mean() <= MATTE_DIFFERING_SHARE, path
        # As the service runs it: a decode thread's own stream, then the batch stacked on the default stream.
        rgb, served_input = cuda.prepare(data, width, height, 1024, Image.Resampling.LANCZOS, keep_rgb=True)
        assert np.array_equal(rgb, cuda.to_cpu(on_gpu)) and torch.equal(served_input.cpu(), from_gpu_decode.to(torch.uint8))
        batch = cuda.stack([served_input, CPU.model_input(on_cpu, 1024, Image.Resampling.LANCZOS).numpy()])
        assert batch.device.type == "cuda" and torch.equal(batch[1].cpu(), same_input)
    cuda.warm_up(1024, Image.Resampling.LANCZOS)
