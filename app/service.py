"""One segment request from image bytes to a response stream: decode, batch through the model, encode.

Every API shares this pipeline; Azure's PNGs are its default encoding, and an API with output options of its own
(formats, backgrounds, crops) passes an :data:`Encoder` that turns the :class:`Cutout` into its bytes.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Callable, Iterator, Literal, Mapping, get_args

import numpy as np
from PIL import Image

from app import errors
from app.imaging.decode import (
    MAX_OUTPUT_PIXELS,
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
from app.inference.device_pixels import DevicePixels
from app.inference.engine import Analysis, MattingEngine, RuntimeChoice
from app.inference.foreground import estimate_foreground
from app.inference.matting import refine_matte, worth_refining
from app.inference.person import PersonDetector
from app.inference.pipeline import matte_at_size, model_input
from app.inference.scene import SceneMeasures, SceneRule, Target, measure, scene_alpha
from app.pixel_budget import PixelBudget
from app.settings import Settings

Mode = Literal["backgroundRemoval", "foregroundMatting"]
MODES: tuple[Mode, ...] = ("backgroundRemoval", "foregroundMatting")
TargetChoice = Literal["auto", "subject", "scene"]
TARGET_CHOICES: tuple[TargetChoice, ...] = get_args(TargetChoice)
RefineChoice = Literal["auto", "on", "off"]


@contextmanager
def image_errors() -> Iterator[None]:
    """Decoding errors as the pipeline's."""
    try:
        yield
    except ImageDimensionError:
        raise errors.ImageDimensions(MIN_SIDE, MAX_SIDE) from None
    except ImageFormatError:
        raise errors.NotAnImage() from None


@dataclass(frozen=True)
class Cutout:
    """One image's result at output size, for an API's own encoder."""

    rgb: np.ndarray  # H x W x 3 uint8: the photo's colours (the foreground's estimate where decontaminated)
    alpha: np.ndarray  # H x W uint8
    target: Target
    person_score: float | None = None  # the person detector's probability for the photo; None: not asked, nor by the scene rule


@dataclass(frozen=True)
class Encoded:
    """A response body as an encoder made it: its byte chunks (produced lazily or not), type and headers."""

    chunks: Iterator[bytes]
    media_type: str = "image/png"
    headers: Mapping[str, str] = field(default_factory=dict)


Encoder = Callable[[Cutout], Encoded]  # runs on a worker thread, within the request's CPU slot and pixel budget


@dataclass
class ImageStream:
    """A response body being encoded; ``close()`` (idempotent) returns its memory budget."""

    chunks: Iterator[bytes]
    _release: Callable[[], None] | None
    target: Target = "subject"
    measures: SceneMeasures | None = None  # what an "auto" decision was made from
    media_type: str = "image/png"
    headers: Mapping[str, str] = field(default_factory=dict)  # an encoder's own (sizes, boxes)
    person_score: float | None = None  # as in :class:`Cutout`
    refined: bool = False  # whether the matting stage re-solved the matte

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass
class Prepared:
    rgb: np.ndarray | None  # the pixels at (at most) output size: the cut-out's, or a scene's guide; None when not needed
    width: int  # output size
    height: int
    model_rgb: Any  # S x S x 3 uint8: numpy, or a tensor on the device (device pixels); None once submitted


@dataclass(frozen=True)
class Composed:
    encoded: Encoded
    target: Target
    measures: SceneMeasures | None
    person_score: float | None
    refined: bool


@dataclass(frozen=True)
class LaneCounters:
    """One network's queue and what its batcher has done since the start."""

    queue_depth: int
    batches: int
    images: int
    failed_batches: int
    abandoned: int


@dataclass(frozen=True)
class LaneServing:
    """How one network runs: the engine's runtime choice (runtime, precision, reason) and its calls in flight at most."""

    runtime: RuntimeChoice | None
    infer_requests: int


@dataclass(frozen=True)
class Readiness:
    """What the service holds and has done, for /health/ready: each network's counters, and the pixels in flight."""

    default_model: str
    models: Mapping[str, LaneCounters]  # the loaded networks, the default first
    pixels_in_flight: int
    serving: Mapping[str, LaneServing] = field(default_factory=dict)  # how each network runs (none: not known)

    @property
    def totals(self) -> LaneCounters:
        """The counters summed over the networks."""
        return LaneCounters(**{f.name: sum(getattr(counters, f.name) for counters in self.models.values()) for f in fields(LaneCounters)})


