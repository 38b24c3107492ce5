"""The serving ceiling: everything but the networks, at several worker counts (issue 19, item 3).

    python bench/ceiling.py                                  # 2 MP cut-outs and mattes at 1, 2 and auto workers
    python bench/ceiling.py --workers 1,2,4 --concurrency 16 --requests 96

The networks are made negligible, as bench/memory.py does: ``BGR_RESOLUTION=64`` (IS-Net at 64²,
1/256 of its work at 1024²) and ``BGR_TARGET=subject`` (no sky network, no person detector), so
what is measured is the rest of a request: receiving the body, decoding, resizing, the matte's
upsampling, PNG deflate, streaming. Every result is labelled so. For each worker count
(``BGR_WORKERS``: numbers or ``auto``) and mode, under closed-loop load (bench/loadgen.py):

- requests/s;
- CPU-seconds per request of all the serving processes together (utime + stime from /proc of the
  supervisor and its workers, before and after), and the cores they kept busy;
- the GIL-held share: py-spy (the bench extra) samples each serving process in ``--gil`` mode in a
  second, identical run, which counts only the moments a thread holds the interpreter lock. Reported
  as GIL-seconds per request, their share of the request's CPU-seconds, and how busy each process's
  lock was (GIL-seconds / wall seconds / processes). A process serves at most 1 / (GIL-seconds per
  request) requests/s; where that is reached, more cores only help through more processes.

Every service stays up for the whole run and the cells go round after round, each service in turn,
so that whatever else the machine runs falls on every setting alike. Each cell records the cores
the rest of the machine used meanwhile (/proc/stat less the serving and load processes); the table
gives medians over the rounds where that stayed under ``--max-other-cores``. Writes
``ceiling-<tag>.json`` (every cell and the medians) to ``--out`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inputs import make_jpeg  # noqa: E402
from loadgen import run_load  # noqa: E402
from procs import Server, free_port, machine_busy_seconds, process_tree, start_server, tree_cpu_seconds  # noqa: E402
from throughput import MODES, csv_names, machine, service_sender  # noqa: E402

from app.settings import Settings  # noqa: E402
from app.workers import available_cores, worker_count  # noqa: E402

NEGLIGIBLE_NETWORKS = {"BGR_RESOLUTION": "64", "BGR_TARGET": "subject"}
LABEL = "networks negligible: BGR_RESOLUTION=64 (IS-Net at 64²), BGR_TARGET=subject (no sky network)"
SAMPLE_RATE = 100  # py-spy samples a second


@dataclass
class Cell:
    workers_setting: str
    workers: int
    mode: str
    megapixels: float
    concurrency: int
    requests: int
    errors: list[str]
    requests_per_s: float
    p50_s: float
    cpu_s_per_request: float
    server_cores: float  # CPU-seconds of the serving processes / wall seconds
    client_cores: float
    other_cores: float | None  # the rest of the machine meanwhile: above a few tenths, the cell was disturbed
    gil_s_per_request: float | None = None
    gil_share_of_cpu: float | None = None  # GIL-seconds / CPU-seconds, per request
    gil_busy_per_process: float | None = None  # GIL-seconds / wall seconds / processes
    profiled_requests_per_s: float | None = None  # the py-spy run's own rate (py-spy takes some CPU too)
    round: int = 0  # which round; in a median, how many rounds


def serving_pids(server: Server, workers: int) -> list[int]:
    """The processes that serve requests: the one process, or the supervisor's workers (from its log)."""
    if workers == 1:
        return [server.pid]
    for line in server.log_path.read_text().splitlines():
        if '"workers started"' in line:
            return json.loads(line)["pids"]
    raise RuntimeError(f"no 'workers started' line in {server.log_path}")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def gil_seconds(binary: str, pids: list[int], run, folder: Path) -> tuple[float, object]:
    """Run ``run()`` while py-spy samples each process in ``--gil`` mode; the GIL-held seconds of all, and run's result."""
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        out = folder / f"gil-{pid}.txt"
        command = [binary, "record", "--pid", str(pid), "--gil", "--idle", "--nonblocking", "--rate", str(SAMPLE_RATE),
                   "--format", "raw", "--output", str(out)]
        spies.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out))
    time.sleep(1.0)  # py-spy attaches
    result = run()
    samples = 0
    for spy, out in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
        _, stderr = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {stderr.strip()[-500:]}")
        # Each line: a stack, then how many samples held the GIL in it.
        samples += sum(int(line.rsplit(" ", 1)[1]) for line in out.read_text().splitlines() if line.strip())
    return samples / SAMPLE_RATE, result


