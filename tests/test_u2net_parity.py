"""rembg's real u2netp.onnx: converted to the project's U²-Netp, against ONNX Runtime on real photos.

Also the two ways the service runs it (the port on torch and as its exported graph) and a
bring-your-own model card serving the published graph itself, all against the same reference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.catalogue import CATALOGUE, IMAGENET_MEAN, IMAGENET_STD
from app.inference.engine import MattingEngine
from app.inference.families import loader
from app.inference.pipeline import model_input
from app.settings import Settings

from conftest import sample_photos

SIDE = CATALOGUE["u2netp"].preprocess.side


@pytest.fixture(scope="module")
def models_dir(u2netp_models_dir: Path) -> Path:
    return u2netp_models_dir


@pytest.fixture(scope="module")
def reference(rembg_u2netp: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(rembg_u2netp), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0][:, 0]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [model_input(np.asarray(Image.open(path).convert("RGB")), SIDE) for path in sample_photos(count_per_set=1)]


def normalised(rgb: np.ndarray, scale: float) -> np.ndarray:
    x = (rgb.astype(np.float32) / scale - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def stretched(matte: np.ndarray) -> np.ndarray:
    return (matte - matte.min()) / max(matte.max() - matte.min(), 1e-6)


def test_the_port_matches_onnxruntime_on_real_photos(models_dir, reference, photos, record_property):
    model = loader("u2netp")(models_dir / "u2netp.safetensors")
    worst = 0.0
    for rgb in photos:
        x = normalised(rgb, max(float(rgb.max()), 1e-6))  # rembg divides by the image's brightest value
        with torch.inference_mode():
            ours = torch.sigmoid(model(torch.from_numpy(x))).numpy()[0, 0]
        worst = max(worst, float(np.abs(ours - reference(x)[0]).max()))
    record_property("u2netp_parity_max_abs", worst)
    print(f"\nu2netp port against onnxruntime over {len(photos)} photos: max |difference| {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_the_served_matte_is_the_published_graphs(models_dir, reference, photos, runtime):
    engine = MattingEngine.from_settings(Settings(models_dir=models_dir, model="u2netp", device="cpu", runtime=runtime, target="subject"))
    assert (engine.name, engine.resolution, engine.runtime) == ("u2netp", SIDE, runtime)
    mattes = engine.predict(np.stack(photos))
    for rgb, matte in zip(photos, mattes):
        expected = stretched(reference(normalised(rgb, 255.0))[0])
        assert np.abs(matte - expected).max() < 1e-3
        assert matte.min() == 0 and matte.max() == pytest.approx(1, abs=1e-6)


def test_a_model_card_serves_a_graph_as_published(models_dir, rembg_u2netp, photos, tmp_path):
    shutil.copyfile(rembg_u2netp, tmp_path / "mine.onnx")
    (tmp_path / "mine.card.json").write_text(json.dumps({
        "onnx": "mine.onnx", "side": SIDE, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "output": 0, "transform": "identity", "minmax": True, "licence": "Apache-2.0", "commercial": True,
    }))
    carded = MattingEngine.from_settings(Settings(models_dir=tmp_path, model="mine", device="cpu", target="subject"))
    ported = MattingEngine.from_settings(Settings(models_dir=models_dir, model="u2netp", device="cpu", runtime="torch", target="subject"))
    assert carded.runtime == "onnxruntime" and carded.model.single  # the published graph takes one image at a time
    batch = np.stack(photos[:2])  # two images through a graph fixed at batch 1
    assert np.abs(carded.predict(batch) - ported.predict(batch)).max() < 1e-3
