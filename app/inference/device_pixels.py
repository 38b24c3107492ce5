"""Pixels on the model's device (BGR_DEVICE_PIXELS): JPEG decoding, the resize into the model, the matte's upsampling.

Device-agnostic torch. On CUDA, torchvision's ``decode_jpeg`` runs nvJPEG and the resizes are matrix
products on the GPU; on the CPU the same code runs libjpeg-turbo and CPU matrix products, which is
how the tests check it. The resizes reproduce Pillow's (``Resample.c``): the same filter weights,
the horizontal pass first, and for 8-bit images Pillow's 22-bit fixed-point coefficients summed as
integers (exact in float64) with a uint8 result after each pass. On the CPU the model input is
therefore Pillow's byte for byte, and the matte Pillow's but for float rounding (BENCHMARKS.md,
"Pixels on the device").

What the device does not take is left to the CPU path (:func:`jpeg_on_device` says which): any
format but JPEG, JPEGs that are not 8-bit YCbCr or greyscale (CMYK, Adobe RGB, 12-bit), files that
do not end in their EOI marker (truncated: Pillow refuses them, nvJPEG might not), and anything the
device decoder refuses. The CPU path then decodes, or answers Azure's 400 as it always has.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit resampling
ROW_CHUNK = 512  # rows resampled at once: bounds the float64 copy of a large image
MODES = ("auto", "on", "off")


def torchvision_available() -> bool:
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return False
    return True


def use_device_pixels(setting: str, device: torch.device) -> bool:
    """``auto``: on where the engine's device is CUDA (and torchvision is installed); ``on`` and ``off`` as said."""
    if setting == "off":
        return False
    if setting == "on":
        if not torchvision_available():
            raise RuntimeError("BGR_DEVICE_PIXELS=on needs torchvision (pip install 'bgremoval[gpu]')")
        return True
    if device.type != "cuda":
        return False
    if not torchvision_available():
        log.warning("pixels stay on the CPU: torchvision is not installed (pip install 'bgremoval[gpu]')")
        return False
    return True


# --- Which JPEGs the device decodes ------------------------------------------------------------

_SOF_DECODABLE = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic


def jpeg_on_device(data: bytes) -> bool:
    """Whether ``data`` is a JPEG the device decodes as Pillow would: 8-bit, one (grey) or three (YCbCr) components,
    Huffman-coded, and ended by an EOI marker after its first scan. A walk over the header's marker segments."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return False
    position, components, rgb_ids, adobe_transform = 2, 0, False, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker in _SOF_OTHER:
            return False
        if marker in _SOF_DECODABLE:
            if len(segment) < 6 or segment[0] != 8:
                return False
            components = segment[5]
            rgb_ids = segment[6:15:3] == b"RGB"  # libjpeg takes components named R, G, B as RGB, not YCbCr
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]  # 0: stored as RGB (or CMYK); 1: YCbCr
        elif marker == 0xDA:  # start of scan: the header is over
            # Pillow refuses a truncated file; entropy-coded data never holds FF D9, so an EOI after the scan means complete.
            ended = data.rfind(b"\xff\xd9") > position
            ycbcr = components == 3 and not rgb_ids and adobe_transform != 0
            return ended and (components == 1 or ycbcr)
        position += 2 + length
    return False


# --- Pillow's resampling as matrices -----------------------------------------------------------


def _bilinear(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(x * math.pi) / (x * math.pi))


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((-3.0 <= x) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


_FILTERS: dict[Image.Resampling, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    Image.Resampling.BILINEAR: (_bilinear, 1.0),
    Image.Resampling.BICUBIC: (_bicubic, 2.0),
    Image.Resampling.LANCZOS: (_lanczos, 3.0),
}


def pillow_coefficients(in_size: int, out_size: int, resample: Image.Resampling) -> np.ndarray:
    """``out_size x in_size`` float64: row i holds the weights Pillow's ``precompute_coeffs`` gives output pixel i
    (computed for all rows at once: a new size costs no Python loop)."""
    filter_fn, filter_support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates; negatives clip to 0 anyway
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    taps = int(math.ceil(support)) * 2 + 1
    x = xmin[:, None] + np.arange(taps)[None, :]
    inside = x < xmax[:, None]
    weights = np.where(inside, filter_fn((x - center[:, None] + 0.5) / filterscale), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=weights.copy(), where=totals != 0.0)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], x.shape)
    matrix[rows[inside], x[inside]] = weights[inside]
    return matrix


def fixed_point(coefficients: np.ndarray) -> np.ndarray:
    """Pillow's ``normalize_coeffs_8bpc``: each weight times 2^22, rounded half away from zero, as whole float64s."""
    return np.sign(coefficients) * np.floor(np.abs(coefficients) * (1 << PRECISION_BITS) + 0.5)


