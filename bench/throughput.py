"""Throughput and latency, this service against rembg on the same IS-Net weights (issue 5, item 1).

    python bench/throughput.py                                     # the full sweep (long: hours on 2 cores)
    python bench/throughput.py --sizes 0.3 --concurrency 1,4 --requests 3      # a smoke run

Three systems, one at a time, on the same generated JPEGs (bench/inputs.py) and modes:

- ``service``: this service over HTTP (``python -m app`` on a free loopback port; ``--service-env
  BGR_X=Y`` adds settings);
- ``rembg-server``: ``rembg s`` over HTTP, ``dis_custom`` session on an fp32 ONNX export of this
  project's module (bench/rembg_model.py) inside rembg's models folder (``U2NET_HOME``);
  ``only_mask`` stands for foregroundMatting;
- ``rembg-lib``: rembg's ``remove()`` called in a loop (one at a time; concurrency 1 only).

For every image size x mode x concurrency: p50 and p95 latency (send to last response byte),
images per second (requests / wall time), peak RSS of the serving process during the cell
(bench/procs.py), and the ratios of the service against rembg's server at the same concurrency
and against rembg's library loop. Writes ``throughput-<tag>.json`` and a plot to ``--out``, and
prints a Markdown table. The load average before and after each system is recorded too: a
number measured on a busy machine says little.

rembg's server extra pins older FastAPI/Uvicorn than the service uses, so ``rembg s`` runs from
its own virtual environment (``--rembg-server-python``; ``make bench-setup`` makes ``.venv-rembg``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from inputs import make_jpeg  # noqa: E402
from loadgen import LoadResult, run_load  # noqa: E402
from procs import Server, cpu_seconds, free_port, peak_rss_mb, reset_peak_rss, start_server  # noqa: E402
from rembg_model import DEFAULT_HOME, model_path  # noqa: E402
from report import markdown_table, plot, ratios  # noqa: E402

MODES = ("backgroundRemoval", "foregroundMatting")
SYSTEMS = ("service", "rembg-server", "rembg-lib")
SEGMENT = "/computervision/imageanalysis:segment"


@dataclass
class Cell:
    system: str
    megapixels: float
    image: str
    mode: str
    concurrency: int
    requests: int
    ok: int
    errors: list[str]
    p50_s: float | None
    p95_s: float | None
    images_per_s: float | None
    peak_rss_mb: float | None
    # CPU cores kept busy on average over the cell (CPU seconds / wall seconds): the server's and the
    # load generator's, to tell a busy server from a client that cannot keep up.
    server_cores: float | None = None
    client_cores: float | None = None


def summarise(system: str, megapixels: float, image: Path, mode: str, concurrency: int, requests: int,
              latencies: list[float], errors: list[str], wall_s: float, rss: float | None,
              server_cpu_s: float | None = None, client_cpu_s: float | None = None) -> Cell:
    ok = len(latencies)
    per_wall = lambda seconds: seconds / wall_s if seconds is not None and wall_s > 0 else None  # noqa: E731
    return Cell(
        system, megapixels, image.name, mode, concurrency, requests, ok, errors[:5],
        float(np.percentile(latencies, 50)) if ok else None,
        float(np.percentile(latencies, 95)) if ok else None,
        ok / wall_s if ok and wall_s > 0 else None,
        rss,
        per_wall(server_cpu_s),
        per_wall(client_cpu_s),
    )


def service_sender(base_url: str, data: bytes, mode: str):
    url = f"{base_url}{SEGMENT}?api-version=2023-02-01-preview&mode={mode}"
    return lambda client: client.post(url, content=data, headers={"Content-Type": "image/jpeg"})


def rembg_sender(base_url: str, data: bytes, mode: str, onnx_path: Path):
    params = {"extras": json.dumps({"model_path": str(onnx_path)})}
    form = {"model": "dis_custom", "om": "true" if mode == "foregroundMatting" else "false"}
    return lambda client: client.post(
        f"{base_url}/api/remove", params=params, data=form, files={"file": ("image.jpg", data, "image/jpeg")}
    )


def sweep_server(server: Server, sender, images: dict[float, Path], modes: list[str], concurrency: list[int],
                 requests: int, client_processes: int = 1) -> list[Cell]:
    cells = []
    for megapixels, image in images.items():
        data = image.read_bytes()
        for mode in modes:
            send = sender(server.base_url, data, mode)
            warm = run_load(send, 1, 1)  # not counted: first-use costs (session creation, allocator growth)
            if warm.errors:
                raise RuntimeError(f"{server.name} failed its warm-up request: {warm.errors[0]}")
            for level in concurrency:
                reset_peak_rss(server.pid)
                cpu_before = cpu_seconds(server.pid)
                result: LoadResult = run_load(send, level, requests, processes=client_processes)
                cpu_after = cpu_seconds(server.pid)
                server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
                cell = summarise(server.name, megapixels, image, mode, level, requests, result.latencies_s, result.errors,
                                 result.wall_s, peak_rss_mb(server.pid), server_cpu, result.client_cpu_s)
                print(json.dumps(asdict(cell)), flush=True)
                cells.append(cell)
    return cells


def run_service(args: argparse.Namespace, images: dict[float, Path]) -> list[Cell]:
    port = free_port()
    env = {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), **dict(kv.split("=", 1) for kv in args.service_env)}
    server = start_server("service", [sys.executable, "-m", "app"], env, port, "/health/ready", args.out / "logs", cwd=ROOT)
    try:
        return sweep_server(server, service_sender, images, args.modes, args.concurrency, args.requests, args.client_processes)
    finally:
        server.stop()


def run_rembg_server(args: argparse.Namespace, images: dict[float, Path], onnx_path: Path) -> list[Cell]:
    port = free_port()
    command = [args.rembg_server_python, "-c", "from rembg.cli import main; main()",
               "s", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--log_level", "warning"]
    # BROWSER=true: rembg's start-up opens a web browser; make that a no-op.
    env = {"U2NET_HOME": str(args.rembg_home), "BROWSER": "true"}
    server = start_server("rembg-server", command, env, port, "/api", args.out / "logs")
    try:
        sender = lambda base, data, mode: rembg_sender(base, data, mode, onnx_path)  # noqa: E731
        return sweep_server(server, sender, images, args.modes, args.concurrency, args.requests, args.client_processes)
    finally:
        server.stop()


def run_rembg_library(args: argparse.Namespace, images: dict[float, Path], onnx_path: Path) -> list[Cell]:
    spec = [{"image": str(image), "mode": mode, "requests": args.requests, "megapixels": mp}
            for mp, image in images.items() for mode in args.modes]
    completed = subprocess.run(
        [args.rembg_python, str(ROOT / "bench" / "rembg_library.py"), str(onnx_path)],
        input=json.dumps(spec), capture_output=True, text=True, env={**os.environ, "U2NET_HOME": str(args.rembg_home)},
    )
    if completed.returncode:
        raise RuntimeError(f"rembg library worker failed:\n{completed.stderr[-2000:]}")
    cells = []
    for line in completed.stdout.splitlines():
        row = json.loads(line)
        cell = summarise("rembg-lib", row["megapixels"], Path(row["image"]), row["mode"], 1, row["requests"],
                         row["latencies_s"], [], row["wall_s"], row["peak_rss_mb"])
        print(json.dumps(asdict(cell)), flush=True)
        cells.append(cell)
    return cells


def versions(pythons: dict[str, str]) -> dict[str, object]:
    """The service's torch, and rembg and onnxruntime as each rembg environment has them."""
    import torch

    probe = "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in ('rembg', 'onnxruntime')}))"
    out: dict[str, object] = {"python": platform.python_version(), "torch": torch.__version__}
    for name, python in pythons.items():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        out[name] = json.loads(found.stdout) if found.returncode == 0 else f"not found ({python})"
    return out


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx_ne_convert") if f" {f}" in flags]
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "logical_cpus": os.cpu_count(), "isa": isa, "memory_gb": round(mem_gb, 1), "os": platform.platform()}


