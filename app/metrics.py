"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bgremoval_requests", "Segment requests by mode and HTTP status.", ["mode", "status"], registry=r)
        self.request_seconds = Histogram(
            "bgremoval_request_duration_seconds", "Segment request latency, first byte in to last byte out.", ["mode"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inflight = Gauge("bgremoval_inflight_requests", "Segment requests being served now.", registry=r)
        self.rejected = Counter("bgremoval_rejected", "Requests refused, by reason.", ["reason"], registry=r)
        self.queue_depth = Gauge("bgremoval_queue_depth", "Requests waiting for the model.", registry=r)
        self.batch_size = Histogram("bgremoval_batch_size", "Images per model call.", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.inference_seconds = Histogram(
            "bgremoval_inference_seconds", "Seconds per model call (a whole batch).", buckets=LATENCY_BUCKETS, registry=r
        )
        self.input_megapixels = Histogram(
            "bgremoval_input_megapixels", "Size of the input images.", buckets=(0.1, 0.3, 1, 2, 4, 8, 12, 16, 25, 50, 100, 256),
            registry=r,
        )

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)

    def observe_input(self, width: int, height: int) -> None:
        self.input_megapixels.observe(width * height / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
