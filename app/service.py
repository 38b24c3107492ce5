"""One segment request from image bytes to PNG stream: decode, batch through the model, encode."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
from PIL import Image

from app.http import errors
from app.imaging.decode import (
    MAX_SIDE,
    MIN_SIDE,
    ImageDimensionError,
    ImageFormatError,
    ImageInfo,
    decode_image,
    output_size,
    probe_image,
)
from app.imaging.png import iter_matte_png, iter_rgba_png
from app.inference.batcher import Batcher, BatchFailedError, BatcherStoppedError, QueueFullError
from app.inference.pipeline import cutout, matte_at_size, model_input
from app.pixel_budget import PixelBudget

Mode = Literal["backgroundRemoval", "foregroundMatting"]
MODES: tuple[Mode, ...] = ("backgroundRemoval", "foregroundMatting")


@contextmanager
def image_errors() -> Iterator[None]:
    """Decoding errors as Azure's 400s."""
    try:
        yield
    except ImageDimensionError:
        raise errors.invalid_image_dimension(MIN_SIDE, MAX_SIDE) from None
    except ImageFormatError:
        raise errors.invalid_image_format() from None


@dataclass
class PngStream:
    """A response body being encoded; ``close()`` (idempotent) returns its memory budget."""

    chunks: Iterator[bytes]
    _release: Callable[[], None] | None

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass
class Prepared:
    rgb: np.ndarray | None  # the cut-out's pixels at output size; None for foregroundMatting, which needs only the size
    width: int  # output size
    height: int
    model_rgb: np.ndarray | None


class SegmentService:
    def __init__(
        self,
        batcher: Batcher,
        resolution: int,
        decode_concurrency: int,
        pixel_budget: PixelBudget,
        png_compression: int,
        retry_after_s: int,
        on_input: Callable[[int, int], None] | None = None,
    ) -> None:
        self._batcher = batcher
        self._on_input = on_input
        self._resolution = resolution
        self._cpu_slots = asyncio.Semaphore(decode_concurrency)
        self._pixel_budget = pixel_budget
        self._png_compression = png_compression
        self._retry_after_s = retry_after_s

    def _prepare(self, data: bytes, info: ImageInfo, mode: Mode) -> Prepared:
        with image_errors():
            if mode == "backgroundRemoval":
                out_w, out_h = output_size(info.width, info.height)
                exact = (out_w, out_h) == (info.width, info.height)
                image = decode_image(data, None if exact else (out_w, out_h))
                rgb = image.rgb
                if rgb.shape[:2] != (out_h, out_w):
                    rgb = np.asarray(Image.fromarray(rgb).resize((out_w, out_h), Image.LANCZOS, reducing_gap=3.0))
                return Prepared(rgb, out_w, out_h, model_input(rgb, self._resolution))
            # foregroundMatting needs the pixels only at the model's size, and the output's size.
            image = decode_image(data, (self._resolution, self._resolution))
            return Prepared(None, info.width, info.height, model_input(image.rgb, self._resolution))

    def _compose(self, prepared: Prepared, matte: np.ndarray, mode: Mode) -> Iterator[bytes]:
        alpha = matte_at_size(matte, prepared.width, prepared.height)
        if mode == "foregroundMatting":
            return iter_matte_png(alpha, self._png_compression)
        assert prepared.rgb is not None
        return iter_rgba_png(cutout(prepared.rgb, alpha), self._png_compression)

    async def segment(self, data: bytes, mode: Mode) -> PngStream:
        """The PNG response as a stream of byte chunks; the caller must ``close()`` it when sent or abandoned.

        Errors before the first byte raise :class:`errors.AzureError`.
        """
        with image_errors():
            info = await asyncio.to_thread(probe_image, data)
        if self._on_input is not None:
            self._on_input(info.width, info.height)
        held = await self._pixel_budget.acquire(info.width * info.height)
        try:
            async with self._cpu_slots:
                prepared = await asyncio.to_thread(self._prepare, data, info, mode)
            del data
            try:
                matte = await self._batcher.submit(prepared.model_rgb)
            except QueueFullError:
                raise errors.rate_limited(self._retry_after_s) from None
            except BatcherStoppedError:
                raise errors.service_unavailable() from None
            except BatchFailedError:
                raise errors.internal_error() from None
            prepared.model_rgb = None
            async with self._cpu_slots:
                chunks = await asyncio.to_thread(self._compose, prepared, matte, mode)
        except BaseException:
            self._pixel_budget.release(held)
            raise
        return PngStream(chunks, lambda: self._pixel_budget.release(held))
