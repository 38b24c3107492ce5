"""What the pipeline refuses, in no API's words: each HTTP module maps these to its own envelope and codes."""

from __future__ import annotations

from typing import ClassVar, Sequence


class PipelineError(Exception):
    """A request the pipeline cannot serve; ``reason`` is a short label for logs and metrics."""

    reason: ClassVar[str] = "pipeline"


class UnknownModel(PipelineError):
    reason = "invalid_model"

    def __init__(self, available: Sequence[str]) -> None:
        super().__init__(f"unknown network; loaded: {', '.join(available)}")
        self.available = tuple(available)


class SceneUnavailable(PipelineError):
    """target=scene asked of a server without the sky network or the person detector."""

    reason = "scene_unavailable"


class ImageTooLarge(PipelineError):
    """No bytes, or more than ``limit`` bytes."""

    reason = "image_size"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the image must be 1 to {limit} bytes")
        self.limit = limit


class NotAnImage(PipelineError):
    reason = "image_format"


class ImageDimensions(PipelineError):
    """A side below ``minimum`` or above ``maximum`` pixels."""

    reason = "image_dimension"

    def __init__(self, minimum: int, maximum: int) -> None:
        super().__init__(f"each side must be {minimum} to {maximum} pixels")
        self.minimum = minimum
        self.maximum = maximum


class ImageUrlUnreachable(PipelineError):
    """An image URL that could not be fetched: refused by the SSRF rules, unreachable, an error status, too slow."""

    reason = "url_not_accessible"


class QueueFull(PipelineError):
    reason = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ShuttingDown(PipelineError):
    reason = "unavailable"


class InferenceFailed(PipelineError):
    reason = "internal"
