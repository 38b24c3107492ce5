"""The networks on ONNX Runtime's CPU kernels: the CPU default (``BGR_RUNTIME=auto``).

Same weights, same modules: each graph is exported from the project's own ``ISNet`` or
``U2NetP`` and named after the weights' hash, so a changed weights file never meets a stale
graph. ``python -m app.weights fetch`` writes the graphs beside the weights (the container image
carries them); otherwise the first start exports them into the cache.

Why: on an AVX2-only CPU (2-core AMD EPYC, Zen 3) ONNX Runtime took about 25% less time than
PyTorch's oneDNN path for both networks, and slowed far less when other processes shared the
cores (bench/cpu_variants.py, BENCHMARKS.md). fp32 only; the logits match PyTorch's within 1e-4.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.storage import sha256_file

log = logging.getLogger(__name__)

ModelLoader = Callable[[Path], nn.Module]


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_name(weights: Path) -> str:
    return f"{weights.stem}-{sha256_file(weights)[:16]}-fp32.onnx"


def export_onnx(model: nn.Module, out: Path, sample_size: int = 64) -> Path:
    """Write ``model``'s fp32 graph to ``out`` (batch, height and width dynamic); atomic, so replicas never read half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    # Shape checks in forward() become constants in the trace; the graph is right regardless.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model.float().eval(),
            (torch.zeros(1, 3, sample_size, sample_size),),
            str(partial),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: one self-contained file, no onnxscript needed
        )
    partial.replace(out)
    return out


def exported_onnx(weights: Path, load: ModelLoader, cache_dir: Path) -> Path:
    """The graph for ``weights``: beside them if ``weights fetch`` wrote it, else in ``cache_dir``, exported on first use."""
    name = onnx_name(weights)
    for candidate in (weights.parent / name, cache_dir / name):
        if candidate.is_file():
            return candidate
    log.info("exporting a network to ONNX (once per weights file)", extra={"path": str(cache_dir / name)})
    return export_onnx(load(weights), cache_dir / name)


class OrtModel:
    """Callable like the torch module it was exported from: ``N x 3 x H x W`` float32 in, ``N x 1 x H x W`` out.

    Also runs a published segmentation graph as it is: its first input, output ``output``, and one
    image per call where the graph fixes its batch at 1.
    """

    def __init__(self, path: Path, threads: int = 0, output: int = 0, cuda: bool = False) -> None:
        try:
            import onnxruntime as ort  # optional at import time: GPU images run torch only
        except ImportError:
            raise RuntimeError("BGR_RUNTIME=onnxruntime needs the onnxruntime package: pip install onnxruntime") from None

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core, as torch's default
        options.inter_op_num_threads = 1  # one model call at a time (the batcher's worker)
        providers = ["CPUExecutionProvider"]
        if cuda and "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu
            providers.insert(0, "CUDAExecutionProvider")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.single = first.shape[0] == 1  # a graph exported for one image at a time
        self.output = output

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[self.output]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return call_graph(self._run, x, self.single)


def call_graph(run: Callable[[np.ndarray], np.ndarray], x: torch.Tensor, single: bool) -> torch.Tensor:
    """``run`` (a graph's first output for a float32 ``N x 3 x H x W`` array) on ``x``, one image a call where the graph
    takes one (``single``); its first channel back as a tensor on ``x``'s device."""
    array = np.ascontiguousarray(x.detach().float().cpu().numpy(), dtype=np.float32)
    if single and len(array) > 1:
        out = np.concatenate([run(array[i : i + 1]) for i in range(len(array))])
    else:
        out = run(array)
    return torch.from_numpy(np.ascontiguousarray(out[:, :1])).to(x.device)
