"""The FastAPI application: lifespan wiring of model, batcher and clients; routes; Azure errors."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Mapping

import httpx
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from app import __version__
from app.http import azure, errors, health, rembg, removebg
from app.http.removebg_errors import RemoveBgError, unknown_operation
from app.http.removebg_errors import internal_error as removebg_internal_error
from app.http.auth import KeyChecker
from app.http.body import MAX_IMAGE_BYTES
from app.http.cors import CorsMiddleware
from app.http.early_answer import EarlyAnswerMiddleware
from app.http.middleware import AzureHeadersMiddleware
from app.http.openapi import openapi_document
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
                    "batchers": batchers,
                    "pixel_budget": pixel_budget,
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
    for path in azure.SEGMENT_PATHS:
        app.add_api_route(path, azure.segment, methods=["POST"])
    app.add_api_route(removebg.REMOVEBG_PATH, removebg.removebg, methods=["POST"])
    app.add_api_route(removebg.ACCOUNT_PATH, removebg.account, methods=["GET"])
    app.add_api_route(rembg.PATH, rembg.remove_from_url, methods=["GET"])
    app.add_api_route(rembg.PATH, rembg.remove_from_file, methods=["POST"])
    # Each API operation's path; every other path answers in Azure's words (its gateway's 404), but remove.bg's /v1.0/.
    api_paths = {**{path: "azure" for path in azure.SEGMENT_PATHS}, rembg.PATH: "rembg", removebg.REMOVEBG_PATH: "removebg"}

    def api_of(path: str) -> str:
        return "removebg" if path.startswith(removebg.PATH_PREFIX) else api_paths.get(path, "azure")

    app.add_api_route("/health/live", health.live, methods=["GET"])
    app.add_api_route("/health/ready", health.ready, methods=["GET"])
    document = openapi_document(version=__version__)

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
        api = api_of(path)
        metrics.rejected.labels(api, "internal").inc()
        if api == "removebg":
            return removebg_internal_error().response()
        return rembg.internal_error() if api == "rembg" else errors.internal_error().response()

    # Outermost last: the Azure headers and the access log see every answer, drained and CORS ones too.
    app.add_middleware(UnexpectedErrorMiddleware, answer=internal_error)
    app.add_middleware(CorsMiddleware, policy=settings.cors_policy())
    app.add_middleware(EarlyAnswerMiddleware, max_bytes=settings.drain_max_bytes, deadline_s=settings.body_timeout_s)
    app.add_middleware(AzureHeadersMiddleware, metrics=metrics, api_paths=api_paths)

    @app.exception_handler(errors.AzureError)
    async def azure_error(request: Request, error: errors.AzureError) -> Response:
        metrics.rejected.labels("azure", error.reason).inc()
        return error.response()

    @app.exception_handler(rembg.RembgError)
    async def rembg_error(request: Request, error: rembg.RembgError) -> Response:
        metrics.rejected.labels("rembg", error.reason).inc()
        return error.response()

    @app.exception_handler(RemoveBgError)
    async def removebg_error(request: Request, error: RemoveBgError) -> Response:
        metrics.rejected.labels("removebg", error.reason).inc()
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        if api_of(request.url.path) == "removebg":  # an unknown path under /v1.0/, or a method its operation lacks
            return await removebg_error(request, unknown_operation(error.status_code))
        if api_of(request.url.path) == "rembg":  # a method rembg's route does not take: Starlette's 405
            return await rembg_error(request, rembg.http_error(error.status_code))
        # Unknown paths and methods: what APIM answers for an operation it does not know.
        return await azure_error(request, errors.resource_not_found())

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: Exception) -> Response:
        metrics.rejected.labels(api_of(request.url.path), "client_gone").inc()
        return Response(status_code=499)  # nobody reads it; the status is for the log

    return app
