"""Parity: this project's IS-Net against onnxruntime running the published graph, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.inference.isnet import load_isnet
from app.weights.__main__ import default_cache_dir
from app.weights.source import ONNX_NAME, ONNX_SHA256, sha256_file

from conftest import sample_photos


@pytest.fixture(scope="module")
def onnx_session():
    import onnxruntime

    path = default_cache_dir() / ONNX_NAME
    if not path.exists():
        pytest.skip(f"{path} is absent: run `python -m app.weights fetch` to cache the ONNX model")
    assert sha256_file(path) == ONNX_SHA256
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_module_matches_onnxruntime_on_real_photos(onnx_session, weights, record_property):
    model = load_isnet(weights)  # the PyTorch module itself, whichever runtime the service picks
    maes, ious = [], []
    for photo in sample_photos(count_per_set=1):
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((1024, 1024), Image.BILINEAR))
        x = ((rgb.astype(np.float32) - 128.0) / 256.0).transpose(2, 0, 1)[None]
        reference = onnx_session.run(["output"], {"input": x})[0][0, 0]
        with torch.inference_mode():
            ours = torch.sigmoid(model(torch.from_numpy(x))).numpy()[0, 0]
        maes.append(float(np.abs(ours - reference).mean()))
        a, b = ours > 0.5, reference > 0.5
        ious.append(float((a & b).sum() / max((a | b).sum(), 1)))
    record_property("parity_mae_max", max(maes))
    record_property("parity_iou_min", min(ious))
    print(f"\nparity over {len(maes)} photos: max MAE {max(maes):.2e}, min IoU {min(ious):.6f}")
    assert max(maes) < 0.002
    assert min(ious) > 0.995
