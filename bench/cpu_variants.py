"""Seconds per IS-Net forward on the CPU, one variant at a time: dtype, memory layout, graph mode.

    python bench/cpu_variants.py [--resolution 1024] [--reps 2] [--threads 0] [--variants fp32-cl,bf16-cl]
                                 [--profile] [--json bench/results/cpu_variants.json]

Variants: fp32 PyTorch eager (channels_last or contiguous), TorchScript trace+freeze and
optimize_for_inference, torch.compile (inductor, freezing), ONNX Runtime (the engine's
``BGR_RUNTIME=onnxruntime`` path), and bf16 as weights cast (``.to``) or autocast.

Each variant builds its own model, runs one warm-up forward (a graph mode's compile happens
there, and is timed separately), then ``--reps`` timed forwards of one image; the median is
reported. ``--profile`` prints the ten ops with the most self time of one extra forward, which
is how the bf16 slowdown on CPUs without native bf16 was traced to ``aten::_slow_conv2d_forward``.

Keep runs small on shared machines: one 1024² forward is seconds in fp32 and tens of seconds
in bf16 where the CPU lacks bf16 instructions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.inference.engine import cpu_has_native_bf16  # noqa: E402
from app.inference.isnet import load_isnet  # noqa: E402

WEIGHTS = ROOT / "model_weights" / "isnet-general.safetensors"
Forward = Callable[[torch.Tensor], torch.Tensor]


def _model(dtype: torch.dtype = torch.float32, channels_last: bool = True) -> torch.nn.Module:
    model = load_isnet(WEIGHTS, dtype=dtype)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _traced(example: torch.Tensor, optimize: bool) -> torch.jit.ScriptModule:
    traced = torch.jit.trace(_model(), example, check_trace=False)
    # optimize_for_inference also converts to oneDNN's blocked layout and fuses conv+ReLU.
    return torch.jit.optimize_for_inference(traced) if optimize else torch.jit.freeze(traced)


def _compiled() -> Forward:
    import torch._inductor.config as inductor_config

    # Freezing lets inductor fold the weights into prepacked oneDNN convolutions.
    inductor_config.freezing = True
    return torch.compile(_model())


def build(variant: str, example: torch.Tensor) -> tuple[Forward, torch.Tensor]:
    """The forward callable and the input it takes (layout and dtype as the variant wants)."""
    cl = example.contiguous(memory_format=torch.channels_last)
    if variant == "fp32-contiguous":
        return _model(channels_last=False), example.contiguous()
    if variant == "fp32-cl":
        return _model(), cl
    if variant == "fp32-jit-freeze":
        return _traced(cl, optimize=False), cl
    if variant == "fp32-jit-optimize":
        return _traced(cl, optimize=True), cl
    if variant == "fp32-compile":
        return _compiled(), cl
    if variant == "fp32-onnxruntime":
        from app.inference.ort_backend import OrtIsNet

        return OrtIsNet(WEIGHTS, threads=torch.get_num_threads()), example
    if variant == "bf16-cl":
        return _model(torch.bfloat16), cl.to(torch.bfloat16)
    if variant == "bf16-autocast":
        model = _model()

        def autocast_forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)

        return autocast_forward, cl
    raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


VARIANTS = (
    "fp32-contiguous", "fp32-cl", "fp32-jit-freeze", "fp32-jit-optimize", "fp32-compile", "fp32-onnxruntime", "bf16-cl", "bf16-autocast",
)


def measure(variant: str, resolution: int, reps: int, profile: bool) -> dict[str, object]:
    torch.manual_seed(0)
    example = torch.randn(1, 3, resolution, resolution)
    with torch.inference_mode():
        started = time.perf_counter()
        forward, x = build(variant, example)
        forward(x)
        first = time.perf_counter() - started
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - started)
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                forward(x)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return {"variant": variant, "build_and_first_s": round(first, 2), "forward_s": round(statistics.median(times), 3), "reps": reps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--variants", default="fp32-cl,fp32-onnxruntime,fp32-contiguous", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    header = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "resolution": args.resolution,
    }
    print(json.dumps(header))
    rows = []
    for variant in args.variants.split(","):
        row = measure(variant.strip(), args.resolution, args.reps, args.profile)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**header, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