@dataclass
class DevicePixels:
    """The device pixel path for one device; holds the resampling matrices it has built, by size and filter."""

    device: torch.device
    _matrices: dict[tuple[int, int, Image.Resampling, bool], torch.Tensor] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the decode threads share the matrices
    _streams: threading.local = field(default_factory=threading.local)  # each decode thread's CUDA stream

    def _matrix(self, in_size: int, out_size: int, resample: Image.Resampling, integer: bool) -> torch.Tensor:
        key = (in_size, out_size, resample, integer)
        with self._lock:
            matrix = self._matrices.get(key)
        if matrix is None:
            weights = pillow_coefficients(in_size, out_size, resample)
            matrix = torch.from_numpy(fixed_point(weights) if integer else weights).to(self.device)
            with self._lock:  # a few sizes recur (the model's side, common photo sizes); the oldest others go
                self._matrices[key] = matrix
                if len(self._matrices) > 64:
                    self._matrices.pop(next(iter(self._matrices)))
        return matrix

    def decode_jpeg(self, data: bytes) -> torch.Tensor | None:
        """``3 x H x W`` uint8 RGB on the device, the stored pixels (EXIF orientation ignored, as the CPU path);
        None where the CPU path must decode instead (see the module's docstring)."""
        if not jpeg_on_device(data):
            return None
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as error:  # a stream the device decoder refuses: the CPU path decides
            log.debug("device JPEG decode refused: %s", error)
            return None

    def prepare(
        self, data: bytes, width: int, height: int, resolution: int, resample: Image.Resampling, keep_rgb: bool
    ) -> tuple[np.ndarray | None, torch.Tensor] | None:
        """A JPEG of ``width x height`` -> (its pixels on the CPU when ``keep_rgb``, else None; the model input on the
        device); None where the CPU path must decode it."""
        with torch.inference_mode(), self._own_stream():
            rgb = self.decode_jpeg(data)
            if rgb is None or tuple(rgb.shape[1:]) != (height, width):
                return None
            return (self.to_cpu(rgb) if keep_rgb else None), self.model_input(rgb, resolution, resample)

    def resize_u8(self, image: torch.Tensor, width: int, height: int, resample: Image.Resampling) -> torch.Tensor:
        """``C x H x W`` uint8 -> ``C x height x width`` uint8, as Pillow's ``Image.resize`` on an 8-bit image."""
        channels, in_h, in_w = image.shape
        out = image
        if in_w != width:
            horizontal = self._matrix(in_w, width, resample, integer=True).T
            out = torch.cat([self._fixed_point_sum(rows.double() @ horizontal) for rows in out.split(ROW_CHUNK, dim=1)], dim=1)
        if in_h != height:
            vertical = self._matrix(in_h, height, resample, integer=True)
            out = self._fixed_point_sum(vertical @ out.double())
        return out

    @staticmethod
    def _fixed_point_sum(sums: torch.Tensor) -> torch.Tensor:
        # Pillow: (2^21 + sum of pixel x coefficient) >> 22, clipped to a byte.
        return torch.floor((sums + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255).to(torch.uint8)

    def model_input(self, rgb: torch.Tensor, resolution: int, resample: Image.Resampling) -> torch.Tensor:
        """``3 x H x W`` uint8 -> ``resolution x resolution x 3`` uint8 (the layout the batcher stacks), as
        :func:`app.inference.pipeline.model_input`."""
        return self.resize_u8(rgb, resolution, resolution, resample).permute(1, 2, 0)

    def matte_at_size(self, matte: torch.Tensor, width: int, height: int) -> np.ndarray:
        """``S x S`` float matte in [0, 1] on the device -> ``height x width`` uint8 on the CPU, as
        :func:`app.inference.pipeline.matte_at_size`: scaled to 0-255.5, bilinear in float32 (each pass summed in
        float64, as Pillow's float resampling), then clipped and truncated."""
        with torch.inference_mode(), self._own_stream():
            return self._matte_at_size(matte, width, height)

    def _matte_at_size(self, matte: torch.Tensor, width: int, height: int) -> np.ndarray:
        out = matte.float() * 255.0 + 0.5
        in_h, in_w = out.shape
        if in_w != width:
            out = (out.double() @ self._matrix(in_w, width, Image.Resampling.BILINEAR, integer=False).T).float()
        if in_h != height:
            out = (self._matrix(in_h, height, Image.Resampling.BILINEAR, integer=False) @ out.double()).float()
        return out.clamp_(0, 255).to(torch.uint8).cpu().numpy()

    def to_cpu(self, rgb: torch.Tensor) -> np.ndarray:
        """``3 x H x W`` on the device -> ``H x W x 3`` uint8 numpy (the pixels a cut-out's PNG is made of)."""
        return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())

    def stack(self, images: Sequence[Any]) -> torch.Tensor:
        """The batcher's stacking: model inputs made on the device and (CPU fallbacks) numpy arrays, as one device batch."""
        tensors = [image if isinstance(image, torch.Tensor) else torch.from_numpy(image).to(self.device) for image in images]
        if self.device.type == "cuda":
            consumer = torch.cuda.current_stream(self.device)
            for tensor in tensors:  # made on a decode thread's stream: not to be reused before the batch has read it
                tensor.record_stream(consumer)
        return torch.stack(tensors)

    @contextmanager
    def _own_stream(self) -> Iterator[None]:
        """On CUDA, this thread's own stream, synchronised on leaving: a decode thread's copies back to the CPU then wait
        for its own work, not for the batch the model is running on the default stream."""
        if self.device.type != "cuda":
            yield
            return
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = self._streams.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            yield
        stream.synchronize()

    def warm_up(self, resolution: int, resample: Image.Resampling) -> None:
        """Decode, resize and upsample once, so that the first request does not pay the decoder's and kernels' set-up."""
        buffer = io.BytesIO()
        Image.new("RGB", (96, 64), (120, 60, 30)).save(buffer, "JPEG")
        prepared = self.prepare(buffer.getvalue(), 96, 64, resolution, resample, keep_rgb=True)
        if prepared is None:
            raise RuntimeError("the device JPEG decoder refused a plain JPEG")
        with torch.inference_mode():
            self.matte_at_size(torch.zeros(resolution, resolution, device=self.device), 96, 64)
