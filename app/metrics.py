"""Prometheus metrics, in a registry of the app's own (no process-global state)."""

from __future__ import annotations

from typing import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # api: azure, removebg or rembg (the API whose operation was called); mode: backgroundRemoval, foregroundMatting, other.
        self.requests = Counter(
            "bgremoval_requests", "Segment requests by API, mode and HTTP status.", ["api", "mode", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "bgremoval_request_duration_seconds", "Segment request latency, first byte in to last byte out, by API and mode.",
            ["api", "mode"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inflight = Gauge("bgremoval_inflight_requests", "Segment requests being served now, all APIs together.", registry=r)
        # api: whose words the refusal was in (unknown paths are answered as Azure's gateway answers them).
        self.rejected = Counter("bgremoval_rejected", "Requests refused, by API and reason.", ["api", "reason"], registry=r)
        # The total stays unlabelled: the HPA scales on it (deploy/kubernetes/prometheus-adapter).
        self.queue_depth = Gauge("bgremoval_queue_depth", "Requests waiting for a model, all networks together.", registry=r)
        self.model_queue_depth = Gauge("bgremoval_model_queue_depth", "Requests waiting, by network.", ["model"], registry=r)
        self.batch_size = Histogram(
            "bgremoval_batch_size", "Images per model call, by network.", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.inference_seconds = Histogram(
            "bgremoval_inference_seconds", "Seconds per model call (a whole batch), by network.", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.input_megapixels = Histogram(
            "bgremoval_input_megapixels", "Size of the input images.", buckets=(0.1, 0.3, 1, 2, 4, 8, 12, 16, 25, 50, 100, 256),
            registry=r,
        )

    def watch_queues(self, depths: Mapping[str, Callable[[], int]]) -> None:
        """Gauges read from each network's batcher when scraped."""
        for model, depth in depths.items():
            self.model_queue_depth.labels(model).set_function(depth)
        self.queue_depth.set_function(lambda: sum(depth() for depth in depths.values()))

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        batch_size, seconds = self.batch_size.labels(model), self.inference_seconds.labels(model)

        def observe(size: int, elapsed: float) -> None:
            batch_size.observe(size)
            seconds.observe(elapsed)

        return observe

    def observe_input(self, width: int, height: int) -> None:
        self.input_megapixels.observe(width * height / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
