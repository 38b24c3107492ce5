"""bench/gpu.sh's helpers: the host's description, a line stamper, a utilisation sampler, and the run's summary.

    python bench/gpu_summary.py host OUT_DIR [--device cuda]           # host.json and lscpu.txt: cores, CPU, GPU, versions
    python bench/gpu_summary.py stamp -- COMMAND...                     # COMMAND's output, each line after its unix time
    python bench/gpu_summary.py sample-cpu FILE [--interval-ms 200]    # smoke runs: CPU busy %, nvidia-smi's CSV shape
    python bench/gpu_summary.py summarise OUT_DIR [--passes 2 --batch 32]

``summarise`` reads what gpu.sh left in OUT_DIR: ``host.json``, ``gpu_model.json`` (model-only
images/s per passes x batch), the HTTP runs' logs (``http-workers-N.log``: bench/throughput.py's
output stamped, so each cell's JSON line carries the time the cell ended) with the utilisation
samples taken during that run (``util-workers-N.csv``: nvidia-smi's ``timestamp, utilization.gpu,
memory.used``), and ``device_pixels.json``. Utilisation is summarised
over each cell's measured window only (its end back by requests / images/s), not over start-up.
Writes ``summary.md`` and ``summary.json`` and prints the Markdown.

The goals (issue 19): end-to-end images/s at least 0.7x the model-only images/s at the same passes
and batch size, and at least 150 cut-outs/s and 200 mattes/s (2 MP JPEGs, default settings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

GOAL_RATIO = 0.7
GOAL_IMAGES_PER_S = {"backgroundRemoval": 150.0, "foregroundMatting": 200.0}


def host(out: Path, device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch")
    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:
        vision = None
        print("torchvision is missing: BGR_DEVICE_PIXELS=auto leaves the pixels on the CPU", file=sys.stderr)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    (out / "lscpu.txt").write_text(lscpu)
    described = {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or os.cpu_count() or 0),
        "cpu": next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), platform.processor()),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else "none (a smoke run on the CPU)",
        "torch": torch.__version__,
        "torchvision": vision,
        "python": platform.python_version(),
    }
    (out / "host.json").write_text(json.dumps(described, indent=1))
    print(lscpu)
    print(json.dumps(described))


def stamp(command: list[str]) -> int:
    """Run ``command``; print each line of its output (stdout and stderr) after the unix time it came."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert process.stdout is not None
    for line in process.stdout:
        print(f"{time.time():.3f} {line}", end="", flush=True)
    return process.wait()


def sample_cpu(path: Path, interval_s: float) -> None:
    """Until killed: CPU busy % from /proc/stat as ``timestamp, busy, 0`` lines (nvidia-smi's format), for smoke runs."""

    def totals() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    before = totals()
    with path.open("a") as out:
        while True:
            time.sleep(interval_s)
            after = totals()
            total, idle = after[0] - before[0], after[1] - before[1]
            busy = 100.0 * (total - idle) / total if total else 0.0
            stamp = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
            out.write(f"{stamp}, {busy:.0f}, 0\n")
            out.flush()
            before = after


def read_samples(path: Path) -> list[tuple[float, float]]:
    """(unix time, utilisation %) from nvidia-smi's ``--format=csv,noheader,nounits`` lines; unreadable lines skipped."""
    samples = []
    if not path.is_file():
        return samples
    for line in path.read_text().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((stamp, float(re.sub(r"[^0-9.]", "", parts[1]))))
        except ValueError:
            continue
    return samples


def read_cells(times_path: Path) -> list[tuple[float, dict]]:
    """(unix time the cell ended, its JSON) for each cell line throughput.py printed."""
    cells = []
    if not times_path.is_file():
        return cells
    for line in times_path.read_text().splitlines():
        stamp, _, rest = line.partition(" ")
        if not rest.startswith("{"):
            continue
        try:
            cell = json.loads(rest)
            cells.append((float(stamp), cell))
        except ValueError:
            continue
    return [(stamp, cell) for stamp, cell in cells if "images_per_s" in cell]


def utilisation(samples: list[tuple[float, float]], start: float, end: float) -> dict | None:
    inside = [value for stamp, value in samples if start <= stamp <= end]
    if not inside:
        return None
    return {"mean": float(np.mean(inside)), "p50": float(np.median(inside)), "samples": len(inside)}


def model_only(gpu_model: dict, passes: int, batch: int) -> float | None:
    """Model-only images/s at ``passes`` and ``batch``: eager, as the service runs the model."""
    for row in gpu_model.get("rows", []):
        if row.get("passes", 1) == passes and row["batch"] == batch:
            return row["eager_images_per_s"]
    return None


