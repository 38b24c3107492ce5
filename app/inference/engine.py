"""The matting model on its device: uint8 batches in, float mattes out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from app.inference.isnet import ISNet, load_isnet
from app.inference.ort_backend import OrtIsNet
from app.settings import Settings

log = logging.getLogger(__name__)

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


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


@dataclass
class MattingEngine:
    """Runs IS-Net on batches of square ``resolution`` RGB images.

    ``predict`` is synchronous and meant for one dedicated worker thread.
    """

    model: ISNet | OrtIsNet
    device: torch.device
    dtype: torch.dtype
    resolution: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "MattingEngine":
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("this CPU lacks what oneDNN's bf16 convolutions need (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): bf16 runs 6-10x slower than fp32")
        model: ISNet | OrtIsNet
        if settings.runtime == "onnxruntime":
            if device.type != "cpu" or dtype != torch.float32:
                raise ValueError("BGR_RUNTIME=onnxruntime runs float32 on the CPU only (BGR_DEVICE=cpu, BGR_DTYPE auto or float32)")
            model = OrtIsNet(settings.weights, threads=settings.torch_threads)
        else:
            model = load_isnet(settings.weights, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        log.info("model loaded", extra={"device": str(device), "dtype": str(dtype), "runtime": settings.runtime})
        return cls(model=model, device=device, dtype=dtype, resolution=settings.resolution)

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """``N x S x S x 3`` uint8 RGB -> ``N x S x S`` float32 matte in [0, 1]."""
        batch = torch.from_numpy(np.require(images, np.uint8, ["C", "W"])).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).to(self.dtype)
        # The weights were trained on (x - 128) / 256 of 0-255 RGB.
        batch = ((batch - 128.0) / 256.0).contiguous(memory_format=torch.channels_last)
        logits = self.model(batch)
        return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def warm_up(self) -> None:
        self.predict(np.zeros((1, self.resolution, self.resolution, 3), dtype=np.uint8))
