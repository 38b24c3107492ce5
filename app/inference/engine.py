"""The models on their device: uint8 batches in; IS-Net mattes (and, when loaded, sky maps) out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from app.catalogue import CATALOGUE, DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, CatalogueError, Network as CataloguedNetwork, Preprocess, lookup
from app.cpu import CpuCapabilities, available_cores, cpu_capabilities
from app.inference.device_pixels import DevicePixels, use_device_pixels
from app.inference.families import loader
from app.inference.isnet import ISNet
from app.inference.openvino_backend import OvModel, openvino_available, openvino_lists_bf16, probe_input, reduced_precision_hazards
from app.inference.ort_backend import OrtModel, exported_onnx, onnxruntime_available
from app.inference.person import PersonDetector
from app.inference.u2net import U2Net, load_u2netp
from app.settings import Settings
from app.storage import default_cache_dir  # BGR_WEIGHTS_CACHE, where `weights fetch` caches too

log = logging.getLogger(__name__)

Network = ISNet | U2Net | OrtModel | OvModel  # called the same way: N x 3 x H x W in, N x 1 x H x W out

# The sky map the service routes on. Below the published graph's 384 because the map is coarse
# anyway: at 256 the sky network costs 0.27 s instead of 0.62 s on the 2-core CPU, and on the
# development photos routing and scene IoU were no worse (bench/scene.py --sky-resolution).
SKY_SERVING_RESOLUTION = 256

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (AVX-512 BW/VL/DQ, or AVX-NE-CONVERT).

    Without that, PyTorch sends bf16 convolutions to its generic im2col path, 6-10x slower than
    fp32 (IS-Net at 512² on a 2-core AVX2-only EPYC: 7.8 s against 0.8 s).
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: absent from some builds
        return False


def pick_second_resolution(configured: str, resolution: int, device: torch.device) -> int:
    """``auto``: a second pass at 3/4 of the side on a GPU, none on the CPU; else the side given (0: none).

    The second pass lowered the error on every evaluation set (bench/quality.py) for 1.56 times
    the model's work and a Lanczos resize in place of a bilinear one. On a GPU the model is a
    small part of a request (a 2 MP cut-out: 7 ms on the device beside about 170 ms of CPU work,
    BENCHMARKS.md "GPU"), so that is cheap; on a CPU the model is most of a request, and the
    pass costs over a third more per image (IS-Net on a 2 MP photo: 3.67 s against 2.67 s).
    """
    if configured != "auto":
        return int(configured)
    return resolution * 3 // 4 // 32 * 32 if device.type == "cuda" else 0


GPU_BATCH_SIZE = 8  # the automatic batch on a GPU; a large card gains a few percent more at 16-32


def pick_batch_size(configured: int, device: torch.device) -> int:
    """``0`` (auto): batches on a GPU, one image at a time on the CPU.

    A CPU gains nothing from a batch: the runtime already spreads one image over every core, so
    a batch of 8 takes 8 times as long as one image, holds 8 images' activations (several
    hundred MB each at 1024²), and makes the requests that arrive just after it starts wait for
    all of it. Measured on 2 cores (2 MP mattes, 8 clients): 0.343 images/s at 8 against
    0.392 at 1, p95 25.4 s against 20.4 s, peak RSS 7.7 GB against 2.3 GB.
    """
    if configured:
        return configured
    return GPU_BATCH_SIZE if device.type == "cuda" else 1


RuntimeName = Literal["torch", "onnxruntime", "openvino"]


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime runs a network, in which arithmetic, and why: logged at start and shown by ``/health/ready``."""

    runtime: RuntimeName
    precision: str  # float32 | bfloat16 | float16: the arithmetic of the network's layers
    reason: str


def installed_runtimes() -> frozenset[str]:
    """The optional CPU runtimes this environment has (a GPU image may have neither)."""
    return frozenset(name for name, present in (("onnxruntime", onnxruntime_available()), ("openvino", openvino_available())) if present)


def machine_capabilities(installed: frozenset[str]) -> CpuCapabilities:
    """This CPU's, with OpenVINO's word on bf16 when it is installed."""
    return cpu_capabilities(openvino_lists_bf16() if "openvino" in installed else None)


