"""Engine options: the ONNX Runtime CPU path and the bf16 capability check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.inference.engine import MattingEngine, cpu_has_native_bf16
from app.settings import Settings, SettingsError

RESOLUTION = 96  # any multiple of 32: the exported graph has dynamic height and width


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def ort_engine(weights, onnx_cache):
    pytest.importorskip("onnxruntime")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BGR_WEIGHTS_CACHE", str(onnx_cache))
        return MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="onnxruntime", resolution=RESOLUTION))


def test_onnxruntime_mattes_match_torch_on_a_batch(weights, ort_engine):
    torch_engine = MattingEngine.from_settings(Settings(weights=weights, device="cpu", resolution=RESOLUTION))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    images[1, 24:72, 24:72] = 255  # a bright square, so the two rows differ in content
    ours, theirs = ort_engine.predict(images), torch_engine.predict(images)
    assert ours.shape == theirs.shape == (2, RESOLUTION, RESOLUTION)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-4


def test_the_export_is_cached_per_weights_file(weights, ort_engine, onnx_cache, monkeypatch):
    (exported,) = (onnx_cache / "onnx").glob("isnet-*-fp32.onnx")
    stamp = exported.stat().st_mtime_ns
    monkeypatch.setenv("BGR_WEIGHTS_CACHE", str(onnx_cache))
    MattingEngine.from_settings(Settings(weights=weights, device="cpu", runtime="onnxruntime", resolution=RESOLUTION))
    assert exported.stat().st_mtime_ns == stamp
    assert not list((onnx_cache / "onnx").glob("*.partial"))


@pytest.mark.parametrize("overrides", [{"dtype": "bfloat16"}, {"device": "cuda"}])
def test_onnxruntime_is_cpu_float32_only(weights, overrides):
    with pytest.raises(ValueError, match="BGR_RUNTIME=onnxruntime"):
        MattingEngine.from_settings(Settings(weights=weights, runtime="onnxruntime", **{"device": "cpu", **overrides}))


def test_unknown_runtime_is_a_settings_error():
    with pytest.raises(SettingsError, match="BGR_RUNTIME"):
        Settings.from_env({"BGR_RUNTIME": "tensorrt"})


def test_no_native_bf16_without_avx512_or_avx_ne_convert():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("reads the CPU flags from /proc/cpuinfo")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    if {"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags:
        pytest.skip("this CPU may have native bf16")
    assert cpu_has_native_bf16() is False
