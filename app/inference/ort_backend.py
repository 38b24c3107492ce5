"""IS-Net on ONNX Runtime's CPU kernels (``BGR_RUNTIME=onnxruntime``).

Same weights, same module: the graph is exported once from the project's ``ISNet`` and cached
under the weights' hash. Why bother: on an AVX2-only CPU (2-core AMD EPYC, Zen 3) ONNX
Runtime took 6-23% less time per 1024² forward than PyTorch's oneDNN path with one thread, and
slowed far less when other processes shared the cores (bench/cpu_variants.py, BENCHMARKS.md).
fp32 only; the logits match PyTorch's within 1e-4.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from app.inference.isnet import load_isnet
from app.weights.source import sha256_file
from app.weights.__main__ import default_cache_dir  # BGR_WEIGHTS_CACHE, as `weights fetch` uses it

log = logging.getLogger(__name__)


def exported_onnx(weights: Path, cache_dir: Path) -> Path:
    """The fp32 ONNX graph of ``weights`` (batch, height and width dynamic), exported on first use."""
    out = cache_dir / f"isnet-{sha256_file(weights)[:16]}-fp32.onnx"
    if out.exists():
        return out
    log.info("exporting the model to ONNX (once per weights file)", extra={"path": str(out)})
    model = load_isnet(weights)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")  # concurrent replicas must not see half a file
    # The shape checks in ISNet.forward become constants in the trace; the graph is right regardless.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 64, 64),),
            str(partial),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: one self-contained file, no onnxscript needed
        )
    partial.replace(out)
    return out


class OrtIsNet:
    """Callable like ``ISNet``: ``N x 3 x H x W`` float32 tensor in, ``N x 1 x H x W`` logits out."""

    def __init__(self, weights: Path, threads: int = 0, cache_dir: Path | None = None) -> None:
        try:
            import onnxruntime as ort  # optional dependency: only this runtime needs it
        except ImportError:
            raise RuntimeError("BGR_RUNTIME=onnxruntime needs the onnxruntime package: pip install 'bgremoval[onnxruntime]'") from None

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core, as torch's default
        options.inter_op_num_threads = 1  # one model call at a time (the batcher's worker)
        path = exported_onnx(weights, cache_dir or default_cache_dir() / "onnx")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"input": np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return torch.from_numpy(logits)
