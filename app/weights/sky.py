"""Where the sky network comes from, and how it is checked and converted.

A small U²-Netp trained to segment sky (MIT), published as two ncnn files in
github.com/xiongzhu666/Sky-Segmentation-and-Post-processing. The files are
looked for, in order: a folder the operator names (``--sky-source`` or
``BGR_SKY_SOURCE``), ``../shared/models/sky-u2netp`` beside the checkout, the
download cache; else they are downloaded from the repository at a pinned
commit. Either way both hashes must match before anything is converted.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from app.inference.u2net import U2NetP
from app.weights.ncnn import state_dict_from_ncnn
from app.weights import source
from app.weights.source import WeightsError, sha256_file, sha256_of

REPOSITORY = "https://github.com/xiongzhu666/Sky-Segmentation-and-Post-processing"
COMMIT = "1f7811b32b64ddc957269defff84bc87a3f0b74f"
DOWNLOAD_BASE = f"https://raw.githubusercontent.com/xiongzhu666/Sky-Segmentation-and-Post-processing/{COMMIT}"
FILES = {
    "skysegsmall_sim-opt-fp16.param": "7af3523130445db42d94503558c08ce991932f843b92e4e921c99d732768895e",
    "skysegsmall_sim-opt-fp16.bin": "ff1e18f71dc0a0cf8a56b634c59f68d296deffd015cbed27a6d5e302f991faf2",
}
PARAM_NAME, BIN_NAME = FILES
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_COPY = PROJECT_ROOT.parent / "shared" / "models" / "sky-u2netp"
DEFAULT_OUTPUT = PROJECT_ROOT / "model_weights" / "sky-u2netp.safetensors"
# The published graph takes 384 x 384 of 0-1 RGB with ImageNet's mean and deviation; the network is
# fully convolutional, so other sizes run too.
SKY_RESOLUTION = 384


@dataclass(frozen=True)
class SkyFiles:
    folder: Path
    origin: str


def has_checked_files(folder: Path) -> bool:
    """True when both files are in ``folder`` with the pinned hashes; a present but different file is an error."""
    paths = [folder / name for name in FILES]
    if not all(path.is_file() for path in paths):
        return False
    for path, expected in zip(paths, FILES.values()):
        if sha256_file(path) != expected:
            raise WeightsError(f"{path} does not have the pinned SHA-256 {expected}: not the sky network this project expects")
    return True


def download(cache_dir: Path, base_url: str, timeout_s: float = 60.0) -> Path:
    folder = cache_dir / "sky-u2netp"
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in FILES.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == expected:
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                data = response.read()
        except OSError as error:
            raise WeightsError(f"could not download {url}: {error}") from None
        if sha256_of(data) != expected:
            raise WeightsError(f"{url} does not have the pinned SHA-256 {expected}; nothing was written")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return folder


def locate(configured: Path | None, cache_dir: Path, base_url: str = DOWNLOAD_BASE, shared_copy: Path = SHARED_COPY) -> SkyFiles:
    """The checked ncnn files: from ``configured``, else the shared copy, else the cache, else downloaded."""
    if configured is not None:
        if not has_checked_files(configured):
            raise WeightsError(f"{configured} does not hold {PARAM_NAME} and {BIN_NAME}")
        return SkyFiles(configured, str(configured))
    if has_checked_files(shared_copy):
        return SkyFiles(shared_copy, str(shared_copy))
    cached = cache_dir / "sky-u2netp"
    if has_checked_files(cached):
        return SkyFiles(cached, str(cached))
    return SkyFiles(download(cache_dir, base_url), f"{base_url}/")


def is_current(weights: Path) -> bool:
    return source.is_current(weights, {"ncnn_sha256": FILES})


def convert(files: SkyFiles, output: Path) -> int:
    """Write the safetensors weights and their manifest; returns the number of tensors."""
    from safetensors.torch import save_file

    # The converter matches layers to the module by running it once; 64 x 64 is the smallest input all stages take.
    state = state_dict_from_ncnn(
        (files.folder / PARAM_NAME).read_text(), (files.folder / BIN_NAME).read_bytes(), U2NetP(), torch.zeros(1, 3, 64, 64)
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)
    tmp.replace(output)
    manifest = {
        "architecture": "U²-Netp (Qin et al., 2020) trained to segment sky; input 384x384 RGB, ImageNet mean/std",
        "source_repository": REPOSITORY,
        "source_commit": COMMIT,
        "obtained_from": files.origin,
        "ncnn_sha256": FILES,
        "safetensors_sha256": sha256_file(output),
        "tensors": len(state),
        "licence": "MIT",
        "licence_source": f"{REPOSITORY}/blob/{COMMIT}/LICENSE",
    }
    source.manifest_path(output).write_text(json.dumps(manifest, indent=2) + "\n")
    return len(state)
