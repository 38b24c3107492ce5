"""Model-only throughput of IS-Net per batch size: eager, and replayed as a CUDA graph (issue 5, item 3).

    python bench/gpu_model.py [--batch-sizes 1,2,4,8,16,32] [--dtypes float16,bfloat16] [--passes 1,2] [--seconds 5]

Random inputs at the model's 1024², already on the device: this is the network's ceiling, with
no decoding, resizing or copying. ``--passes 2`` also times the second pass a GPU serves by default
(BGR_SECOND_RESOLUTION=auto): each image through the network at 1024² and again at
``--second-resolution`` (768²), so images/s counts served images, not forwards. CUDA graphs remove
the per-kernel launch cost, which matters at small batches. Prints a table and writes JSON
(``--out``). Runs on the CPU too (``--device cpu``), which only checks the script.
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


def measure(model, batch: int, sides: list[int], device: torch.device, dtype: torch.dtype, seconds: float, graph: bool) -> float:
    """Images/s with each image through the network once per side in ``sides`` (one pass: ``[1024]``; two: ``[1024, 768]``)."""
    inputs = [torch.randn(batch, 3, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last) for side in sides]
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward() -> None:
        for x in inputs:
            model(x)

    with torch.inference_mode():
        if graph:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
                for _ in range(3):
                    forward()
            torch.cuda.current_stream().wait_stream(stream)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                forward()
            step = cuda_graph.replay
        else:
            step = forward
        calls, wall = timed(step, seconds, synchronise)
    return calls * batch / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "model_weights" / "isnet-general.safetensors")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--passes", default="1", help="comma-separated: 1 (the first side alone), 2 (and the second side)")
    parser.add_argument("--second-resolution", type=int, default=None, help="the second pass's side (default: 3/4 of --resolution, as served)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per cell")
    parser.add_argument("--no-graphs", action="store_true", help="eager only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_model.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    second = args.second_resolution or args.resolution * 3 // 4 // 32 * 32
    pass_counts = [int(p) for p in args.passes.split(",")]
    if any(p not in (1, 2) for p in pass_counts):
        parser.error("--passes takes 1 and/or 2")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    rows = []
    print(f"{'dtype':9s} {'passes':>6s} {'batch':>5s} {'eager img/s':>12s} {'graph img/s':>12s}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        model = load(args.weights, device, dtype)
        for passes in pass_counts:
            sides = [args.resolution, second][:passes]
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                eager = measure(model, batch, sides, device, dtype, args.seconds, graph=False)
                graphed = None
                if device.type == "cuda" and not args.no_graphs:
                    graphed = measure(model, batch, sides, device, dtype, args.seconds, graph=True)
                rows.append({"dtype": dtype_name, "passes": passes, "sides": sides, "batch": batch, "eager_images_per_s": eager, "graph_images_per_s": graphed})
                print(f"{dtype_name:9s} {passes:6d} {batch:5d} {eager:12.1f} {graphed if graphed is not None else float('nan'):12.1f}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "resolution": args.resolution, "rows": rows}, indent=1))
    print(f"wrote {args.out} ({device_name})")


if __name__ == "__main__":
    main()
