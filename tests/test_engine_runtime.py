"""Engine options: the runtime choice (OpenVINO bf16 on CPUs with native bf16, ONNX Runtime fp32 on others), its ONNX graphs,
and the bf16 capability check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.catalogue import CATALOGUE
from app.cpu import CpuCapabilities
from app.inference.engine import (
    GPU_BATCH_SIZE,
    SKY_SERVING_RESOLUTION,
    MattingEngine,
    RuntimeChoice,
    choose_runtime,
    cpu_has_native_bf16,
    installed_runtimes,
    machine_capabilities,
    network_choice,
    pick_batch_size,
    pick_infer_requests,
    pick_second_resolution,
)
from app.inference.openvino_backend import OvModel
from app.inference.ort_backend import OrtModel, onnx_name
from app.settings import Settings, SettingsError
from app.weights.__main__ import export_graphs

RESOLUTION = 96  # any multiple of 32: the exported graph has dynamic height and width


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def lone_weights(weights, tmp_path_factory) -> Path:
    """The IS-Net weights in a folder of their own: no ONNX graph beside them."""
    copy = tmp_path_factory.mktemp("lone-weights") / weights.name
    shutil.copyfile(weights, copy)
    return copy


@pytest.fixture(scope="module")
def ort_engine(lone_weights, onnx_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BGR_WEIGHTS_CACHE", str(onnx_cache))
        return MattingEngine.from_settings(Settings(weights=lone_weights, device="cpu", runtime="onnxruntime", target="subject", resolution=RESOLUTION))


@pytest.fixture(scope="module")
def torch_engine(weights, sky_weights):
    return MattingEngine.from_settings(Settings(weights=weights, sky_weights=sky_weights, device="cpu", runtime="torch", resolution=RESOLUTION))


@pytest.fixture(scope="module")
def ort_scene_engine(weights, sky_weights):
    return MattingEngine.from_settings(Settings(weights=weights, sky_weights=sky_weights, device="cpu", runtime="onnxruntime", resolution=RESOLUTION))


CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = CpuCapabilities(cores=32, bf16_instructions=("amx_bf16", "avx512_bf16"))
ZEN4 = CpuCapabilities(cores=16, bf16_instructions=("avx512_bf16",))
ZEN3 = CpuCapabilities(cores=16)  # AVX2 only
BOTH = frozenset({"onnxruntime", "openvino"})


def runtime_and_precision(choice: RuntimeChoice) -> tuple[str, str]:
    return choice.runtime, choice.precision


@pytest.mark.parametrize("cpu", [SAPPHIRE_RAPIDS, ZEN4])
def test_auto_serves_openvino_bf16_on_a_cpu_with_native_bf16(cpu):
    choice = choose_runtime("auto", "auto", CPU, cpu, BOTH)
    assert runtime_and_precision(choice) == ("openvino", "bfloat16")
    assert "avx512_bf16" in choice.reason and "quality gate" in choice.reason


def test_auto_keeps_onnxruntime_fp32_without_native_bf16_or_without_openvino():
    for cpu, installed, why in ((ZEN3, BOTH, "no native bf16"), (ZEN4, frozenset({"onnxruntime"}), "openvino is not installed")):
        choice = choose_runtime("auto", "auto", CPU, cpu, installed)
        assert runtime_and_precision(choice) == ("onnxruntime", "float32")
        assert why in choice.reason
    # bf16 switched off by the operator: today's engine, whatever the CPU
    off = choose_runtime("auto", "float32", CPU, SAPPHIRE_RAPIDS, BOTH)
    assert runtime_and_precision(off) == ("onnxruntime", "float32") and "BGR_DTYPE=float32" in off.reason
    assert choose_runtime("auto", "auto", CPU, ZEN3, frozenset()).runtime == "torch"  # neither CPU runtime installed


def test_forced_runtimes_and_the_gpu():
    assert runtime_and_precision(choose_runtime("openvino", "auto", CPU, ZEN3, BOTH)) == ("openvino", "float32")  # no native bf16
    assert runtime_and_precision(choose_runtime("openvino", "auto", CPU, ZEN4, BOTH)) == ("openvino", "bfloat16")
    assert runtime_and_precision(choose_runtime("openvino", "float32", CPU, ZEN4, BOTH)) == ("openvino", "float32")
    assert runtime_and_precision(choose_runtime("torch", "auto", CPU, ZEN4, BOTH)) == ("torch", "float32")
    assert runtime_and_precision(choose_runtime("auto", "auto", torch.device("cuda"), ZEN4, BOTH)) == ("torch", "float16")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match="CPU"):
            choose_runtime(runtime, "auto", torch.device("cuda"), ZEN4, BOTH)


def test_a_published_graph_stays_on_onnxruntime_unless_openvino_is_asked_for():
    machine = choose_runtime("auto", "auto", CPU, ZEN4, BOTH)
    published, ported = CATALOGUE["birefnet-general-lite"], CATALOGUE["u2netp"]
    assert network_choice(ported, machine, "auto") == machine
    kept = network_choice(published, machine, "auto")
    assert runtime_and_precision(kept) == ("onnxruntime", "float32") and "quality gate" in kept.reason
    forced = choose_runtime("openvino", "auto", CPU, ZEN4, BOTH)
    assert network_choice(published, forced, "openvino") == forced


def test_requests_in_flight_grow_with_the_cores_on_openvino_only():
    openvino = RuntimeChoice("openvino", "bfloat16", "")
    assert [pick_infer_requests("auto", openvino, cores) for cores in (2, 8, 16, 32)] == [1, 1, 2, 4]
    assert pick_infer_requests("auto", RuntimeChoice("onnxruntime", "float32", ""), 32) == 1
    assert pick_infer_requests("3", RuntimeChoice("onnxruntime", "float32", ""), 2) == 3  # what the operator sets wins
    for bad in ("0", "-1", "two"):
        with pytest.raises(SettingsError, match="BGR_INFER_REQUESTS"):
            Settings.from_env({"BGR_INFER_REQUESTS": bad})


def test_the_default_engine_serves_both_networks_from_the_runtime_auto_picks(engine):
    installed = installed_runtimes()
    expected = choose_runtime("auto", "auto", CPU, machine_capabilities(installed), installed)
    assert engine.choice == expected
    kind = {"openvino": OvModel, "onnxruntime": OrtModel}[expected.runtime]
    assert isinstance(engine.model, kind)
    if engine.sky_model is not None:
        assert isinstance(engine.sky_model, kind)


def test_onnxruntime_matches_torch_on_a_batch(ort_scene_engine, torch_engine):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    images[1, 24:72, 24:72] = 255  # a bright square, so the two rows differ in content
    ours, theirs = ort_scene_engine.analyse(images), torch_engine.analyse(images)
    for mine, reference in zip(ours, theirs):
        assert mine.matte.shape == reference.matte.shape == (RESOLUTION, RESOLUTION)
        assert mine.matte.dtype == np.float32
        assert np.abs(mine.matte - reference.matte).max() < 1e-4
        assert mine.sky is not None and reference.sky is not None
        assert mine.sky.shape == reference.sky.shape == (SKY_SERVING_RESOLUTION,) * 2
        assert np.abs(mine.sky - reference.sky).max() < 1e-4


def test_a_missing_graph_is_exported_into_the_cache_once(lone_weights, ort_engine, onnx_cache, monkeypatch):
    exported = onnx_cache / "onnx" / onnx_name(lone_weights)
    assert ort_engine.model.path == exported
    stamp = exported.stat().st_mtime_ns
    monkeypatch.setenv("BGR_WEIGHTS_CACHE", str(onnx_cache))
    again = MattingEngine.from_settings(Settings(weights=lone_weights, device="cpu", runtime="onnxruntime", target="subject", resolution=RESOLUTION))
    assert again.model.path == exported
    assert exported.stat().st_mtime_ns == stamp
    assert not list((onnx_cache / "onnx").glob("*.partial"))


def test_fetch_writes_the_graph_beside_the_weights_and_drops_stale_ones(lone_weights, onnx_cache, tmp_path, monkeypatch):
    stale = lone_weights.parent / f"{lone_weights.stem}-0000000000000000-fp32.onnx"
    stale.write_bytes(b"from weights since replaced")
    export_graphs(lone_weights)
    beside = lone_weights.parent / onnx_name(lone_weights)
    assert beside.is_file() and not stale.exists()
    monkeypatch.setenv("BGR_WEIGHTS_CACHE", str(tmp_path))  # an empty cache: the graph beside the weights must be found
    served = MattingEngine.from_settings(Settings(weights=lone_weights, device="cpu", runtime="onnxruntime", target="subject", resolution=RESOLUTION))
    assert served.model.path == beside
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("overrides", [{"dtype": "bfloat16"}, {"device": "cuda"}])
def test_onnxruntime_is_cpu_float32_only(weights, overrides):
    with pytest.raises(ValueError, match="BGR_RUNTIME=onnxruntime"):
        MattingEngine.from_settings(Settings(weights=weights, runtime="onnxruntime", **{"device": "cpu", **overrides}))


def test_automatic_batch_is_one_image_on_the_cpu_and_a_batch_on_a_gpu():
    assert pick_batch_size(0, torch.device("cpu")) == 1
    assert pick_batch_size(0, torch.device("cuda")) == GPU_BATCH_SIZE > 1
    assert pick_batch_size(4, torch.device("cpu")) == 4  # what the operator sets wins
    with pytest.raises(SettingsError, match="BGR_MAX_BATCH_SIZE"):
        Settings.from_env({"BGR_MAX_BATCH_SIZE": "-1"})


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


def test_a_second_pass_averages_the_logits_of_both_scales(ort_engine):
    """BGR_SECOND_RESOLUTION: the matte is the sigmoid of the mean of both passes' logits, the second upsampled."""
    import dataclasses

    import torch.nn.functional as F
    from PIL import Image

    two_pass = dataclasses.replace(ort_engine, second_resolution=64)
    assert two_pass.input_filter == Image.Resampling.LANCZOS and ort_engine.input_filter == Image.Resampling.BILINEAR
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)

    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    small = F.interpolate(batch, size=(64, 64), mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
    first = ort_engine.model((batch - 128) / 256)
    second = F.interpolate(ort_engine.model((small - 128) / 256), size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    expected = torch.sigmoid((first + second) / 2)[:, 0].numpy()

    mattes = two_pass.predict(images)
    np.testing.assert_allclose(mattes, expected, atol=1e-5)
    assert np.abs(mattes - ort_engine.predict(images)).max() > 1e-3  # the second pass does change the matte
    assert [a.matte.shape for a in two_pass.analyse(images)] == [(RESOLUTION, RESOLUTION)] * 2


@pytest.mark.parametrize("second", ["-32", "40", str(RESOLUTION), str(2 * RESOLUTION), "off", "", "7.5e2"])
def test_second_resolution_is_auto_or_a_multiple_of_32_below_the_first(second):
    with pytest.raises(SettingsError, match="BGR_SECOND_RESOLUTION"):
        Settings(resolution=RESOLUTION, second_resolution=second).validate()
    for valid in ("auto", "0", str(RESOLUTION - 32)):
        Settings(resolution=RESOLUTION, second_resolution=valid).validate()


def test_the_second_pass_is_on_by_default_on_a_gpu_only(weights):
    from PIL import Image

    assert Settings().second_resolution == "auto"
    assert pick_second_resolution("auto", 1024, torch.device("cuda")) == 768
    assert pick_second_resolution("auto", 1024, torch.device("cpu")) == 0
    assert pick_second_resolution("auto", 96, torch.device("cuda")) == 64  # 3/4 of the side, down to a multiple of 32
    assert pick_second_resolution("auto", 32, torch.device("cuda")) == 0  # nothing below 32 to run
    assert pick_second_resolution("0", 1024, torch.device("cuda")) == 0  # what the operator sets wins
    assert pick_second_resolution("512", 1024, torch.device("cpu")) == 512
    engine = MattingEngine.from_settings(Settings.from_env({"BGR_WEIGHTS": str(weights), "BGR_DEVICE": "cpu", "BGR_RESOLUTION": "64", "BGR_TARGET": "subject"}))
    assert engine.second_resolution == 0 and engine.input_filter == Image.Resampling.BILINEAR


@pytest.mark.parametrize("second", ["0", "32"])
def test_the_server_resizes_as_the_engine_asks_for_one_pass_or_two(weights, tmp_path, second):
    """End to end: the server answers with what the engine gives for its input, resized with bilinear for one pass, Lanczos for two."""
    from PIL import Image

    from app.inference.pipeline import matte_at_size, model_input
    from conftest import FAST, SEGMENT, photo, png_bytes, read_png, start_server, stop_server

    # Grain makes the two resampling filters give different model inputs (on a smooth picture they nearly agree).
    grain = np.random.default_rng(2).integers(-80, 80, (150, 200, 3))
    picture = Image.fromarray(np.clip(np.asarray(photo((200, 150))).astype(int) + grain, 0, 255).astype(np.uint8))
    running = start_server({**FAST, "BGR_SECOND_RESOLUTION": second, "BGR_TARGET": "subject"}, tmp_path / "server.log")
    try:
        with running.client() as client:
            response = client.post(
                SEGMENT,
                params={"api-version": "2023-02-01-preview", "mode": "foregroundMatting"},
                content=png_bytes(picture),  # PNG: decoded at full size, then resized to the model
                headers={"Content-Type": "application/octet-stream"},
            )
    finally:
        stop_server(running)
    assert response.status_code == 200, response.text
    served = np.asarray(read_png(response.content).convert("L")).astype(int)

    local = MattingEngine.from_settings(Settings(weights=weights, device="cpu", resolution=int(FAST["BGR_RESOLUTION"]), second_resolution=second, target="subject"))
    rgb = np.asarray(picture.convert("RGB"))
    assert local.input_filter == (Image.Resampling.LANCZOS if second != "0" else Image.Resampling.BILINEAR)
    matte = local.predict(model_input(rgb, local.resolution, local.input_filter)[None])[0]
    assert np.abs(served - matte_at_size(matte, *picture.size).astype(int)).max() <= 1


def test_an_input_too_small_for_openvino_falls_back_to_onnxruntime_under_auto():
    from app.inference.engine import OPENVINO_MIN_SIDE, small_input_choice

    bf16 = RuntimeChoice("openvino", "bfloat16", "native bf16")
    assert small_input_choice(bf16, OPENVINO_MIN_SIDE, "auto") == bf16
    assert runtime_and_precision(small_input_choice(bf16, 32, "auto")) == ("onnxruntime", "float32")
    with pytest.raises(ValueError, match="at least 64"):
        small_input_choice(bf16, 32, "openvino")
    fp32 = RuntimeChoice("onnxruntime", "float32", "")
    assert small_input_choice(fp32, 32, "auto") == fp32
