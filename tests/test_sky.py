"""The sky network: ncnn conversion, parity with the ncnn runtime on real photos, and where its files come from."""

from __future__ import annotations

import functools
import json
import http.server
import shutil
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from app.catalogue import IMAGENET_MEAN, IMAGENET_STD
from app.inference.u2net import U2NetP, load_u2netp
from app.weights import sky, source
from app.weights.__main__ import fetch_sky
from app.weights.ncnn import NcnnFormatError, parse_param, read_weights, state_dict_from_ncnn

from conftest import EVALDATA_SKY, SKY_MODEL_FILES, require_shared

PARAM = SKY_MODEL_FILES / sky.PARAM_NAME
BIN = SKY_MODEL_FILES / sky.BIN_NAME


@pytest.fixture(scope="module")
def ncnn_files() -> tuple[str, bytes]:
    require_shared(PARAM)
    return PARAM.read_text(), BIN.read_bytes()


def convert(param_text: str, bin_data: bytes) -> dict[str, torch.Tensor]:
    return state_dict_from_ncnn(param_text, bin_data, U2NetP(), torch.zeros(1, 3, 64, 64))


def test_conversion_fills_every_parameter_by_name(ncnn_files):
    state = convert(*ncnn_files)
    model = U2NetP()
    assert set(state) == set(model.state_dict())  # 119 convolutions, weight and bias each
    assert len(state) == 238
    model.load_state_dict(state, strict=True)


def test_converter_refuses_what_it_does_not_understand(ncnn_files):
    param_text, bin_data = ncnn_files
    with pytest.raises(NcnnFormatError, match="magic"):
        parse_param("12345\n" + param_text.split("\n", 1)[1])
    with pytest.raises(NcnnFormatError, match="InnerProduct"):
        parse_param(param_text.replace("Sigmoid                  Sigmoid_1054", "InnerProduct             Sigmoid_1054"))
    with pytest.raises(NcnnFormatError, match="left over"):
        convert(param_text, bin_data + b"\0\0\0\0")
    with pytest.raises(NcnnFormatError, match="ends early"):
        read_weights(bin_data[:1000], parse_param(param_text))
    # A graph whose first convolution has another dilation, or no ReLU, does not fit the module, and says where.
    first = next(line for line in param_text.splitlines() if line.startswith("Convolution"))
    with pytest.raises(NcnnFormatError, match="Conv_0.*does not fit stage1.rebnconvin.conv"):
        convert(param_text.replace(first, first.replace("4=1", "2=2 4=1")), bin_data)
    with pytest.raises(NcnnFormatError, match="Conv_0 fuses none"):
        convert(param_text.replace(first, first.replace(" 9=1", "")), bin_data)


def test_converted_weights_file_loads_strictly(sky_weights):
    model = load_u2netp(sky_weights)
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in load_file(str(sky_weights)).values())


def sky_photos(per_set: int = 4) -> list[Path]:
    """Photos with between 10% and 90% sky, a few from each set."""
    root = require_shared(EVALDATA_SKY)
    photos = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        stems = [e["stem"] for e in json.loads((folder / "index.json").read_text()) if 0.1 <= e["sky_frac"] <= 0.9]
        photos += [next((folder / "images").glob(f"{stem}.*")) for stem in stems[:per_set]]
    return photos


