"""One segment request from image bytes to PNG stream: decode, batch through the model, encode."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from app.http import errors
from app.imaging.decode import MAX_SIDE, MIN_SIDE, ImageDimensionError, ImageFormatError, decode_image, output_size
from app.imaging.png import iter_matte_png, iter_rgba_png
from app.inference.batcher import Batcher, BatchFailedError, QueueFullError
from app.inference.pipeline import cutout, matte_at_size, model_input

Mode = Literal["backgroundRemoval", "foregroundMatting"]
MODES: tuple[Mode, ...] = ("backgroundRemoval", "foregroundMatting")


@dataclass
class Prepared:
    rgb: np.ndarray | None  # the cut-out's pixels; None for foregroundMatting, which needs only the size
    width: int
    height: int
    model_rgb: np.ndarray


class SegmentService:
    def __init__(self, batcher: Batcher, resolution: int, cpu_slots: int, png_compression: int, retry_after_s: int) -> None:
        self._batcher = batcher
        self._resolution = resolution
        # Bounds how many full-size images are decoded or composed at once, and so peak memory.
        self._cpu_slots = asyncio.Semaphore(cpu_slots)
        self._png_compression = png_compression
        self._retry_after_s = retry_after_s

    def _prepare(self, data: bytes, mode: Mode) -> Prepared:
        try:
            image = decode_image(data)
        except ImageDimensionError:
            raise errors.invalid_image_dimension(MIN_SIDE, MAX_SIDE) from None
        except ImageFormatError:
            raise errors.invalid_image_format() from None
        width, height = image.width, image.height
        rgb = image.rgb
        if mode == "backgroundRemoval":
            out_w, out_h = output_size(width, height)
            if (out_w, out_h) != (width, height):
                from PIL import Image

                rgb = np.asarray(Image.fromarray(rgb).resize((out_w, out_h), Image.LANCZOS, reducing_gap=3.0))
                width, height = out_w, out_h
        kept = rgb if mode == "backgroundRemoval" else None
        return Prepared(kept, width, height, model_input(rgb, self._resolution))

    def _compose(self, prepared: Prepared, matte: np.ndarray, mode: Mode) -> Iterator[bytes]:
        alpha = matte_at_size(matte, prepared.width, prepared.height)
        if mode == "foregroundMatting":
            return iter_matte_png(alpha, self._png_compression)
        assert prepared.rgb is not None
        return iter_rgba_png(cutout(prepared.rgb, alpha), self._png_compression)

    async def segment(self, data: bytes, mode: Mode) -> Iterator[bytes]:
        """The PNG response as an iterator of byte chunks (for a streaming response)."""
        async with self._cpu_slots:
            prepared = await asyncio.to_thread(self._prepare, data, mode)
        del data
        try:
            matte = await self._batcher.submit(prepared.model_rgb)
        except QueueFullError:
            raise errors.rate_limited(self._retry_after_s) from None
        except BatchFailedError:
            raise errors.internal_error() from None
        prepared.model_rgb = None  # type: ignore[assignment]
        async with self._cpu_slots:
            return await asyncio.to_thread(self._compose, prepared, matte, mode)
