"""Liveness and readiness, with the batchers' counters for operators and the web page's network picker."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.inference.batcher import Batcher
from app.service import SegmentService


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    if not request.state.ready.is_set():
        return JSONResponse({"status": "not ready"}, status_code=503)
    batchers: dict[str, Batcher] = request.state.batchers
    service: SegmentService = request.state.segment_service
    models = {name: {**_batcher_stats(batcher), **_runtime(service, name, batcher)} for name, batcher in batchers.items()}
    totals = {key: sum(stats[key] for stats in models.values()) for key in ("queue_depth", "batches", "images", "failed_batches", "abandoned")}
    # The totals keep their place at the top; "models" lists what was loaded, for clients and the web page's picker.
    return JSONResponse(
        {
            "status": "ready",
            **totals,
            "pixels_in_flight": request.state.pixel_budget.in_use,
            "default_model": service.default_model,
            "models": models,
        }
    )


def _runtime(service: SegmentService, name: str, batcher: Batcher) -> dict[str, object]:
    """Which runtime and precision serve the network and why (the engine's choice), and its calls in flight at most."""
    choice = service.lane(name).runtime
    return {"runtime": asdict(choice) if choice is not None else None, "infer_requests": batcher.concurrency}


def _batcher_stats(batcher: Batcher) -> dict[str, int]:
    stats = batcher.stats
    return {
        "queue_depth": batcher.depth,
        "batches": stats.batches,
        "images": stats.images,
        "failed_batches": stats.failures,
        "abandoned": stats.abandoned,
    }