@dataclass(frozen=True)
class Lane:
    """One loaded network: the batcher its requests queue on, and the input it takes."""

    batcher: Batcher
    resolution: int
    input_filter: Image.Resampling = Image.Resampling.BILINEAR
    runtime: RuntimeChoice | None = None  # which runtime and precision serve it, and why (for /health/ready)


class SegmentService:
    def __init__(
        self,
        lanes: Mapping[str, Lane],
        default_model: str,
        decode_concurrency: int,
        pixel_budget: PixelBudget,
        png_compression: int,
        matte_png_compression: int,
        retry_after_s: int,
        on_input: Callable[[int, int], None] | None = None,
        scene_rule: SceneRule | None = None,
        person_detector: PersonDetector | None = None,
        default_target: TargetChoice = "auto",
        decontaminate: bool = False,
        device_pixels: DevicePixels | None = None,
        refine: RefineChoice = "off",
    ) -> None:
        """``lanes``: each loaded network by name; ``scene_rule`` is None when there is no sky network or person detector
        (every image is then a subject); ``device_pixels``: JPEGs decoded and resized, mattes upsampled, on the
        model's device (None: all on the CPU); ``refine``: the default of the matting stage (BGR_REFINE)."""
        if default_model not in lanes:
            raise ValueError(f"the default network {default_model!r} is not among the loaded {sorted(lanes)}")
        if scene_rule is not None and person_detector is None:
            raise ValueError("the scene rule needs the person detector")
        self._lanes = dict(lanes)
        self._default_model = default_model
        self._scene_rule = scene_rule
        self._person_detector = person_detector
        self._default_target = default_target
        self._decontaminate = decontaminate
        self._refine = refine
        self._device_pixels = device_pixels
        self._on_input = on_input
        self._cpu_slots = asyncio.Semaphore(decode_concurrency)
        self._pixel_budget = pixel_budget
        self._png_compression = png_compression
        self._matte_png_compression = matte_png_compression
        self._retry_after_s = retry_after_s

    @property
    def models(self) -> tuple[str, ...]:
        """The loaded networks, the default first."""
        return tuple(self._lanes)

    @property
    def default_model(self) -> str:
        return self._default_model

    @property
    def png_compression(self) -> int:
        """The deflate level of cut-outs, for encoders that write PNGs of their own."""
        return self._png_compression

    def lane(self, model: str | None) -> Lane:
        """The network a request names (None: the default); :class:`errors.UnknownModel` otherwise."""
        lane = self._lanes.get(model or self._default_model)
        if lane is None:
            raise errors.UnknownModel(self.models)
        return lane

    def _prepare(self, data: bytes, info: ImageInfo, mode: Mode, needs_guide: bool, lane: Lane, max_output_pixels: int) -> Prepared:
        """``needs_guide``: the pixels are wanted beyond a cut-out's (a scene's guide, the matting stage's photo)."""
        # An output scaled down (Pillow's Lanczos with a reducing gap), and anything over 16 MP, stays on the CPU.
        if self._device_pixels is not None and info.format == "JPEG" and info.width * info.height <= min(max_output_pixels, MAX_OUTPUT_PIXELS):
            keep_rgb = mode == "backgroundRemoval" or needs_guide
            on_device = self._device_pixels.prepare(data, info.width, info.height, lane.resolution, lane.input_filter, keep_rgb)
            if on_device is not None:
                return Prepared(on_device[0], info.width, info.height, on_device[1])
        with image_errors():
            if mode == "backgroundRemoval" or needs_guide:
                # The cut-out's pixels, or the guide a scene's sky edge is refined with (at most output size).
                out_w, out_h = output_size(info.width, info.height, max_output_pixels)
                exact = (out_w, out_h) == (info.width, info.height)
                image = decode_image(data, None if exact else (out_w, out_h))
                rgb = image.rgb
                if rgb.shape[:2] != (out_h, out_w):
                    rgb = np.asarray(Image.fromarray(rgb).resize((out_w, out_h), Image.LANCZOS, reducing_gap=3.0))
                if mode == "foregroundMatting":
                    return Prepared(rgb, info.width, info.height, model_input(rgb, lane.resolution, lane.input_filter))
                return Prepared(rgb, out_w, out_h, model_input(rgb, lane.resolution, lane.input_filter))
            # foregroundMatting of a subject needs the pixels only at the model's size, and the output's size.
            image = decode_image(data, (lane.resolution, lane.resolution))
            return Prepared(None, info.width, info.height, model_input(image.rgb, lane.resolution, lane.input_filter))

    def _alpha(
        self, prepared: Prepared, analysis: Analysis, choice: TargetChoice, refine: RefineChoice
    ) -> tuple[np.ndarray, Target, SceneMeasures | None, bool]:
        """The alpha at output size, what it was taken for, the scene measures, and whether the matting stage ran."""
        measures = None
        target: Target = "subject"
        if self._scene_rule is not None and analysis.sky is not None and choice != "subject":
            if choice == "auto":
                assert prepared.rgb is not None and self._person_detector is not None
                person_score = partial(self._person_detector.score, prepared.rgb)
                target, measures = self._scene_rule.decide(measure(analysis.matte, analysis.sky), person_score)
            else:
                target = "scene"
        if target == "subject" and not self._refines(refine, prepared, analysis):
            if self._device_pixels is not None and analysis.matte_on_device is not None:
                return self._device_pixels.matte_at_size(analysis.matte_on_device, prepared.width, prepared.height), target, measures, False
            return matte_at_size(analysis.matte, prepared.width, prepared.height), target, measures, False
        # Both need the pixels: the matting stage re-solves a subject's edge, a scene is everything but the sky.
        assert prepared.rgb is not None
        refined = target == "subject"
        alpha = refine_matte(prepared.rgb, analysis.matte) if refined else scene_alpha(analysis.sky, prepared.rgb)
        if alpha.shape != (prepared.height, prepared.width):  # a foregroundMatting output larger than the pixels (over 16 MP)
            alpha = np.asarray(Image.fromarray(alpha).resize((prepared.width, prepared.height), Image.BILINEAR))
        return alpha, target, measures, refined

    @staticmethod
    def _may_refine(refine: RefineChoice, width: int, height: int, lane: Lane) -> bool:
        """Whether the matting stage may run on a photo of this size (so its pixels must be kept)."""
        return refine == "on" or (refine == "auto" and worth_refining(width, height, lane.resolution**2))

    @staticmethod
    def _refines(refine: RefineChoice, prepared: Prepared, analysis: Analysis) -> bool:
        if refine == "off" or prepared.rgb is None:
            return False
        return refine == "on" or worth_refining(prepared.width, prepared.height, analysis.matte.size, analysis.matte)

    def _person_score(self, prepared: Prepared, measures: SceneMeasures | None, asked: bool) -> float | None:
        """The scene rule's person score where it asked the detector; else the detector's, when ``asked``."""
        if measures is not None and measures.person is not None:
            return measures.person
        if not asked or self._person_detector is None or prepared.rgb is None:
            return None
        return self._person_detector.score(prepared.rgb)

    def _compose(
        self,
        prepared: Prepared,
        analysis: Analysis,
        mode: Mode,
        choice: TargetChoice,
        decontaminate: bool | None,
        encode: Encoder | None,
        score_person: bool,
        refine: RefineChoice,
    ) -> Composed:
        alpha, target, measures, refined = self._alpha(prepared, analysis, choice, refine)
        person = self._person_score(prepared, measures, score_person)
        if mode == "foregroundMatting":
            return Composed(Encoded(iter_matte_png(alpha, self._matte_png_compression)), target, measures, person, refined)
        assert prepared.rgb is not None
        if decontaminate is None:
            # A refined edge gets the foreground's colours unless the request says otherwise: hair the stage gave back
            # would otherwise carry its old background.
            decontaminate = self._decontaminate or refined
        colours = estimate_foreground(prepared.rgb, alpha) if decontaminate else prepared.rgb
        if encode is not None:
            return Composed(encode(Cutout(colours, alpha, target, person)), target, measures, person, refined)
        return Composed(Encoded(iter_rgba_png(colours, alpha, self._png_compression)), target, measures, person, refined)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        batchers: Mapping[str, Batcher],
        engines: Mapping[str, MattingEngine],
        pixel_budget: PixelBudget,
        on_input: Callable[[int, int], None] | None = None,
    ) -> "SegmentService":
        """One lane per loaded engine, with the batcher of the same name; the first engine is the default."""
        lanes = {name: Lane(batchers[name], engine.resolution, engine.input_filter, engine.choice) for name, engine in engines.items()}
        default = next(iter(engines))
        return cls(
            lanes,
            default,
            settings.decode_concurrency,
            pixel_budget,
            settings.png_compression,
            settings.matte_png_compression,
            settings.retry_after_s,
            on_input=on_input,
            scene_rule=SceneRule() if engines[default].sky_model is not None and engines[default].person_detector is not None else None,
            person_detector=engines[default].person_detector,
            default_target=settings.target,  # type: ignore[arg-type]  # validated by Settings
            decontaminate=settings.decontaminate,
            device_pixels=engines[default].device_pixels,
            refine=settings.refine,  # type: ignore[arg-type]  # validated by Settings
        )

    @property
    def scene_handling(self) -> bool:
        return self._scene_rule is not None

    def readiness(self) -> Readiness:
        """Each network's queue depth and batch counters, and the full-size pixels held now."""
        models = {}
        for name, lane in self._lanes.items():
            stats = lane.batcher.stats
            models[name] = LaneCounters(lane.batcher.depth, stats.batches, stats.images, stats.failures, stats.abandoned)
        serving = {name: LaneServing(lane.runtime, lane.batcher.concurrency) for name, lane in self._lanes.items()}
        return Readiness(self._default_model, models, self._pixel_budget.in_use, serving)

    async def segment(
        self,
        data: bytes,
        mode: Mode,
        target: TargetChoice | None = None,
        decontaminate: bool | None = None,
        model: str | None = None,
        encode: Encoder | None = None,
        max_output_pixels: int = MAX_OUTPUT_PIXELS,
        score_person: bool = False,
        refine: RefineChoice | None = None,
    ) -> ImageStream:
        """The response as a stream of byte chunks; the caller must ``close()`` it when sent or abandoned.

        ``target``: subject, scene, or auto (decide from the image); None means the server's default.
        ``decontaminate``: whether a cut-out's semi-transparent pixels get the foreground's estimated
        colour instead of the photo's; None means the server's default, or yes where the matting stage ran.
        ``refine``: the matting stage (app/inference/matting.py) on a subject's matte: on, off, or auto (large photos
        whose matte has a real unsure band); None means the server's default (BGR_REFINE).
        ``model``: a loaded network by name; None means the server's default.
        ``encode``: a backgroundRemoval cut-out's own encoding (Azure's RGBA PNG when None).
        ``max_output_pixels``: a cut-out is scaled down to at most this many pixels, aspect kept.
        ``score_person``: also score whether a person is in the photo (remove.bg's X-Type), where a person detector is
        loaded; the result's ``person_score``. The scene rule's score is reused where it asked one, so the detector
        runs at most once an image.
        Errors before the first byte raise :class:`errors.PipelineError`.
        """
        if encode is not None and mode != "backgroundRemoval":
            raise ValueError("an encoder takes a cut-out (backgroundRemoval)")
        lane = self.lane(model)
        choice = target or self._default_target
        if choice == "scene" and self._scene_rule is None:
            raise errors.SceneUnavailable()
        refine_choice = refine or self._refine
        needs_guide = self._scene_rule is not None and choice != "subject"
        with image_errors():
            info = await asyncio.to_thread(probe_image, data)
        if self._on_input is not None:
            self._on_input(info.width, info.height)
        needs_pixels = needs_guide or self._may_refine(refine_choice, info.width, info.height, lane)
        held = await self._pixel_budget.acquire(info.width * info.height)
        try:
            async with self._cpu_slots:
                prepared = await asyncio.to_thread(self._prepare, data, info, mode, needs_pixels, lane, max_output_pixels)
            del data
            try:
                analysis = await lane.batcher.submit(prepared.model_rgb)
            except QueueFullError:
                raise errors.QueueFull(self._retry_after_s) from None
            except BatcherStoppedError:
                raise errors.ShuttingDown() from None
            except BatchFailedError:
                raise errors.InferenceFailed() from None
            prepared.model_rgb = None
            async with self._cpu_slots:
                composed = await asyncio.to_thread(
                    self._compose, prepared, analysis, mode, choice, decontaminate, encode, score_person, refine_choice
                )
        except BaseException:
            self._pixel_budget.release(held)
            raise
        encoded = composed.encoded
        release = partial(self._pixel_budget.release, held)
        return ImageStream(
            encoded.chunks,
            release,
            composed.target,
            composed.measures,
            encoded.media_type,
            dict(encoded.headers),
            composed.person_score,
            composed.refined,
        )
