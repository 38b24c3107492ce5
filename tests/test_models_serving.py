"""Serving rembg's u2netp by name beside IS-Net in one process, over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from app.inference.engine import MattingEngine
from app.inference.pipeline import matte_at_size, model_input
from app.settings import Settings

from conftest import FAST, SEGMENT, Server, png_bytes, read_png, sample_photos, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"api-version": "2023-02-01-preview"}


@pytest.fixture(scope="module")
def models_dir(u2netp_models_dir: Path) -> Path:
    return u2netp_models_dir


@pytest.fixture(scope="module")
def two_models(weights: Path, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**FAST, "BGR_MODELS": "isnet-general-use,u2netp", "BGR_MODELS_DIR": str(models_dir)}
    running = start_server(env, tmp_path_factory.mktemp("two-models") / "server.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def image() -> bytes:
    with Image.open(sample_photos(count_per_set=1)[1]) as photo:
        return png_bytes(photo.convert("RGB").resize((240, 180)))


def test_each_request_gets_the_network_it_names(two_models, models_dir, image):
    ready = httpx.get(f"{two_models.url}/health/ready", timeout=10).json()
    assert ready["default_model"] == "isnet-general-use" and list(ready["models"]) == ["isnet-general-use", "u2netp"]
    with two_models.client() as client:
        named = client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting", "model": "u2netp", "target": "subject"}, content=image)
        default = client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting", "target": "subject"}, content=image)
    assert named.status_code == default.status_code == 200
    served = np.asarray(read_png(named.content))
    # What u2netp itself says about this image, in this process.
    engine = MattingEngine.from_settings(Settings(models_dir=models_dir, model="u2netp", device="cpu", target="subject"))
    rgb = np.asarray(read_png(image).convert("RGB"))
    expected = matte_at_size(engine.predict(model_input(rgb, engine.resolution)[None])[0], rgb.shape[1], rgb.shape[0])
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(served.astype(int) - np.asarray(read_png(default.content)).astype(int)).mean() > 1  # IS-Net's is another matte
    after = httpx.get(f"{two_models.url}/health/ready", timeout=10).json()["models"]
    assert after["u2netp"]["images"] >= 1 and after["isnet-general-use"]["images"] >= 1


def test_an_unloaded_network_is_an_azure_400_naming_what_is_loaded(two_models, image):
    with two_models.client() as client:
        for name in ("birefnet-general", "no-such-network", ""):
            response = client.post(SEGMENT, params={**PARAMS, "mode": "backgroundRemoval", "model": name}, content=image)
            if name == "":
                assert response.status_code == 200  # an empty value is the default, like an absent one
                continue
            assert response.status_code == 400 and response.headers["x-ms-error-code"] == "InvalidRequest"
            error = response.json()["error"]
            assert error["code"] == "InvalidRequest" and "isnet-general-use, u2netp" in error["message"]


def test_scene_routing_and_metrics_work_with_the_second_network(two_models, image, sky_weights):
    with two_models.client() as client:
        scene = client.post(SEGMENT, params={**PARAMS, "mode": "backgroundRemoval", "model": "u2netp", "target": "scene", "decontaminate": "true"}, content=image)
        assert scene.status_code == 200 and scene.headers["x-segment-target"] == "scene"
        metrics = client.get("/metrics").text
    assert 'bgremoval_batch_size_count{model="u2netp"}' in metrics
    assert 'bgremoval_model_queue_depth{model="isnet-general-use"} 0.0' in metrics


def test_the_cli_removes_backgrounds_with_the_network_it_names(models_dir, image, tmp_path):
    (tmp_path / "in.png").write_bytes(image)
    env = {"PATH": "/usr/bin:/bin", "BGR_MODELS_DIR": str(models_dir), "BGR_TARGET": "subject"}
    result = subprocess.run([sys.executable, "-m", "app.cli", "remove", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", "u2netp"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cutout = read_png((tmp_path / "out" / "in.png").read_bytes())
    assert cutout.mode == "RGBA" and cutout.size == (240, 180)
    missing = subprocess.run([sys.executable, "-m", "app.cli", "remove", str(tmp_path / "in.png"), "-o", str(tmp_path / "x"), "--model", "u2net"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "weights fetch --model u2net" in missing.stderr
