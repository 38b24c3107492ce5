"""The service's memory over many requests, and its peak under concurrent large inputs (issue 5).

    python bench/memory.py --requests 1000 --megapixels 2 --concurrency 1 [--service-env BGR_RESOLUTION=64]
    python bench/memory.py --requests 32 --megapixels 12 --concurrency 16

Starts the service, sends ``--requests`` requests (alternating backgroundRemoval and
foregroundMatting) in rounds of ``--every``, and reads the process's resident memory (VmRSS)
after each round. Reports the memory after the first round (caches, arenas and pools are
filled by then), at the end, the growth between the two, and the peak (VmHWM). Writes JSON.

A thousand requests at the model's 1024² take most of an hour on a 2-core CPU. The request path
(decoding, the batcher, PNG streaming, buffers) is the same at any model input, so
``--service-env BGR_RESOLUTION=64`` runs the full path quickly; a shorter run at 1024² then
covers the model's own working memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from inputs import make_jpeg  # noqa: E402
from loadgen import run_load  # noqa: E402
from procs import free_port, peak_rss_mb, start_server  # noqa: E402
from throughput import service_sender  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS (Linux only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--every", type=int, default=50, help="requests per round, between memory readings")
    parser.add_argument("--service-env", action="append", default=[], metavar="BGR_X=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    args = parser.parse_args()

    image = make_jpeg(args.megapixels, args.out / "inputs").read_bytes()
    port = free_port()
    env = {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), **dict(kv.split("=", 1) for kv in args.service_env)}
    server = start_server("service", [sys.executable, "-m", "app"], env, port, "/health/ready", args.out / "logs", cwd=ROOT)
    readings, errors, sent = [], [], 0
    started = time.perf_counter()
    try:
        modes = ("backgroundRemoval", "foregroundMatting")
        while sent < args.requests:
            batch = min(args.every, args.requests - sent)
            for mode in modes:  # half of each round in each mode
                share = batch // 2 if mode == modes[0] else batch - batch // 2
                if share:
                    result = run_load(service_sender(server.base_url, image, mode), args.concurrency, share)
                    errors += result.errors
            sent += batch
            readings.append({"requests": sent, "rss_mb": round(rss_mb(server.pid), 1), "seconds": round(time.perf_counter() - started, 1)})
            print(f"{sent:5d} requests: RSS {readings[-1]['rss_mb']:.0f} MB", flush=True)
        peak = peak_rss_mb(server.pid)
    finally:
        server.stop()
    growth = readings[-1]["rss_mb"] - readings[0]["rss_mb"]
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "readings": readings,
        "rss_after_first_round_mb": readings[0]["rss_mb"],
        "rss_at_end_mb": readings[-1]["rss_mb"],
        "growth_mb": round(growth, 1),
        "peak_rss_mb": peak,
        "errors": errors[:20],
        "error_count": len(errors),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{args.tag}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"RSS after the first {readings[0]['requests']} requests {readings[0]['rss_mb']:.0f} MB, after {sent} "
          f"{readings[-1]['rss_mb']:.0f} MB: growth {growth:+.0f} MB; peak {peak:.0f} MB; {len(errors)} errors")
    print(f"wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
