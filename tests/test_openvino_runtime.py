"""The OpenVINO runtime: its mattes against fp32's (IS-Net and the sky network), its model cache, and what /health/ready says."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.cpu import cpu_capabilities
from app.inference.engine import MattingEngine, choose_runtime, installed_runtimes, machine_capabilities
from app.inference.ort_backend import onnx_name
from app.settings import Settings

from conftest import sample_photos

pytest.importorskip("openvino", reason="the openvino package is not installed (pip install openvino)")

from app.inference.openvino_backend import OvModel, openvino_lists_bf16  # noqa: E402

SIDE = 512  # the model input here: fully convolutional, so any multiple of 32; smaller keeps the fp32 side quick


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """One real photo from each evaluation set, at the model's input size."""
    return [np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)) for path in sample_photos(1)]


def scene_engine(weights: Path, sky_weights: Path, **settings: str) -> MattingEngine:
    return MattingEngine.from_settings(Settings(weights=weights, sky_weights=sky_weights, device="cpu", resolution=SIDE, **settings))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fp32(weights, sky_weights) -> MattingEngine:
    return scene_engine(weights, sky_weights, runtime="onnxruntime")


def test_openvino_f32_matches_onnxruntime(weights, sky_weights, fp32, photos):
    """Held to f32, OpenVINO runs the same graph as ONNX Runtime to within float rounding, on any CPU."""
    f32 = scene_engine(weights, sky_weights, runtime="openvino", dtype="float32")
    assert f32.runtime == "openvino" and f32.choice is not None and f32.choice.precision == "float32"
    for ours, reference in zip(f32.analyse(np.stack(photos)), fp32.analyse(np.stack(photos))):
        assert np.abs(ours.matte - reference.matte).max() < 1e-3
        assert ours.sky is not None and reference.sky is not None
        assert np.abs(ours.sky - reference.sky).max() < 1e-3


def test_openvino_bf16_mattes_agree_with_fp32(weights, sky_weights, fp32, photos):
    """bf16 (8 bits of mantissa): the mattes agree within what bench/runtime_gate.py measured over every set, photo by photo."""
    if not cpu_capabilities(openvino_lists_bf16()).native_bf16:
        pytest.skip("this CPU has no native bf16 (neither AMX-BF16 nor AVX-512 BF16): OpenVINO would not serve bf16 here")
    bf16 = scene_engine(weights, sky_weights, runtime="openvino", dtype="bfloat16")
    assert bf16.choice is not None and bf16.choice.precision == "bfloat16"
    batch = np.stack(photos)
    for ours, reference in zip(bf16.analyse(batch), fp32.analyse(batch)):
        a, b = ours.matte >= 0.5, reference.matte >= 0.5
        assert (a & b).sum() >= 0.98 * (a | b).sum()  # IoU at 0.5 between the two mattes (an empty pair agrees)
        assert np.abs(ours.matte - reference.matte).mean() < 0.005
        assert ours.sky is not None and reference.sky is not None
        assert np.abs(ours.sky - reference.sky).mean() < 0.01
        assert abs(float((ours.sky >= 0.5).mean()) - float((reference.sky >= 0.5).mean())) < 0.01  # the sky's share, which routing reads
    # bf16 really ran: the logits differ in their low bits from fp32's
    assert max(np.abs(o.matte - r.matte).max() for o, r in zip(bf16.analyse(batch[:1]), fp32.analyse(batch[:1]))) > 1e-4


def test_the_model_cache_is_written_and_read_back(sky_weights, tmp_path):
    graph = sky_weights.parent / onnx_name(sky_weights)
    if not graph.is_file():
        pytest.skip(f"{graph} is missing: `python -m app.weights fetch` exports it")
    cache = tmp_path / "openvino"
    first = OvModel(graph, "float32", cache_dir=cache)
    assert not first.loaded_from_cache
    blobs = list(cache.glob("*.blob"))
    assert blobs, f"nothing cached in {cache}"
    second = OvModel(graph, "float32", cache_dir=cache)
    assert second.loaded_from_cache
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(first(x), second(x))
    assert sorted(cache.glob("*.blob")) == sorted(blobs)  # read back, not compiled again


