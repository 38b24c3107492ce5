"""``weights fetch --model NAME``: a catalogued network, downloaded (or taken from ``--source``), checked, and
converted to the project's own module where its family has one, else put in place as its ONNX graph.

What ends in the weights folder is complete and checked: the download stays in the cache until its
size and hash match, and every file is moved into place atomically. A manifest beside the weights
records where they came from, so a second fetch with nothing changed does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from app.catalogue import Network
from app.storage import sha256_file
from app.weights.download import check_file, download, install
from app.weights.source import WeightsError, is_current, manifest_path, refresh_provenance, write_manifest

if TYPE_CHECKING:
    from torch import nn


def source_pins(network: Network) -> dict[str, object]:
    return {"source_url": network.source.url, "source_md5": network.source.md5, "source_sha256": network.source.sha256}


def obtain(network: Network, cache_dir: Path, from_source: Path | None, progress: bool = True) -> Path:
    """The checked published file: ``from_source`` (an offline copy) or a download into the cache."""
    if from_source is not None:
        if not from_source.is_file():
            raise WeightsError(f"--source {from_source}: no such file")
        check_file(from_source, network.source)
        return from_source
    return download(network.source, cache_dir, os.path.basename(urlsplit(network.source.url).path), progress=progress)


def convert(network: Network, onnx_path: Path, output: Path) -> int:
    """The graph's weights into the family's module (strict names and shapes), written atomically as safetensors."""
    from safetensors.torch import save_file

    from app.inference.families import MODULES
    from app.weights.convert import state_dict_by_call_order, state_dict_from_onnx

    onnx_bytes = onnx_path.read_bytes()
    model = MODULES[network.family]()
    try:
        # Graphs that kept their module paths in node names (today's IS-Net) are matched by name.
        state = state_dict_from_onnx(onnx_bytes)
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError):
        try:
            state = state_dict_by_call_order(onnx_bytes, model)
        except (ValueError, RuntimeError) as error:
            raise WeightsError(f"{network.name}: the graph does not fit the project's {network.family} module: {error}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(temporary), metadata={"format": "pt"})
        temporary.chmod(0o644)  # safetensors writes 0600; the service may run as another user
        temporary.replace(output)
    finally:
        temporary.unlink(missing_ok=True)
    return len(state)


def fetch_model(network: Network, models_dir: Path, cache_dir: Path, from_source: Path | None, force: bool,
                export_onnx: bool = True, progress: bool = True) -> Path:
    """Put ``network``'s weights where the service loads them; the path written (or already current)."""
    output = network.weights_path(models_dir)
    pins = source_pins(network)
    if not force and is_current(output, pins):
        refreshed = refresh_provenance(output, network.provenance())
        print(f"{network.name}: weights up to date: {output}" + (" (its manifest's licence record brought in step with the catalogue)" if refreshed else ""))
        return output
    if network.needs_acceptance:
        print(f"note: {network.name} is under {network.licence.name} ({network.licence.url}); "
              f"the service loads it only with BGR_ACCEPT_LICENCES={network.name}")
    published = obtain(network, cache_dir, from_source, progress)
    if network.runtime == "torch":
        tensors = convert(network, published, output)
        detail: dict[str, object] = {"tensors": tensors, "dtype": "float32", "module": network.family}
    else:
        install(published, output)
        detail = {"runtime": "onnxruntime"}
    manifest = {
        "model": network.name,
        "family": network.family,
        **pins,
        "obtained_from": str(from_source) if from_source is not None else network.source.url,
        "safetensors_sha256": sha256_file(output),  # the name is_current reads, for either kind of file
        **detail,
        **network.provenance(),
    }
    write_manifest(output, manifest)
    print(f"{network.name}: wrote {output} and {manifest_path(output).name}")
    if network.runtime == "torch" and export_onnx:
        from app.inference.families import loader

        export_graph(output, loader(network.family))
    return output


def export_graph(path: Path, load: Callable[[Path], nn.Module]) -> None:
    """The fp32 ONNX graph the CPU runtime serves ``path`` from, exported beside it (once per weights file)."""
    from app.inference.ort_backend import export_onnx, onnx_name

    out = path.parent / onnx_name(path)
    if out.is_file():
        print(f"ONNX graph up to date: {out}")
        return
    for stale in path.parent.glob(f"{path.stem}-*-fp32.onnx"):
        stale.unlink()  # exported from weights since replaced
    export_onnx(load(path), out)
    out.chmod(0o644)
    print(f"wrote {out}")
