"""Start-up time of the service, with OpenVINO's model cache empty and warm, beside ONNX Runtime's.

    python bench/startup.py [--rounds 3] [--service-env BGR_X=Y ...]

Each start is ``python -m app`` on a free loopback port, timed from the process's launch to the first
200 from ``/health/ready`` (the networks loaded and warmed: what a load balancer waits for). In turns,
each round: OpenVINO with an empty cache (a fresh ``BGR_WEIGHTS_CACHE``: it compiles), OpenVINO again
on that cache (it reads the compiled models back), and ONNX Runtime, the fp32 engine. The ONNX graphs
come from beside the weights in every case, so no start exports anything. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from procs import free_port, start_server  # noqa: E402


def start_seconds(env: dict[str, str], log_dir: Path) -> tuple[float, str]:
    port = free_port()
    started = time.perf_counter()
    server = start_server("startup", [sys.executable, "-m", "app"], {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), **env}, port, "/health/ready", log_dir, cwd=ROOT)
    seconds = time.perf_counter() - started
    try:
        import httpx

        runtime = httpx.get(f"{server.base_url}/health/ready", timeout=10).json()["models"]["isnet-general-use"].get("runtime") or {}
    finally:
        server.stop()
    return seconds, f"{runtime.get('runtime')} {runtime.get('precision')}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--service-env", action="append", default=[], metavar="BGR_X=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.service_env)
    times: dict[str, list[float]] = {"openvino, empty cache": [], "openvino, warm cache": [], "onnxruntime": []}
    served: dict[str, str] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bgremoval-cache-") as cache:
            for label, runtime in (("openvino, empty cache", "openvino"), ("openvino, warm cache", "openvino"), ("onnxruntime", "onnxruntime")):
                env = {**extra, "BGR_RUNTIME": runtime, "BGR_WEIGHTS_CACHE": cache}
                seconds, served[label] = start_seconds(env, args.out / "logs")
                times[label].append(seconds)
                print(json.dumps({"start": label, "seconds": round(seconds, 2), "served": served[label], "blobs": len(list(Path(cache).glob("openvino/*.blob")))}), flush=True)
    report = {
        "load_average_1min": os.getloadavg()[0],
        "medians_s": {label: round(statistics.median(values), 2) for label, values in times.items()},
        "served": served,
        "runs_s": times,
    }
    print(json.dumps(report, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