@dataclass
class Service:
    setting: str
    workers: int
    server: Server
    pids: list[int]


def start_service(setting: str, args: argparse.Namespace) -> Service:
    port = free_port()
    env = {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), "BGR_WORKERS": setting, **NEGLIGIBLE_NETWORKS,
           **dict(kv.split("=", 1) for kv in args.service_env)}
    workers = worker_count(Settings.from_env({**os.environ, **env}))
    server = start_server(f"service-{setting}", [sys.executable, "-m", "app"], env, port, "/health/ready", args.out / "logs", cwd=ROOT)
    return Service(setting, workers, server, serving_pids(server, workers))


def measure(service: Service, mode: str, args: argparse.Namespace, data: bytes, spy: str | None, round_: int) -> Cell:
    send = service_sender(service.server.base_url, data, mode)

    def load():
        return run_load(send, args.concurrency, args.requests, processes=args.client_processes)

    warm = run_load(send, args.concurrency, args.concurrency)  # every worker's first-use costs, not counted
    if warm.errors:
        raise RuntimeError(f"warm-up failed: {warm.errors[0]}")
    tree = process_tree(service.server.pid)
    cpu_before, busy_before = tree_cpu_seconds(tree), machine_busy_seconds()
    result = load()
    cpu = tree_cpu_seconds(tree) - cpu_before
    busy_after = machine_busy_seconds()
    others = None if busy_before is None or busy_after is None else busy_after - busy_before - cpu - result.client_cpu_s
    ok = len(result.latencies_s)
    cell = Cell(
        service.setting, service.workers, mode, args.megapixels, args.concurrency, args.requests, result.errors[:5],
        requests_per_s=round(ok / result.wall_s, 2),
        p50_s=round(float(np.median(result.latencies_s)), 3) if ok else float("nan"),
        cpu_s_per_request=round(cpu / max(ok, 1), 4),
        server_cores=round(cpu / result.wall_s, 2),
        client_cores=round(result.client_cpu_s / result.wall_s, 2),
        other_cores=None if others is None else round(max(0.0, others) / result.wall_s, 2),
        round=round_,
    )
    if spy is not None:
        gil, profiled = gil_seconds(spy, service.pids, load, args.out / "logs" / f"gil-{service.setting}-{mode}-{round_}")
        profiled_ok = len(profiled.latencies_s)
        cell.gil_s_per_request = round(gil / max(profiled_ok, 1), 4)
        cell.gil_share_of_cpu = round(cell.gil_s_per_request / cell.cpu_s_per_request, 3)
        cell.gil_busy_per_process = round(gil / profiled.wall_s / len(service.pids), 3)
        cell.profiled_requests_per_s = round(profiled_ok / profiled.wall_s, 2)
    print(json.dumps(asdict(cell)), flush=True)
    return cell


MEDIAN_FIELDS = ("requests_per_s", "p50_s", "cpu_s_per_request", "server_cores", "client_cores", "other_cores", "gil_s_per_request",
                 "gil_share_of_cpu", "gil_busy_per_process", "profiled_requests_per_s")