def test_parity_with_the_ncnn_runtime_on_real_photos(sky_weights, ncnn_files, capsys):
    """Our module against the original files run by ncnn itself: mean |difference| of the sky probability < 0.005."""
    ncnn = pytest.importorskip("ncnn", reason="the ncnn package (test extra) runs the original files")
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False  # compare in fp32
    net.load_param(str(PARAM))
    net.load_model(str(BIN))
    model = load_u2netp(sky_weights)
    mean = np.array(IMAGENET_MEAN, np.float32) * 255
    std = np.array(IMAGENET_STD, np.float32) * 255
    differences = []
    for path in sky_photos():
        rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB").resize((sky.SKY_RESOLUTION,) * 2, Image.BILINEAR)))
        extractor = net.create_extractor()
        # ncnn's own pixel import and normalisation, as the original inference code does it.
        pixels = ncnn.Mat.from_pixels(rgb, ncnn.Mat.PixelType.PIXEL_RGB, sky.SKY_RESOLUTION, sky.SKY_RESOLUTION)
        pixels.substract_mean_normalize(mean.tolist(), (1 / std).tolist())
        extractor.input("input.1", pixels)
        _, out = extractor.extract("1959")
        reference = np.array(out).reshape(sky.SKY_RESOLUTION, sky.SKY_RESOLUTION).copy()
        x = torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1).copy())[None]
        with torch.inference_mode():
            ours = torch.sigmoid(model(x))[0, 0].numpy()
        assert 0.02 < reference.mean() < 0.98, "each photo shows sky and ground, so the comparison is not trivial"
        differences.append(float(np.abs(ours - reference).mean()))
    with capsys.disabled():
        print(f"\nsky parity on {len(differences)} photos: max mean |difference| {max(differences):.2e}")
    assert max(differences) < 0.005


# ------------------------------------------------------------------ where the files come from


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server standing in for the source repository (CI has no internet)."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pinned", served
    httpd.shutdown()


def publish(served: Path) -> None:
    (served / "pinned").mkdir()
    for name in sky.FILES:
        shutil.copy(SKY_MODEL_FILES / name, served / "pinned" / name)


def test_fetch_downloads_checks_and_converts_when_no_copy_is_at_hand(ncnn_files, file_server, tmp_path):
    base_url, served = file_server
    publish(served)
    output = tmp_path / "weights" / "sky.safetensors"
    assert fetch_sky(output, tmp_path / "cache", None, base_url, force=False, shared_copy=tmp_path / "absent")
    manifest = source.manifest_path(output).read_text()
    assert base_url in manifest and sky.COMMIT in manifest
    expected = convert(*ncnn_files)
    got = load_file(str(output))
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    # The download is cached: a second machine-local run needs no server.
    output.unlink()
    assert fetch_sky(output, tmp_path / "cache", None, "http://127.0.0.1:9/unreachable", force=False, shared_copy=tmp_path / "absent")


def test_fetch_refuses_a_file_with_another_hash(ncnn_files, file_server, tmp_path, capsys):
    base_url, served = file_server
    publish(served)
    tampered = served / "pinned" / sky.BIN_NAME
    tampered.write_bytes(tampered.read_bytes()[:-4] + b"\x01\x02\x03\x04")
    output = tmp_path / "sky.safetensors"
    assert not fetch_sky(output, tmp_path / "cache", None, base_url, force=False, shared_copy=tmp_path / "absent")
    assert "SHA-256" in capsys.readouterr().err
    assert not output.exists()
    assert not (tmp_path / "cache" / "sky-u2netp" / sky.BIN_NAME).exists()


def test_fetch_prefers_a_configured_folder_and_says_when_nothing_is_found(ncnn_files, tmp_path, capsys):
    configured = tmp_path / "mine"
    configured.mkdir()
    for name in sky.FILES:
        shutil.copy(SKY_MODEL_FILES / name, configured / name)
    output = tmp_path / "sky.safetensors"
    assert fetch_sky(output, tmp_path / "cache", configured, "http://127.0.0.1:9/unreachable", force=False, shared_copy=tmp_path / "absent")
    assert str(configured) in source.manifest_path(output).read_text()
    capsys.readouterr()
    assert fetch_sky(output, tmp_path / "cache", None, "http://127.0.0.1:9/unreachable", force=False)  # up to date: nothing to do
    assert "up to date" in capsys.readouterr().out

    missing = tmp_path / "none.safetensors"
    assert not fetch_sky(missing, tmp_path / "cache2", None, "http://127.0.0.1:9/unreachable", force=False, shared_copy=tmp_path / "absent")
    assert "scene handling off" in capsys.readouterr().err
    assert not missing.exists()
