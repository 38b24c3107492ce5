"""Model-only throughput of IS-Net per batch size: eager, and replayed as a CUDA graph (issue 5, item 3).

    python bench/gpu_model.py [--batch-sizes 1,2,4,8,16,32] [--dtypes float16,bfloat16] [--seconds 5]

Random inputs at the model's 1024², already on the device: this is the network's ceiling, with
no decoding, resizing or copying. CUDA graphs remove the per-kernel launch cost, which matters
at small batches. Prints a table and writes JSON (``--out``). Runs on the CPU too
(``--device cpu``), which only checks the script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load(weights: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    import sys

    sys.path.insert(0, str(ROOT))
    from app.inference.isnet import load_isnet

    return load_isnet(weights, device=device, dtype=dtype).to(memory_format=torch.channels_last)


def timed(step, seconds: float, synchronise) -> tuple[int, float]:
    """Run ``step`` for about ``seconds``; the number of calls and the wall time they took."""
    step()
    synchronise()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
        if calls % 4 == 0:
            synchronise()
    synchronise()
    return calls, time.perf_counter() - started


def measure(model, batch: int, resolution: int, device: torch.device, dtype: torch.dtype, seconds: float, graph: bool) -> float:
    x = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        if graph:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                model(x)
            step = cuda_graph.replay
        else:
            step = lambda: model(x)  # noqa: E731
        calls, wall = timed(step, seconds, synchronise)
    return calls * batch / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "model_weights" / "isnet-general.safetensors")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per cell")
    parser.add_argument("--no-graphs", action="store_true", help="eager only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_model.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    rows = []
    print(f"{'dtype':9s} {'batch':>5s} {'eager img/s':>12s} {'graph img/s':>12s}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        model = load(args.weights, device, dtype)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            eager = measure(model, batch, args.resolution, device, dtype, args.seconds, graph=False)
            graphed = None
            if device.type == "cuda" and not args.no_graphs:
                graphed = measure(model, batch, args.resolution, device, dtype, args.seconds, graph=True)
            rows.append({"dtype": dtype_name, "batch": batch, "eager_images_per_s": eager, "graph_images_per_s": graphed})
            print(f"{dtype_name:9s} {batch:5d} {eager:12.1f} {graphed if graphed is not None else float('nan'):12.1f}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "resolution": args.resolution, "rows": rows}, indent=1))
    print(f"wrote {args.out} ({device_name})")


if __name__ == "__main__":
    main()
