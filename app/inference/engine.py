"""The matting model on its device: uint8 batches in, float mattes out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from app.inference.isnet import ISNet, load_isnet
from app.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


@dataclass
class MattingEngine:
    """Runs IS-Net on batches of square ``resolution`` RGB images.

    ``predict`` is synchronous and meant for one dedicated worker thread.
    """

    model: ISNet
    device: torch.device
    dtype: torch.dtype
    resolution: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "MattingEngine":
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        model = load_isnet(settings.weights, device=device, dtype=dtype).to(memory_format=torch.channels_last)
        log.info("model loaded", extra={"device": str(device), "dtype": str(dtype)})
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
