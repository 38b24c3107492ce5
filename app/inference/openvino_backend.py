"""The networks on OpenVINO's CPU plugin: bf16 where the CPU multiplies bf16 natively, f32 elsewhere.

Same graphs as ONNX Runtime's (``ort_backend.exported_onnx``: exported from the project's own
modules and named after the weights' hash, or a published graph as it is), so the two runtimes
never disagree about what the network is. OpenVINO compiles a graph for the CPU it runs on; the
compiled model goes to OpenVINO's model cache (``BGR_WEIGHTS_CACHE/openvino``), so a restart
reads it back instead of compiling again.

Why: on CPUs with AMX or AVX-512 BF16, OpenVINO's bf16 forward of IS-Net at 1024² took 0.2-0.4x
of ONNX Runtime's fp32 one (BENCHMARKS.md, "OpenVINO bf16"), and the service's mattes passed the
quality gate against fp32 on every evaluation set (bench/runtime_gate.py). bf16 keeps fp32's
exponent and 8 bits of mantissa; the AMX and AVX-512 BF16 dot products accumulate in fp32.

Several requests in flight (``requests`` > 1) are OpenVINO streams: the cores are split between
that many infer requests, each running one call at a time; :class:`OvModel` is then safe to call
from that many threads at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import queue
import time
from pathlib import Path

import numpy as np
import torch

from app.inference.openvino_precision import CANCELLATION_LIMIT, RULE_VERSION, cancelling_convolutions
from app.inference.ort_backend import call_graph

# BGR_DTYPE's names -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_lists_bf16() -> bool | None:
    """Whether OpenVINO's CPU plugin lists BF16 among this CPU's optimisation capabilities; None without openvino."""
    if not openvino_available():
        return None
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def probe_input(side: int, mean: tuple[float, float, float], std: tuple[float, float, float], pixel_scale: float) -> np.ndarray:
    """A picture to check a reduced precision on: a colour gradient with a bright disc, ``1 x 3 x side x side``,
    normalised as the network expects (``(rgb / pixel_scale - mean) / std``)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rgb = np.stack([x * 255, y * 255, np.full_like(x, 90)], axis=2)
    rgb[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1] = (250, 240, 30)
    normalised = (rgb / pixel_scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def reduced_precision_hazards(path: Path, probe: np.ndarray, cache_dir: Path | None) -> dict[str, float]:
    """The graph's convolutions that bf16 would cancel (:func:`cancelling_convolutions`), remembered in ``cache_dir`` per
    graph file, so that a restart does not run the check again."""
    import openvino as ov

    stat = path.stat()
    rule = f"{RULE_VERSION}:{CANCELLATION_LIMIT}:{probe.shape}"  # a changed rule never meets an old answer
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{rule}".encode()).hexdigest()[:16]
    remembered = cache_dir / f"cancelling-{key}.json" if cache_dir is not None else None
    if remembered is not None and remembered.is_file():
        return dict(json.loads(remembered.read_text()))
    core = ov.Core()
    found = cancelling_convolutions(core, core.read_model(str(path)), probe)
    if remembered is not None:
        remembered.parent.mkdir(parents=True, exist_ok=True)
        partial = remembered.with_suffix(f".{time.monotonic_ns()}.partial")
        partial.write_text(json.dumps(found))
        partial.replace(remembered)
    return found


class OvModel:
    """Callable like the torch module its graph came from: ``N x 3 x H x W`` float32 in, ``N x 1 x H x W`` float32 out.

    ``precision``: ``float32``, ``bfloat16`` or ``float16``, the arithmetic of the network's
    layers (inputs and outputs stay float32). ``requests``: calls that may run at once, each on
    its own share of the cores. ``cache_dir``: OpenVINO's model cache; None: compile every start.
    A published graph with a fixed batch of 1 is called once per image.
    """

    def __init__(
        self,
        path: Path,
        precision: str = "float32",
        threads: int = 0,
        requests: int = 1,
        cache_dir: Path | None = None,
        output: int = 0,
    ) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError("BGR_RUNTIME=openvino needs the openvino package: pip install openvino") from None

        core = ov.Core()
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            # One stream per request; one stream is OpenVINO's latency mode (every core on one call).
            "PERFORMANCE_HINT": "LATENCY" if requests == 1 else "THROUGHPUT",
            "NUM_STREAMS": requests,
            # The service's own threads (decoding, PNG, the person detector) share these cores: threads
            # pinned to cores could not step aside for them, nor for a second serving process.
            "ENABLE_CPU_PINNING": False,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        started = time.perf_counter()
        # From the file's path, so that a cached compile is found without even reading the graph.
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.compile_s = time.perf_counter() - started
        self.loaded_from_cache = bool(self._property("LOADED_FROM_CACHE", False))
        self.path = path
        self.precision = precision
        self.requests = requests
        self._output = self.compiled.output(output)
        first = self.compiled.input(0).get_partial_shape()
        self.single = first.rank.is_static and first[0].is_static and first[0].get_length() == 1
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(requests):
            self._idle.put(self.compiled.create_infer_request())

    def _property(self, name: str, default: object) -> object:
        try:
            return self.compiled.get_property(name)
        except RuntimeError:  # not reported by this OpenVINO
            return default

    def _run(self, x: np.ndarray) -> np.ndarray:
        request = self._idle.get()  # blocks only if more callers than requests
        try:
            return request.infer({0: x})[self._output].copy()  # the request's buffer is reused by its next call
        finally:
            self._idle.put(request)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return call_graph(self._run, x, self.single)
