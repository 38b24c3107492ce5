"""Prometheus metrics, in a registry of the app's own (no process-global state).

With several serving processes (BGR_WORKERS), each process's values live in prometheus-client's
multiprocess files (PROMETHEUS_MULTIPROC_DIR, made by app/workers.py) and a scrape, whichever
process answers it, reads them all: counters and histograms summed over every process that ever
ran, gauges summed over the live ones (``livesum``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        """``multiprocess_dir``: the shared files of several serving processes (None: this process alone)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self._scraped = r
        if multiprocess_dir is not None:
            # prometheus-client picks file-backed values when first imported, from this variable.
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != str(multiprocess_dir):
                raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must name the metrics folder before prometheus_client is imported")
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, path=str(multiprocess_dir))
        # api: azure, removebg or rembg (the API whose operation was called); mode: backgroundRemoval, foregroundMatting, other.
        self.requests = Counter(
            "bgremoval_requests", "Segment requests by API, mode and HTTP status.", ["api", "mode", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "bgremoval_request_duration_seconds", "Segment request latency, first byte in to last byte out, by API and mode.",
            ["api", "mode"], buckets=LATENCY_BUCKETS, registry=r,
        )
        # Gauges add up over the live serving processes (the multiprocess mode; one process: its own value).
        self.inflight = Gauge(
            "bgremoval_inflight_requests", "Segment requests being served now, all APIs together.", registry=r, multiprocess_mode="livesum"
        )
        # api: whose words the refusal was in (unknown paths are answered as Azure's gateway answers them).
        self.rejected = Counter("bgremoval_rejected", "Requests refused, by API and reason.", ["api", "reason"], registry=r)
        # The total stays unlabelled: the HPA scales on it (deploy/kubernetes/prometheus-adapter).
        self.queue_depth = Gauge(
            "bgremoval_queue_depth", "Requests waiting for a model, all networks together.", registry=r, multiprocess_mode="livesum"
        )
        self.model_queue_depth = Gauge(
            "bgremoval_model_queue_depth", "Requests waiting, by network.", ["model"], registry=r, multiprocess_mode="livesum"
        )
        self._depths: dict[str, int] = {}
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

    def queue_observer(self, model: str) -> Callable[[int], None]:
        """Told each network's queue depth whenever it changes. Set on change, not read when scraped: in
        the multiprocess mode a scrape is answered by one process, which cannot call into the others."""
        gauge = self.model_queue_depth.labels(model)
        self._depths[model] = 0
        gauge.set(0)

        def observe(depth: int) -> None:
            self._depths[model] = depth
            gauge.set(depth)
            self.queue_depth.set(sum(self._depths.values()))

        return observe

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        batch_size, seconds = self.batch_size.labels(model), self.inference_seconds.labels(model)

        def observe(size: int, elapsed: float) -> None:
            batch_size.observe(size)
            seconds.observe(elapsed)

        return observe

    def observe_input(self, width: int, height: int) -> None:
        self.input_megapixels.observe(width * height / 1e6)

    def render(self) -> bytes:
        return generate_latest(self._scraped)