def summarise(out: Path, passes: int, batch: int) -> dict:
    load = lambda name: json.loads((out / name).read_text()) if (out / name).is_file() else {}  # noqa: E731
    host, gpu_model, pixels = load("host.json"), load("gpu_model.json"), load("device_pixels.json")
    reference = model_only(gpu_model, passes, batch)
    http = []
    for times_path in sorted(out.glob("http-workers-*.log")):
        workers = times_path.stem.removeprefix("http-workers-")
        samples = read_samples(out / f"util-workers-{workers}.csv")
        for ended, cell in read_cells(times_path):
            ips = cell.get("images_per_s")
            window = (ended - cell["ok"] / ips, ended) if ips else (ended, ended)
            http.append({
                "workers": workers,
                "mode": cell["mode"],
                "megapixels": cell["megapixels"],
                "clients": cell["concurrency"],
                "requests": cell["requests"],
                "ok": cell["ok"],
                "errors": cell.get("errors", []),
                "images_per_s": ips,
                "p50_s": cell.get("p50_s"),
                "p95_s": cell.get("p95_s"),
                "server_cores": cell.get("server_cores"),
                "utilisation": utilisation(samples, *window),
                "vs_model_only": ips / reference if ips and reference else None,
                "goal_images_per_s": GOAL_IMAGES_PER_S.get(cell["mode"]),
            })
    summary = {"host": host, "model_only": {"passes": passes, "batch": batch, "images_per_s": reference,
                                            "device": gpu_model.get("device")},
               "http": http, "device_pixels": pixels.get("rows", {}), "device_pixels_device": pixels.get("device")}
    markdown = render(summary)
    (out / "summary.md").write_text(markdown)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(markdown)
    return summary


def fmt(value, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def render(summary: dict) -> str:
    host, reference = summary["host"], summary["model_only"]
    lines = [
        "## gpu.sh summary",
        "",
        f"Host: {host.get('gpu', '?')}; {host.get('nproc', '?')} cores (nproc), {host.get('cpu', '?')}; torch {host.get('torch', '?')}",
        "",
        f"Model only ({reference['device']}): {fmt(reference['images_per_s'])} images/s at {reference['passes']} pass(es), "
        f"batch {reference['batch']} (eager, as served); the goal ratio is against it.",
        "",
        "| workers | mode | clients | img/s | p50 s | p95 s | errors | GPU util mean / p50 % | server cores | ÷ model only | goal ratio 0.7 | goal img/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in summary["http"]:
        util = row["utilisation"]
        ratio = row["vs_model_only"]
        goal = row["goal_images_per_s"]
        lines.append(
            f"| {row['workers']} | {row['mode']} | {row['clients']} | {fmt(row['images_per_s'])} | {fmt(row['p50_s'], '.3f')} | "
            f"{fmt(row['p95_s'], '.3f')} | {row['requests'] - row['ok']} | "
            f"{fmt(util and util['mean'], '.0f')} / {fmt(util and util['p50'], '.0f')} | {fmt(row['server_cores'], '.1f')} | "
            f"{fmt(ratio, '.2f')} | {'' if ratio is None else ('met' if ratio >= GOAL_RATIO else 'not met')} | "
            f"{'' if not goal or row['images_per_s'] is None else ('met' if row['images_per_s'] >= goal else 'not met') + f' ({goal:.0f})'} |"
        )
    if summary["device_pixels"]:
        lines += ["", f"Device pixels on {summary['device_pixels_device']} against the CPU path (bench/device_pixels.py):", "",
                  "| stage | max grey-level difference | values differing | mean abs difference |", "|---|---:|---:|---:|"]
        for name, row in summary["device_pixels"].items():
            lines.append(f"| {name} | {row['max_difference']} | {row['differing_share']:.2e} | {row['mean_abs_difference']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    described = commands.add_parser("host")
    described.add_argument("out", type=Path)
    described.add_argument("--device", default="cuda")
    stamped = commands.add_parser("stamp")
    stamped.add_argument("run", nargs=argparse.REMAINDER)
    sampler = commands.add_parser("sample-cpu")
    sampler.add_argument("file", type=Path)
    sampler.add_argument("--interval-ms", type=float, default=200)
    summary = commands.add_parser("summarise")
    summary.add_argument("out", type=Path)
    summary.add_argument("--passes", type=int, default=2, help="the model-only row the ratio is against: the served passes")
    summary.add_argument("--batch", type=int, default=32, help="... and batch size (BGR_MAX_BATCH_SIZE of the HTTP runs)")
    args = parser.parse_args(argv)
    if args.command == "host":
        host(args.out, args.device)
        return 0
    if args.command == "stamp":
        return stamp(args.run[1:] if args.run[:1] == ["--"] else args.run)
    if args.command == "sample-cpu":
        sample_cpu(args.file, args.interval_ms / 1000)
        return 0
    result = summarise(args.out, args.passes, args.batch)
    return 0 if result["http"] else 1


if __name__ == "__main__":
    sys.exit(main())
