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


def _onnx_graph() -> Path:
    from app.inference.ort_backend import onnx_name

    graph = WEIGHTS.parent / onnx_name(WEIGHTS)
    if not graph.is_file():
        raise SystemExit(f"{graph} is missing: run `python -m app.weights fetch` (it exports the CPU runtime's graphs)")
    return graph


def _ort_session(config: dict[str, str], level: str = "ORT_ENABLE_ALL") -> Forward:
    """ONNX Runtime with the service's options, another graph level (EXTENDED: without ALL's NCHWc layout) or config entries."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(_onnx_graph()), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": np.ascontiguousarray(x.numpy())})[0])


def _openvino(hint: str, precision: str = "f32") -> Forward:
    """OpenVINO's CPU plugin on the same ONNX graph, held to fp32 (it would pick bf16 by itself on CPUs with AMX or AVX-512 BF16)."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(_onnx_graph()), "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    )
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[compiled.output(0)].copy())


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
        from app.inference.ort_backend import OrtModel

        return OrtModel(_onnx_graph(), threads=torch.get_num_threads()), example
    if variant == "fp32-onnxruntime-nospin":
        return _ort_session({"session.intra_op.allow_spinning": "0"}), example
    if variant == "fp32-onnxruntime-extended":
        return _ort_session({}, level="ORT_ENABLE_EXTENDED"), example
    if variant == "fp32-onnxruntime-daz":
        return _ort_session({"session.set_denormal_as_zero": "1"}), example
    if variant == "fp32-openvino":
        return _openvino("LATENCY"), example
    if variant == "fp32-openvino-throughput":
        return _openvino("THROUGHPUT"), example
    if variant == "bf16-openvino":
        return _openvino("LATENCY", precision="bf16"), example
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
    "fp32-contiguous", "fp32-cl", "fp32-jit-freeze", "fp32-jit-optimize", "fp32-compile", "fp32-onnxruntime",
    "fp32-onnxruntime-nospin", "fp32-onnxruntime-extended", "fp32-onnxruntime-daz", "fp32-openvino", "fp32-openvino-throughput", "bf16-openvino", "bf16-cl", "bf16-autocast",
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


def agreement(variant: str, reference: str, pairs: int, resolution: int) -> dict[str, object]:
    """The variant's mattes against the reference variant's on evaluation photos, with engine_agreement's bars.

    Both get the engine's input, (RGB - 128) / 256, resized as the service resizes; mattes are compared
    at the image's size: IoU@0.5 between them (bar: > 0.995 on the worst photo) and the difference of
    their MAE against the ground truth (bar: < 0.002).
    """
    import csv

    import numpy as np
    from PIL import Image

    from app.inference.pipeline import matte_at_size, model_input
    from app.quality import iou, load_gray, mae

    evaldata = ROOT.parent / "shared" / "evaldata"
    with (evaldata / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    chosen = rows[:: max(1, len(rows) // pairs)][:pairs]  # spread over the sets
    probe = torch.zeros(1, 3, 64, 64)
    forwards = {name: build(name, probe)[0] for name in (reference, variant)}
    ious, mae_gaps = [], []
    with torch.inference_mode():
        for row in chosen:
            rgb = np.asarray(Image.open(evaldata / row["image"]).convert("RGB"))
            x = (torch.from_numpy(model_input(rgb, resolution)).permute(2, 0, 1)[None].float() - 128.0) / 256.0
            truth = load_gray(evaldata / row["gt"])
            height, width = truth.shape
            ref, cand = (matte_at_size(torch.sigmoid(forwards[n](x))[0, 0].numpy(), width, height) / 255.0 for n in (reference, variant))
            ious.append(iou(cand, ref >= 0.5))
            mae_gaps.append(abs(mae(cand, truth) - mae(ref, truth)))
    return {
        "variant": variant,
        "reference": reference,
        "pairs": len(chosen),
        "iou_worst": round(min(ious), 4),
        "iou_mean": round(float(np.mean(ious)), 5),
        "mae_gap_worst": round(max(mae_gaps), 5),
        "passes": min(ious) > 0.995 and max(mae_gaps) < 0.002,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--variants", default="fp32-cl,fp32-onnxruntime,fp32-contiguous", help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--agree-with", default=None, help="also compare each variant's mattes with this variant's on evaluation photos")
    parser.add_argument("--pairs", type=int, default=10, help="evaluation photos for --agree-with")
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
        if args.agree_with:
            row["agreement"] = agreement(variant.strip(), args.agree_with, args.pairs, args.resolution)
            print(json.dumps(row["agreement"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**header, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
