"""OpenVINO requests in flight (streams) for IS-Net: a lone call's time and images a second with every request busy.

    python bench/streams.py [--requests 1,2] [--precision bfloat16] [--resolution 1024] [--calls 8] [--rounds 2]

For each count of requests N, the service's own wrapper (app.inference.openvino_backend.OvModel, as
BGR_INFER_REQUESTS=N builds it: N streams sharing the cores) on the graph the service serves: the
median time of one call made alone (what a request gets on an idle server), then ``--calls`` calls
from N threads at once (what a full queue gets), as images a second. The counts take turns, round
after round. What OpenVINO's own THROUGHPUT hint would pick for this graph on this machine is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cpu import available_cores  # noqa: E402
from app.inference.openvino_backend import PRECISION_HINTS, OvModel  # noqa: E402
from app.inference.ort_backend import onnx_name  # noqa: E402

WEIGHTS = ROOT / "model_weights" / "isnet-general.safetensors"


def full_queue(model: OvModel, x: torch.Tensor, calls: int, threads: int) -> float:
    left = iter(range(calls))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            model(x)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return calls / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", default="1,2")
    parser.add_argument("--precision", default="bfloat16", choices=sorted(PRECISION_HINTS))
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import openvino as ov

    graph = WEIGHTS.parent / onnx_name(WEIGHTS)
    counts = [int(n) for n in args.requests.split(",")]
    models = {n: OvModel(graph, args.precision, requests=n) for n in counts}
    hint = ov.Core().compile_model(str(graph), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[args.precision]})
    x = torch.randn(1, 3, args.resolution, args.resolution) * 0.25
    for model in models.values():
        model(x)  # first call: the kernels for this shape
    alone: dict[int, list[float]] = {n: [] for n in counts}
    busy: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n, model in models.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - started)
            alone[n].append(statistics.median(times))
            busy[n].append(full_queue(model, x, args.calls, n))
    report = {
        "cores": available_cores(),
        "precision": args.precision,
        "openvino_throughput_hint": {"NUM_STREAMS": int(hint.get_property("NUM_STREAMS")), "INFERENCE_NUM_THREADS": int(hint.get_property("INFERENCE_NUM_THREADS"))},
        "requests": {n: {"lone_call_s": round(statistics.median(alone[n]), 3), "images_per_s": round(statistics.median(busy[n]), 3),
                         "rounds": [(round(a, 3), round(b, 3)) for a, b in zip(alone[n], busy[n])]} for n in counts},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
