"""Liveness and readiness, with the service's counters for operators and the web page's network picker."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.service import SegmentService


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    if not request.state.ready.is_set():
        return JSONResponse({"status": "not ready"}, status_code=503)
    service: SegmentService = request.state.segment_service
    readiness = service.readiness()
    # The totals keep their place at the top; "models" lists what was loaded, for clients and the web page's picker.
    return JSONResponse(
        {
            "status": "ready",
            **asdict(readiness.totals),
            "pixels_in_flight": readiness.pixels_in_flight,
            "default_model": readiness.default_model,
            "models": {name: {**asdict(counters), **asdict(readiness.serving[name])} for name, counters in readiness.models.items()},
        }
    )
