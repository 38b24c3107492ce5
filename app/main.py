"""The FastAPI application: lifespan wiring of model, batcher and clients; the mounted APIs and their errors."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Mapping, cast

import httpx
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from app.http import azure, health, rembg, removebg
from app.http.api import Api, ApiError, MountedApis, openapi_document
from app.http.auth import KeyChecker
from app.http.body import MAX_IMAGE_BYTES
from app.http.cors import CorsMiddleware
from app.http.early_answer import EarlyAnswerMiddleware
from app.http.middleware import ApiHeadersMiddleware
from app.http.streaming import ClientGone
from app.http.unexpected import UnexpectedErrorMiddleware
from app.http.url_fetch import UrlPolicy
from app.inference.batcher import Batcher
from app.inference.engine import MattingEngine, load_engines, pick_batch_size
from app.metrics import CONTENT_TYPE, Metrics
from app.pixel_budget import PixelBudget
from app.service import SegmentService
from app.settings import Settings

log = logging.getLogger("app")
WEB_ROOT = Path(__file__).resolve().parent / "web" / "static"
# The imitated APIs, each a package of app/http/; the first is the gateway, whose words answer every path no API owns.
APIS: tuple[Api, ...] = (azure.api, rembg.api, removebg.api)


def create_app(
    settings: Settings,
    engine: MattingEngine | None = None,
    engines: Mapping[str, MattingEngine] | None = None,
    metrics_dir: Path | None = None,
) -> FastAPI:
    """Build the app. ``engine`` (the default network) or ``engines`` (by name, the default first) let tests share loaded models;
    ``metrics_dir``: the multiprocess metrics folder shared with the other serving processes (app/workers.py)."""
    metrics = Metrics(metrics_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        ready = asyncio.Event()
        key_checker = KeyChecker(settings.all_api_keys())
        if not key_checker.enforced:
            log.warning("no API key configured (BGR_API_KEYS / BGR_API_KEYS_FILE): the service accepts every request")
        if engines is not None:
            loaded = dict(engines)
        elif engine is not None:
            loaded = {engine.name: engine}
        else:
            loaded = await asyncio.to_thread(load_engines, settings)
        for matting in loaded.values():
            await asyncio.to_thread(matting.warm_up)
        # One batcher per network: a batch holds one network's inputs.
        batchers = {
            name: Batcher(
                matting.analyse,
                pick_batch_size(settings.max_batch_size, matting.device),
                settings.max_batch_wait_ms / 1000,
                settings.queue_size,
                on_batch=metrics.batch_observer(name),
                stack=matting.device_pixels.stack if matting.device_pixels is not None else None,
                on_depth=metrics.queue_observer(name),
                concurrency=matting.requests,
            )
            for name, matting in loaded.items()
        }
        for batcher in batchers.values():
            await batcher.start()
        pixel_budget = PixelBudget(settings.max_pixels_in_flight)
        service = SegmentService.from_settings(settings, batchers, loaded, pixel_budget, on_input=metrics.observe_input)
        matting = loaded[service.default_model]
        url_policy = UrlPolicy.from_allow_list(
            settings.url_allow,
            max_bytes=MAX_IMAGE_BYTES,
            timeout_s=settings.url_timeout_s,
            max_redirects=settings.url_max_redirects,
        )
        async with httpx.AsyncClient(timeout=settings.url_timeout_s, follow_redirects=False, trust_env=False) as http_client:
            ready.set()
            log.info(
                "ready",
                extra={
                    "host": settings.host,
                    "port": settings.port,
                    "device": str(matting.device),
                    "dtype": str(matting.dtype),
                    "models": list(service.models),
                    "scene_handling": service.scene_handling,
                },
            )
            try:
                yield {
                    "ready": ready,
                    "key_checker": key_checker,
                    "segment_service": service,
                    "http_client": http_client,
                    "url_policy": url_policy,
                    "body_timeout_s": settings.body_timeout_s,
                    "settings": settings,
                }
            finally:
                # The server has stopped accepting and waited for open requests; answer what is still queued.
                ready.clear()
                await asyncio.gather(*(batcher.drain(settings.shutdown_grace_s) for batcher in batchers.values()))
                for batcher in batchers.values():
                    await batcher.stop()
                log.info(
                    "stopped",
                    extra={
                        "images": sum(b.stats.images for b in batchers.values()),
                        "batches": sum(b.stats.batches for b in batchers.values()),
                    },
                )

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    apis = MountedApis(APIS)

    def answer(api: Api) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def refused(request: Request, error: Exception) -> Response:
            refusal = cast(ApiError, error)
            metrics.rejected.labels(api.name, refusal.reason).inc()
            return refusal.response()

        return refused

    for api in APIS:
        app.include_router(api.router)
        app.add_exception_handler(api.error, answer(api))
    app.add_api_route("/health/live", health.live, methods=["GET"])
    app.add_api_route("/health/ready", health.ready, methods=["GET"])
    document = openapi_document(APIS)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def page(request: Request) -> Response:
        return FileResponse(WEB_ROOT / "index.html", media_type="text/html; charset=utf-8")

    app.add_api_route("/openapi.json", openapi, methods=["GET"])
    app.add_api_route("/metrics", prometheus, methods=["GET"])
    app.add_api_route("/", page, methods=["GET"])
    app.mount("/static", StaticFiles(directory=WEB_ROOT), name="static")
    def internal_error(path: str) -> Response:
        """A bug's 500, in the words of the API the path belongs to."""
        api = apis.answering(path)
        metrics.rejected.labels(api.name, "internal").inc()
        return api.internal_error()

    # Outermost last: the API headers and the access log see every answer, drained and CORS ones too.
    app.add_middleware(UnexpectedErrorMiddleware, answer=internal_error)
    app.add_middleware(CorsMiddleware, policy=settings.cors_policy())
    app.add_middleware(EarlyAnswerMiddleware, max_bytes=settings.drain_max_bytes, deadline_s=settings.body_timeout_s)
    app.add_middleware(ApiHeadersMiddleware, metrics=metrics, apis=apis)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        # An unknown path, or a method its operation lacks, in the words of the API the path belongs to.
        api = apis.answering(request.url.path)
        return await answer(api)(request, api.routing_error(error.status_code))

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: Exception) -> Response:
        metrics.rejected.labels(apis.answering(request.url.path).name, "client_gone").inc()
        return Response(status_code=499)  # nobody reads it; the status is for the log

    return app