def choose_runtime(runtime: str, dtype: str, device: torch.device, cpu: CpuCapabilities, installed: frozenset[str]) -> RuntimeChoice:
    """BGR_RUNTIME and BGR_DTYPE as a runtime and precision for the project's own networks on ``device``.

    ``auto`` on the CPU: OpenVINO in bf16 where the CPU multiplies bf16 natively (AMX or AVX-512
    BF16): about 0.2x of ONNX Runtime fp32's forward on a Sapphire Rapids core and 0.4x on Zen 4,
    and it passed the quality gate (bench/runtime_gate.py, BENCHMARKS.md). Elsewhere ONNX Runtime in
    fp32, today's default: on the CPUs measured, OpenVINO in f32 was level with it or at most a
    fifth faster, never clearly enough to change a default that AVX2-only machines (not measurable
    here) have always run. On CUDA: PyTorch, in float16 unless BGR_DTYPE says otherwise.
    """
    if device.type != "cpu":
        if runtime in ("onnxruntime", "openvino"):
            raise ValueError(f"BGR_RUNTIME={runtime} runs on the CPU only (BGR_DEVICE=cpu)")
        precision = "float16" if dtype == "auto" else dtype
        return RuntimeChoice("torch", precision, f"{device.type}: PyTorch in {precision}")
    if runtime == "onnxruntime":
        if dtype not in ("auto", "float32"):
            raise ValueError("BGR_RUNTIME=onnxruntime runs float32 on the CPU only (BGR_DEVICE=cpu, BGR_DTYPE auto or float32)")
        return RuntimeChoice("onnxruntime", "float32", "BGR_RUNTIME=onnxruntime")
    if runtime == "openvino":
        if dtype != "auto":
            return RuntimeChoice("openvino", dtype, f"BGR_RUNTIME=openvino, BGR_DTYPE={dtype}")
        if cpu.native_bf16:
            return RuntimeChoice("openvino", "bfloat16", f"BGR_RUNTIME=openvino; the CPU multiplies bf16 natively ({', '.join(cpu.bf16_instructions)})")
        return RuntimeChoice("openvino", "float32", "BGR_RUNTIME=openvino; no native bf16 on this CPU (neither AMX-BF16 nor AVX-512 BF16)")
    if runtime == "torch":
        precision = "float32" if dtype == "auto" else dtype
        return RuntimeChoice("torch", precision, f"BGR_RUNTIME=torch in {precision}")
    # auto
    if dtype in ("auto", "bfloat16") and "openvino" in installed and (cpu.native_bf16 or dtype == "bfloat16"):
        why = f"the CPU multiplies bf16 natively ({', '.join(cpu.bf16_instructions)})" if cpu.native_bf16 else "BGR_DTYPE=bfloat16"
        return RuntimeChoice("openvino", "bfloat16", f"{why}: OpenVINO bf16, several times ONNX Runtime fp32's speed there, passed the quality gate")
    if dtype in ("auto", "float32") and "onnxruntime" in installed:
        if dtype == "float32":
            why = "BGR_DTYPE=float32"
        elif not cpu.native_bf16:
            why = "no native bf16 on this CPU (neither AMX-BF16 nor AVX-512 BF16)"
        else:
            why = "openvino is not installed"
        return RuntimeChoice("onnxruntime", "float32", f"{why}: ONNX Runtime fp32, the fastest fp32 runtime measured on CPUs without bf16")
    precision = "float32" if dtype == "auto" else dtype
    return RuntimeChoice("torch", precision, f"PyTorch in {precision}: no CPU runtime for it is installed (onnxruntime, openvino)")


CORES_PER_REQUEST = 8  # BGR_INFER_REQUESTS=auto with OpenVINO: one request in flight per this many cores


