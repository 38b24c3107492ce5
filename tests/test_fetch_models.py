"""``weights fetch --model``: an offline copy through --source, and downloads from a real HTTP server on loopback.

The download tests serve a few megabytes of bytes catalogued like a network's graph: a hash
mismatch is refused, a dropped connection leaves nothing loadable and a retry resumes (or restarts,
where the server ignores ranges), and a redirect is followed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from safetensors.torch import load_file

from app.catalogue import CATALOGUE, Source
from app.inference.u2net import U2NetP
from app.weights.models import fetch_model
from app.weights.source import WeightsError

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = np.random.default_rng(20).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()


class Files(http.server.BaseHTTPRequestHandler):
    """``/file`` with Range support; ``/moved`` redirects to it. ``drops`` first answers are cut in half."""

    drops = 0
    ranges = True
    body = PAYLOAD
    seen: list[str | None] = []

    def do_GET(self) -> None:
        cls = type(self)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/file")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        cls.seen.append(self.headers.get("Range"))
        start = 0
        if cls.ranges and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        part = cls.body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(cls.body) - 1}/{len(cls.body)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if cls.drops > 0:
            cls.drops -= 1
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def files() -> Iterator[tuple[str, type[Files]]]:
    handler = type("Handler", (Files,), {"seen": [], "drops": 0, "ranges": True})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def served_network(url: str, md5: str = hashlib.md5(PAYLOAD).hexdigest()):
    """A network that runs its graph as published (so the fetch installs the bytes), catalogued at ``url``."""
    return dataclasses.replace(CATALOGUE["birefnet-general-lite"], source=Source(url, size=len(PAYLOAD), md5=md5))


def loadable(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.glob("*") if not p.name.startswith("."))


def test_a_hash_mismatch_is_refused_and_nothing_is_left_to_load(files, tmp_path):
    base, _ = files
    models, cache = tmp_path / "models", tmp_path / "cache"
    with pytest.raises(WeightsError, match="MD5"):
        fetch_model(served_network(f"{base}/file", md5="0" * 32), models, cache, None, False, progress=False)
    assert not models.exists() or loadable(models) == []
    assert list((cache / "downloads").glob("*")) == []  # the wrong bytes are not kept to resume from


def test_a_dropped_connection_leaves_nothing_loadable_and_the_retry_resumes(files, tmp_path, monkeypatch):
    base, handler = files
    models, cache = tmp_path / "models", tmp_path / "cache"
    network = served_network(f"{base}/file")
    handler.drops = 4  # more than one fetch's attempts
    with pytest.raises(WeightsError, match="failed 4 times"):
        fetch_model(network, models, cache, None, False, progress=False)
    assert not models.exists() or loadable(models) == []
    partial = cache / "downloads" / "file.partial"  # named after the URL's file, in the cache only
    assert 0 < partial.stat().st_size < len(PAYLOAD)
    handler.drops = 1
    written = fetch_model(network, models, cache, None, False, progress=False)
    assert written.read_bytes() == PAYLOAD and written.name == "birefnet-general-lite.onnx"
    assert handler.seen[0] is None and all(r is not None and r.startswith("bytes=") for r in handler.seen[1:])
    manifest = json.loads((models / "birefnet-general-lite.json").read_text())
    assert manifest["source_md5"] == hashlib.md5(PAYLOAD).hexdigest() and manifest["commercial_use"] is True
    assert {key: manifest[key] for key in network.provenance()} == network.provenance()  # the authors' licence, and rembg's


def test_a_server_that_ignores_ranges_gets_a_fresh_download(files, tmp_path):
    base, handler = files
    handler.ranges = False
    handler.drops = 1
    written = fetch_model(served_network(f"{base}/file"), tmp_path / "models", tmp_path / "cache", None, False, progress=False)
    assert written.read_bytes() == PAYLOAD and len(handler.seen) == 2


def test_a_redirect_is_followed(files, tmp_path):
    base, handler = files
    written = fetch_model(served_network(f"{base}/moved"), tmp_path / "models", tmp_path / "cache", None, False, progress=False)
    assert written.read_bytes() == PAYLOAD and handler.seen == [None]


def test_fetch_through_source_converts_rembgs_u2netp_strictly(rembg_u2netp, tmp_path):
    models, cache = tmp_path / "models", tmp_path / "cache"
    command = [sys.executable, "-m", "app.weights", "fetch", "--model", "u2netp", "--source", str(rembg_u2netp),
               "--models-dir", str(models), "--cache", str(cache), "--onnx", "off"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    U2NetP().load_state_dict(load_file(str(models / "u2netp.safetensors")), strict=True)
    manifest = json.loads((models / "u2netp.json").read_text())
    assert manifest["source_md5"] == "8e83ca70e441ab06c318d82300c84806" and manifest["tensors"] == 238
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "up to date" in again.stdout

    # A changed copy is refused before anything is converted.
    tampered = tmp_path / "u2netp.onnx"
    tampered.write_bytes(rembg_u2netp.read_bytes()[:-1] + b"\0")
    other = tmp_path / "other"
    refused = subprocess.run([*command[:7], str(tampered), "--models-dir", str(other), "--cache", str(cache)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "MD5" in refused.stderr and not other.exists()


def test_a_graph_that_does_not_fit_the_module_is_refused(rembg_u2netp, tmp_path):
    """u2netp's graph catalogued as the full U²-Net: the shapes differ, so nothing is written."""
    wrong = dataclasses.replace(CATALOGUE["u2net"], source=CATALOGUE["u2netp"].source)
    with pytest.raises(WeightsError, match="does not fit the project's u2net module"):
        fetch_model(wrong, tmp_path / "models", tmp_path / "cache", rembg_u2netp, False, progress=False)
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").glob("*")) == []
