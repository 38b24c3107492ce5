"""On the CPU the networks' forward is the floor: how close one request at a time comes to it (issue 19).

    python bench/forward_floor.py [--repeats 5] [--megapixels 2] [--service-env KEY=VALUE ...]

In one run, turn about: the networks' own forward on one image (IS-Net at its input size plus
the sky network, as the engine runs them: ONNX Runtime on the CPU by default), timed in this
process; then one 2 MP JPEG cut-out through the service over HTTP on loopback, with its default
settings, one request at a time. The two never overlap, so each has the machine to itself.
Reports the medians and their ratio (the goal: at most 1.1x). Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from inputs import make_jpeg  # noqa: E402
from procs import free_port, start_server  # noqa: E402
from throughput import SEGMENT, machine  # noqa: E402

from app.inference.engine import MattingEngine  # noqa: E402
from app.settings import Settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE", help="for the service and the engine both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.service_env)

    engine = MattingEngine.from_settings(Settings.from_env(overrides))
    networks = "IS-Net" + (" + sky network" if engine.sky_model is not None else "")
    side = engine.resolution
    model_input = np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    engine.warm_up()

    image = make_jpeg(args.megapixels, args.out / "inputs").read_bytes()
    port = free_port()
    env = {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), **overrides}
    server = start_server("service", [sys.executable, "-m", "app"], env, port, "/health/ready", args.out / "logs", cwd=ROOT)
    url = f"{server.base_url}{SEGMENT}?api-version=2023-02-01-preview&mode=backgroundRemoval"
    forwards, requests = [], []
    try:
        with httpx.Client(timeout=300) as client:
            client.post(url, content=image).raise_for_status()  # first-use costs, not counted
            for _ in range(args.repeats):
                started = time.perf_counter()
                engine.analyse(model_input)
                forwards.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = client.post(url, content=image, headers={"Content-Type": "image/jpeg"})
                requests.append(time.perf_counter() - started)
                response.raise_for_status()
                target = response.headers.get("x-segment-target")
    finally:
        server.stop()

    forward, request = statistics.median(forwards), statistics.median(requests)
    result = {
        "machine": machine(),
        "networks": f"{networks} at {side}², {engine.runtime} {engine.choice.precision if engine.choice else engine.dtype}",
        "megapixels": args.megapixels,
        "service_env": overrides,
        "target": target,
        "forward_s": forwards,
        "request_s": requests,
        "forward_median_s": round(forward, 3),
        "request_median_s": round(request, 3),
        "ratio": round(request / forward, 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"forward-floor-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"{networks} forward {forward:.3f} s; one {args.megapixels:g} MP cut-out over HTTP {request:.3f} s: "
          f"{request / forward:.2f}x the forward ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