def medians(cells: list[Cell], max_other_cores: float) -> list[Cell]:
    """One cell per worker setting and mode: the median of each number over the rounds that nothing else disturbed
    (``round``: how many); over all rounds where every one was disturbed."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.workers_setting, cell.mode), []).append(cell)
    out = []
    for group in groups.values():
        quiet = [c for c in group if c.other_cores is not None and c.other_cores <= max_other_cores]
        group = quiet or group
        merged = asdict(group[0])
        for name in MEDIAN_FIELDS:
            values = [getattr(c, name) for c in group if getattr(c, name) is not None]
            merged[name] = round(float(np.median(values)), 4) if values else None
        merged["errors"] = [e for c in group for e in c.errors][:5]
        merged["round"] = len(group)
        out.append(Cell(**merged))
    return out


def markdown_table(cells: list[Cell]) -> str:
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    lines = [
        f"{LABEL}; {cells[0].megapixels:g} MP JPEG, {cells[0].concurrency} clients; medians over the undisturbed rounds" if cells else LABEL,
        "",
        "| mode | BGR_WORKERS | processes | rounds | requests/s | × one process | p50 s | CPU-s / request | server cores busy | "
        "client cores | other cores | GIL-s / request | GIL share of CPU | GIL busy per process |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    anchor = {mode: float(np.median([c.requests_per_s for c in cells if c.mode == mode and c.workers == 1]))
              for mode in {c.mode for c in cells if c.workers == 1}}
    for c in cells:
        ratio = c.requests_per_s / anchor[c.mode] if anchor.get(c.mode) else None
        lines.append(
            f"| {c.mode} | {c.workers_setting} | {c.workers} | {c.round} | {c.requests_per_s:.2f} | {fmt(ratio, '.2f')} | {c.p50_s:.3f} | "
            f"{c.cpu_s_per_request:.3f} | {c.server_cores:.2f} | {c.client_cores:.2f} | {fmt(c.other_cores, '.2f')} | "
            f"{fmt(c.gil_s_per_request, '.3f')} | "
            f"{fmt(c.gil_share_of_cpu, '.2f')} | {fmt(c.gil_busy_per_process, '.2f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,auto", help="BGR_WORKERS values, comma-separated (numbers or auto)")
    parser.add_argument("--modes", type=csv_names(MODES), default=list(MODES))
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48, help="measured requests per cell (after a warm-up round)")
    parser.add_argument("--rounds", type=int, default=3, help="every setting measured this many times, in turn; medians reported")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--max-other-cores", type=float, default=0.2,
                        help="rounds where the rest of the machine used more cores than this are left out of the medians")
    parser.add_argument("--no-gil", action="store_true", help="skip the py-spy run")
    parser.add_argument("--service-env", action="append", default=[], metavar="BGR_X=VALUE", help="extra service settings")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    spy = None if args.no_gil else py_spy()
    if spy is None and not args.no_gil:
        print("py-spy not found (pip install '.[bench]'): no GIL measurement", file=sys.stderr)
    image = make_jpeg(args.megapixels, args.out / "inputs")
    data = image.read_bytes()
    # "auto" may resolve to a count already listed (1 on a CPU-only machine): measured again, a repeat of that cell.
    settings = list(dict.fromkeys(part.strip() for part in args.workers.split(",") if part.strip()))
    services: list[Service] = []
    cells: list[Cell] = []
    try:
        for setting in settings:
            services.append(start_service(setting, args))
        # Round after round, each service in turn: on a shared machine, what else runs touches every setting alike.
        for round_ in range(args.rounds):
            for mode in args.modes:
                for service in services:
                    cells.append(measure(service, mode, args, data, spy, round_))
    finally:
        for service in services:
            service.server.stop()
    summary = medians(cells, args.max_other_cores)
    report = {
        "label": LABEL,
        "machine": {**machine(), "available_cores": available_cores()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "input": {"file": image.name, "bytes": len(data)},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "medians": [asdict(c) for c in summary],
        "cells": [asdict(c) for c in cells],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ceiling-{args.tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(summary))
    print(f"wrote {path}")
    return 1 if any(c.errors for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