def test_an_engine_caches_under_the_weights_cache(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("BGR_WEIGHTS_CACHE", str(tmp_path))
    engine = MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="openvino", target="subject", resolution=64))
    assert list((tmp_path / "openvino").glob("*.blob"))
    again = MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="openvino", target="subject", resolution=64))
    assert isinstance(again.model, OvModel) and again.model.loaded_from_cache
    assert engine.model.precision == again.model.precision


def test_several_requests_run_the_same_network(weights, photos):
    two = MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="openvino", target="subject", resolution=SIDE, infer_requests="2"))
    one = MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="openvino", target="subject", resolution=SIDE, infer_requests="1"))
    assert (two.requests, one.requests) == (2, 1)
    assert two.model.compiled.get_property("NUM_STREAMS") == 2
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda rgb: two.predict(rgb[None])[0], photos))
    for rgb, matte in zip(photos, together):
        assert np.abs(matte - one.predict(rgb[None])[0]).max() < 1e-2


def test_health_says_which_runtime_serves_and_why(fast_server):
    ready = httpx.get(f"{fast_server.url}/health/ready", timeout=10).json()
    entry = ready["models"]["isnet-general-use"]
    installed = installed_runtimes()
    expected = choose_runtime("auto", "auto", torch.device("cpu"), machine_capabilities(installed), installed)
    assert entry["runtime"] == {"runtime": expected.runtime, "precision": expected.precision, "reason": expected.reason}
    assert entry["infer_requests"] >= 1
    assert ready["queue_depth"] == sum(model["queue_depth"] for model in ready["models"].values())


def test_a_network_whose_bias_cancels_in_bf16_runs_in_f32_as_a_whole(u2netp_models_dir, weights, sky_weights, tmp_path, monkeypatch):
    """rembg's U²-Netp sums to hundreds in one convolution and keeps a few tenths after its bias: bf16 would leave noise
    there (its gate failed on every set), so it runs in f32; IS-Net's and the sky network's largest ratio is about 4."""
    from app.catalogue import CATALOGUE
    from app.inference.engine import PROBE_SIDE, RuntimeChoice, _probe, checked_precision
    from app.inference.families import loader
    from app.inference.openvino_backend import probe_input, reduced_precision_hazards
    from app.inference.ort_backend import exported_onnx

    monkeypatch.setenv("BGR_WEIGHTS_CACHE", str(tmp_path))
    cache = tmp_path / "openvino"
    u2netp = exported_onnx(u2netp_models_dir / "u2netp.safetensors", loader("u2netp"), tmp_path / "onnx")
    hazards = reduced_precision_hazards(u2netp, _probe(CATALOGUE["u2netp"].preprocess), cache)
    assert hazards.get("/stage2d/rebnconv1d/conv/Conv/WithoutBiases", 0) > 100
    isnet_probe = probe_input(PROBE_SIDE, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 256.0)
    assert reduced_precision_hazards(weights.parent / onnx_name(weights), isnet_probe, cache) == {}
    assert reduced_precision_hazards(sky_weights.parent / onnx_name(sky_weights), probe_input(256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 255.0), cache) == {}

    bf16 = RuntimeChoice("openvino", "bfloat16", "native bf16")
    probe = _probe(CATALOGUE["u2netp"].preprocess)
    fallback = checked_precision(bf16, u2netp, probe, Settings())
    assert (fallback.runtime, fallback.precision) == ("onnxruntime", "float32") and "cancel" in fallback.reason
    forced = checked_precision(bf16, u2netp, probe, Settings(runtime="openvino"))
    assert (forced.runtime, forced.precision) == ("openvino", "float32")
    assert checked_precision(bf16, u2netp, probe, Settings(dtype="bfloat16")) == bf16  # asked for explicitly: served as asked
    assert sorted(path.suffix for path in cache.glob("cancelling-*")) == [".json"] * 3  # one answer per graph, kept for the next start