def csv_floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def csv_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def csv_names(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = set(names) - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}; choose from {', '.join(allowed)}")
        return names
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_server_python = ROOT / ".venv-rembg" / "bin" / "python"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=csv_floats, default=[0.3, 2.0, 12.0], help="megapixels, comma-separated")
    parser.add_argument("--modes", type=csv_names(MODES), default=list(MODES))
    parser.add_argument("--concurrency", type=csv_ints, default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=16, help="measured requests per cell (after one warm-up)")
    parser.add_argument("--systems", type=csv_names(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--client-processes", type=int, default=1,
                        help="load-generator processes (one Python process cannot keep a GPU server busy)")
    parser.add_argument("--service-env", action="append", default=[], metavar="BGR_X=VALUE", help="extra service settings")
    parser.add_argument("--rembg-python", default=sys.executable, help="Python with rembg[cpu] (the library loop)")
    parser.add_argument("--rembg-server-python", default=str(default_server_python) if default_server_python.exists() else sys.executable,
                        help="Python with rembg[cpu,cli] (rembg s); default .venv-rembg when present")
    parser.add_argument("--rembg-home", type=Path, default=DEFAULT_HOME, help="rembg's U2NET_HOME (the ONNX export goes inside)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.concurrency) < 1 or args.client_processes < 1:
        parser.error("--requests, --concurrency and --client-processes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = {mp: make_jpeg(mp, args.out / "inputs") for mp in args.sizes}
    needs_onnx = {"rembg-server", "rembg-lib"} & set(args.systems)
    onnx_path = model_path(args.rembg_home) if needs_onnx else None
    cells: list[Cell] = []
    load: dict[str, list[float]] = {}
    for system in args.systems:
        before = os.getloadavg()[0]
        if system == "service":
            cells += run_service(args, images)
        elif system == "rembg-server":
            cells += run_rembg_server(args, images, onnx_path)
        else:
            cells += run_rembg_library(args, images, onnx_path)
        load[system] = [round(before, 2), round(os.getloadavg()[0], 2)]
    rows = [asdict(c) for c in cells]
    report = {
        "machine": machine(),
        "versions": versions({"rembg-lib": args.rembg_python, "rembg-server": args.rembg_server_python}),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "inputs": {str(mp): {"file": p.name, "bytes": p.stat().st_size} for mp, p in images.items()},
        "load_average_1min_before_after": load,
        "cells": rows,
        "ratios": ratios(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"throughput-{args.tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(rows, report["ratios"]))
    print(f"wrote {path}")
    if not args.no_plot:
        print(plot(rows, args.out / f"throughput-{args.tag}.png") or "no plot: matplotlib is not installed")
    return 1 if any(c.errors for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