def pick_infer_requests(configured: str, choice: RuntimeChoice, cores: int) -> int:
    """BGR_INFER_REQUESTS as a number: how many calls of one network run at once.

    ``auto``: with OpenVINO, one request (a stream of its own) per 8 cores; one otherwise. One
    request takes every core: on this project's 2-core machine a second stream served 5% more
    forwards a second and made a lone request 2.5 times as slow (one thread instead of two).
    OpenVINO's THROUGHPUT hint would give each stream 1-5 threads (by the model's memory pressure;
    IS-Net at 1024² got 1), the most images a second on a full queue, at the cost of every
    request's latency; 8 threads a request keeps a lone request fast while a many-core server
    still runs several at once (BENCHMARKS.md, "Requests in flight").
    """
    if configured != "auto":
        return int(configured)
    return max(1, cores // CORES_PER_REQUEST) if choice.runtime == "openvino" else 1


SceneNetworks = tuple[Network | None, PersonDetector | None]


def load_scene_networks(settings: Settings, choice: RuntimeChoice, device: torch.device, dtype: torch.dtype, requests: int = 1) -> SceneNetworks:
    """The sky network and the person detector scene handling routes on; (None, None), logged, when off or either is absent."""
    if settings.target == "subject":
        log.info("scene handling off: BGR_TARGET=subject")
        return None, None
    if missing := [path for path in (settings.sky_weights, settings.person_weights) if not path.is_file()]:
        # Without the person detector the rule would take people in wide views for scenes: no routing is safer.
        log.warning(
            "scene handling off: no %s (run `python -m app.weights fetch`); every image is treated as a subject",
            " or ".join(str(path) for path in missing),
        )
        return None, None
    graph = None
    if choice.runtime != "torch":
        graph = exported_onnx(settings.sky_weights, load_u2netp, default_cache_dir() / "onnx")
        choice = checked_precision(choice, graph, probe_input(SKY_SERVING_RESOLUTION, IMAGENET_MEAN, IMAGENET_STD, 255.0), settings)
        log.info("sky network", extra={"runtime": choice.runtime, "precision": choice.precision, "why": choice.reason})
    sky = _load(choice, settings.sky_weights, load_u2netp, device, dtype, settings.torch_threads, requests, graph)
    return sky, PersonDetector(settings.person_weights)


def load_engines(settings: Settings) -> dict[str, MattingEngine]:
    """One engine per network in BGR_MODELS (the default first), sharing one sky network and person detector."""
    engines: dict[str, MattingEngine] = {}
    scene: SceneNetworks | None = None
    for name in settings.loaded_models():
        engine = MattingEngine.from_settings(settings, name, scene)
        scene = engine.sky_model, engine.person_detector
        engines[name] = engine
    return engines


def _load(
    choice: RuntimeChoice,
    weights: Path,
    loader: Callable[..., nn.Module],
    device: torch.device,
    dtype: torch.dtype,
    threads: int,
    requests: int,
    graph: Path | None = None,
) -> Network:
    """``graph``: the weights' exported ONNX graph, where the caller has already looked it up (its name hashes the
    weights file)."""
    if choice.runtime == "torch":
        return loader(weights, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    graph = graph or exported_onnx(weights, loader, default_cache_dir() / "onnx")
    if choice.runtime == "openvino":
        return _openvino(graph, choice, threads, requests)
    return OrtModel(graph, threads=threads)


def _openvino(graph: Path, choice: RuntimeChoice, threads: int, requests: int, output: int = 0) -> OvModel:
    # BGR_TORCH_THREADS, else the cores this process may use: OpenVINO's own default (every core of the
    # affinity) would overrun a container's CPU limit.
    return OvModel(graph, choice.precision, threads=threads or available_cores(), requests=requests, cache_dir=openvino_cache_dir(), output=output)


# The side of the picture a reduced precision is checked on (openvino_precision.py) for networks of any input size:
# what it measures does not depend on the size, and every convolution's output is kept at once.
PROBE_SIDE = 320


def _probe(preprocess: Preprocess) -> np.ndarray:
    side = PROBE_SIDE if preprocess.resizable else preprocess.side
    return probe_input(side, preprocess.mean, preprocess.std, preprocess.pixel_scale)


def checked_precision(choice: RuntimeChoice, graph: Path, probe: np.ndarray, settings: Settings) -> RuntimeChoice:
    """``choice``, or f32 for the whole network where its reduced precision would cancel in a convolution.

    The check (openvino_precision.py) runs once per graph file; its answer is kept beside OpenVINO's
    compiled models. An explicit BGR_DTYPE is served as asked, with a warning in the log.
    """
    if choice.runtime != "openvino" or choice.precision == "float32":
        return choice
    hazards = reduced_precision_hazards(graph, probe, openvino_cache_dir())
    if not hazards:
        return choice
    worst = max(hazards, key=lambda name: hazards[name])
    why = f"{choice.precision} would cancel in {worst} (its bias takes away all but 1/{hazards[worst]:.0f} of its sum)"
    if settings.dtype != "auto":
        log.warning(f"{why}; served in {choice.precision} as BGR_DTYPE asks", extra={"graph": str(graph)})
        return choice
    if settings.runtime == "openvino":
        return RuntimeChoice("openvino", "float32", f"{why}: OpenVINO f32")
    return RuntimeChoice("onnxruntime", "float32", f"{why}: ONNX Runtime fp32")


def openvino_cache_dir() -> Path:
    """OpenVINO's compiled models, beside the exported graphs (BGR_WEIGHTS_CACHE/openvino)."""
    return default_cache_dir() / "openvino"


class ModelUnavailableError(RuntimeError):
    """A network named in the settings cannot be loaded; the message says why and what to run."""


def network_weights(network: CataloguedNetwork, settings: Settings) -> Path:
    """Where ``network``'s weights are loaded from: BGR_WEIGHTS for today's IS-Net, else the weights folder."""
    return settings.weights if network.name == DEFAULT_MODEL else network.weights_path(settings.models_dir)


def resolve_network(name: str, settings: Settings) -> CataloguedNetwork:
    """The catalogued (or carded) network, refused unless its weights are there and its licence is accepted."""
    try:
        network = lookup(name, settings.models_dir)
    except CatalogueError as error:
        raise ModelUnavailableError(str(error)) from None
    if network.needs_acceptance and name not in settings.accept_licences:
        raise ModelUnavailableError(
            f"{name} is under {network.licence.name} ({network.licence.url}), which does not grant commercial use; "
            f"to serve it, accept its terms with BGR_ACCEPT_LICENCES={name}"
        )
    weights = network_weights(network, settings)
    if not weights.is_file():
        raise ModelUnavailableError(f"no weights for {name} at {weights}: run `bgremoval weights fetch --model {name}`")
    return network


def _load_network(
    network: CataloguedNetwork,
    weights: Path,
    choice: RuntimeChoice,
    device: torch.device,
    dtype: torch.dtype,
    threads: int,
    requests: int,
    graph: Path | None = None,
) -> Network:
    if network.runtime == "torch":
        return _load(choice, weights, loader(network.family), device, dtype, threads, requests, graph)
    if choice.runtime == "openvino":
        return _openvino(weights, choice, threads, requests, network.preprocess.output)
    # A published graph otherwise runs on ONNX Runtime, on CUDA where onnxruntime-gpu offers it.
    return OrtModel(weights, threads=threads, output=network.preprocess.output, cuda=device.type == "cuda")


def network_choice(network: CataloguedNetwork, machine: RuntimeChoice, configured: str) -> RuntimeChoice:
    """The machine's choice for the project's own networks; a published graph under ``auto`` keeps ONNX Runtime in fp32.

    The quality gate measured the project's networks (IS-Net, the sky network) in bf16, not the
    published graphs; BGR_RUNTIME=openvino runs those on OpenVINO too, in the machine's precision.
    """
    if network.runtime == "torch" or machine.runtime == "onnxruntime" or (machine.runtime == "openvino" and configured == "openvino"):
        return machine
    if machine.runtime == "openvino":
        return RuntimeChoice("onnxruntime", "float32", "a published graph, not covered by the bf16 quality gate: ONNX Runtime fp32 (BGR_RUNTIME=openvino runs it on OpenVINO)")
    return RuntimeChoice("onnxruntime", "float32", "a published graph: ONNX Runtime")


# OpenVINO's shape inference refuses a pooling window larger than its input, where ONNX Runtime and PyTorch pool
# what there is: IS-Net's first stage pools its half-size input five times, so it needs sides of 64 and more.
OPENVINO_MIN_SIDE = 64


def small_input_choice(choice: RuntimeChoice, smallest_side: int, configured: str) -> RuntimeChoice:
    """``choice``, unless OpenVINO would be given an input under OPENVINO_MIN_SIDE: then ONNX Runtime fp32 (an error if OpenVINO was asked for)."""
    if choice.runtime != "openvino" or smallest_side >= OPENVINO_MIN_SIDE:
        return choice
    if configured == "openvino":
        raise ValueError(f"BGR_RUNTIME=openvino needs model inputs of at least {OPENVINO_MIN_SIDE} pixels a side (BGR_RESOLUTION, BGR_SECOND_RESOLUTION)")
    return RuntimeChoice("onnxruntime", "float32", f"a model input of {smallest_side} pixels, under the {OPENVINO_MIN_SIDE} OpenVINO's pooling needs: ONNX Runtime fp32")


@dataclass(frozen=True)
class Analysis:
    """What the models say about one image, at their own resolutions."""

    matte: np.ndarray  # S x S float32 in [0, 1]: IS-Net's foreground
    sky: np.ndarray | None  # R x R float32 in [0, 1] (R: the engine's sky_resolution): sky probability; None without it
    matte_on_device: torch.Tensor | None = None  # the same matte left on the device, when pixels are upsampled there


@dataclass
class MattingEngine:
    """Runs one subject network (and the sky network, when loaded) on batches of square ``resolution`` RGB images.

    ``predict`` and ``analyse`` are synchronous; up to ``requests`` threads may call them at once
    (the batcher's inference threads: the runtime runs that many calls in parallel).
    """

    model: Network
    device: torch.device
    dtype: torch.dtype
    resolution: int
    sky_model: Network | None = None
    person_detector: PersonDetector | None = None  # asked per image by the scene rule, on the CPU, outside the batch
    runtime: str = "torch"
    sky_resolution: int = SKY_SERVING_RESOLUTION
    second_resolution: int = 0  # a second pass at this side, its raw output averaged with the first's; 0: none
    name: str = DEFAULT_MODEL
    preprocess: Preprocess = CATALOGUE[DEFAULT_MODEL].preprocess
    logits: bool = True  # the network's output goes through a sigmoid (the project's modules always give logits)
    device_pixels: DevicePixels | None = None  # decoding and resizing on the device (BGR_DEVICE_PIXELS); None: on the CPU
    choice: RuntimeChoice | None = None  # the runtime, precision and why, for the log and /health/ready
    requests: int = 1  # calls the runtime runs at once (BGR_INFER_REQUESTS)

    @classmethod
    def from_settings(cls, settings: Settings, model: str | None = None, scene: SceneNetworks | None = None) -> "MattingEngine":
        """The engine for ``model`` (default: BGR_MODEL); ``scene`` shares a sky network and person detector already loaded."""
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        installed = installed_runtimes()
        capabilities = machine_capabilities(installed) if device.type == "cpu" else CpuCapabilities(cores=0)
        machine = choose_runtime(settings.runtime, settings.dtype, device, capabilities, installed)
        network = resolve_network(model or settings.model, settings)
        preprocess = network.preprocess
        resolution = settings.resolution if preprocess.resizable else preprocess.side
        # A published graph may fix its input size: only resizable networks take a second pass.
        second_resolution = pick_second_resolution(settings.second_resolution, resolution, device) if preprocess.resizable else 0
        choice = small_input_choice(network_choice(network, machine, settings.runtime), min(filter(None, (resolution, second_resolution))), settings.runtime)
        weights = network_weights(network, settings)
        graph = None
        if choice.runtime == "openvino":
            graph = exported_onnx(weights, loader(network.family), default_cache_dir() / "onnx") if network.runtime == "torch" else weights
            choice = checked_precision(choice, graph, _probe(preprocess), settings)
        dtype = _DTYPES[choice.precision] if choice.runtime == "torch" else torch.float32  # other runtimes take float32 in and out
        if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("this CPU lacks what oneDNN's bf16 convolutions need (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): bf16 runs 6-10x slower than fp32")
        requests = pick_infer_requests(settings.infer_requests, choice, settings.torch_threads or capabilities.cores or 1)
        net = _load_network(network, weights, choice, device, dtype, settings.torch_threads, requests, graph)
        if scene is None:
            scene = load_scene_networks(settings, machine, device, _DTYPES[machine.precision] if machine.runtime == "torch" else torch.float32, requests)
        sky_model, person_detector = scene
        pixels_on_device = use_device_pixels(settings.device_pixels, device)
        log.info(
            "model loaded",
            extra={
                "model": network.name,
                "device": str(device),
                "dtype": str(dtype),
                "runtime": choice.runtime,
                "precision": choice.precision,
                "why": choice.reason,
                "infer_requests": requests,
                "resolution": resolution,
                "second_resolution": second_resolution,
                "scene_handling": sky_model is not None,
                "device_pixels": pixels_on_device,
            },
        )
        return cls(
            model=net,
            device=device,
            dtype=dtype,
            resolution=resolution,
            sky_model=sky_model,
            person_detector=person_detector,
            runtime=choice.runtime,
            second_resolution=second_resolution,
            name=network.name,
            preprocess=preprocess,
            logits=network.runtime == "torch" or preprocess.transform == "sigmoid",
            device_pixels=DevicePixels(device) if pixels_on_device else None,
            choice=choice,
            requests=requests,
        )

    @property
    def input_filter(self) -> Image.Resampling:
        """How images are resized to the model: Lanczos for two passes (so measured best), else antialiased bilinear (cheaper)."""
        return Image.Resampling.LANCZOS if self.second_resolution else Image.Resampling.BILINEAR

    def _to_device(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``N x S x S x 3`` uint8, in numpy or (made on the device) a tensor -> ``N x 3 x S x S`` in the model's dtype."""
        if isinstance(images, torch.Tensor):
            batch = images.to(self.device, non_blocking=True)
        else:
            batch = torch.from_numpy(np.require(images, np.uint8, ["C", "W"])).to(self.device, non_blocking=True)
        return batch.permute(0, 3, 1, 2).to(self.dtype)

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's raw output (logits, or probabilities for a graph that ends in a sigmoid)."""
        # What the weights were trained on: (x / pixel_scale - mean) / std of 0-255 RGB; today's IS-Net: (x - 128) / 256.
        p = self.preprocess
        mean = torch.tensor(p.mean, device=batch.device).view(1, 3, 1, 1) * p.pixel_scale
        std = torch.tensor(p.std, device=batch.device).view(1, 3, 1, 1) * p.pixel_scale
        x = ((batch - mean.to(batch.dtype)) / std.to(batch.dtype)).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def _matte(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self._logits(batch)
        if self.second_resolution:
            # Two scales see different context; averaged logits (a confident pass weighs more) gave a lower MAE
            # than one pass on every evaluation set (bench/quality.py). The second input is made on the device.
            size = (self.second_resolution, self.second_resolution)
            small = F.interpolate(batch.float(), size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 255)
            second = self._logits(small.to(self.dtype))
            logits = (logits + F.interpolate(second, size=logits.shape[-2:], mode="bilinear", align_corners=False)) / 2
        matte = (torch.sigmoid(logits) if self.logits else logits.clamp(0, 1))[:, 0]
        if self.preprocess.minmax:
            # Stretched to [0, 1] per image, as rembg serves these networks: their outputs seldom reach 0 and 1.
            low = matte.amin(dim=(1, 2), keepdim=True)
            high = matte.amax(dim=(1, 2), keepdim=True)
            matte = (matte - low) / (high - low).clamp_min(1e-6)
        return matte

    def _sky(self, batch: torch.Tensor) -> torch.Tensor:
        assert self.sky_model is not None
        # Resized on the device from the model input rather than decoded again: the sky map is coarse anyway.
        small = F.interpolate(batch.float(), size=(self.sky_resolution, self.sky_resolution), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=small.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=small.device).view(1, 3, 1, 1) * 255
        x = ((small - mean) / std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.sky_model(x).float())[:, 0]

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """``N x S x S x 3`` uint8 RGB -> ``N x S x S`` float32 matte in [0, 1]."""
        return self._matte(self._to_device(images)).cpu().numpy()

    @torch.inference_mode()
    def analyse(self, images: np.ndarray | torch.Tensor) -> list[Analysis]:
        """``N x S x S x 3`` uint8 RGB -> one :class:`Analysis` per image: the matte, and the sky map when the sky network is loaded."""
        batch = self._to_device(images)
        on_device = self._matte(batch)
        mattes = on_device.cpu().numpy()
        # With device pixels the matte is also kept where it is, for its upsampling there.
        kept: list[torch.Tensor | None] = list(on_device.unbind(0)) if self.device_pixels is not None else [None] * len(mattes)
        skies = self._sky(batch).cpu().numpy() if self.sky_model is not None else [None] * len(mattes)
        return [Analysis(matte, sky, device_matte) for matte, sky, device_matte in zip(mattes, skies, kept)]

    def warm_up(self) -> None:
        self.analyse(np.zeros((1, self.resolution, self.resolution, 3), dtype=np.uint8))
        if self.device_pixels is not None:
            self.device_pixels.warm_up(self.resolution, self.input_filter)
