"""rembg's error shape, FastAPI's: ``{"detail": …}``, a 422 listing each bad parameter as pydantic words it."""

from __future__ import annotations

from typing import Any, Literal, Mapping

from starlette.responses import JSONResponse, PlainTextResponse, Response

from app import errors as pipeline

Source = Literal["query", "body"]  # where a parameter came from: the first item of a problem's ``loc``


class RembgError(Exception):
    """An answer in FastAPI's error shape: ``{"detail": …}``; ``reason`` is a short label for metrics."""

    def __init__(self, status: int, detail: Any, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return JSONResponse({"detail": self.detail}, self.status, headers=self.headers)


def invalid(problems: list[dict[str, Any]]) -> RembgError:
    """FastAPI's RequestValidationError answer."""
    return RembgError(422, problems, "invalid_parameter")


def problem(kind: str, source: Source, name: str, message: str, value: Any, context: dict[str, Any] | None = None) -> dict[str, Any]:
    problem: dict[str, Any] = {"type": kind, "loc": [source, name], "msg": message, "input": value}
    if context is not None:
        problem["ctx"] = context
    return problem


def missing(source: Source, name: str) -> dict[str, Any]:
    return problem("missing", source, name, "Field required", None)


def http_error(status: int) -> RembgError:
    """Routing's answers (an unknown method), as Starlette words them."""
    phrase = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    headers = {"Allow": "GET, POST"} if status == 405 else None
    return RembgError(status, phrase, "not_found" if status == 404 else "method_not_allowed", headers)


def internal_error() -> Response:
    """What rembg's server (Starlette) answers for a bug: a bare 500."""
    return PlainTextResponse("Internal Server Error", 500)


def from_pipeline(error: pipeline.PipelineError, source: Source) -> RembgError:
    """The pipeline's refusal in FastAPI's words, with the status an HTTPException for it would carry."""
    match error:
        case pipeline.UnknownModel(available=available):
            return invalid([unknown_model(source, None, available)])
        case pipeline.ImageTooLarge(limit=limit):
            return RembgError(413, f"The image must be 1 to {limit} bytes.", error.reason)
        case pipeline.NotAnImage():
            return RembgError(400, "The file is not an image this service can decode.", error.reason)
        case pipeline.ImageDimensions(minimum=minimum, maximum=maximum):
            return RembgError(400, f"Each side of the image must be {minimum} to {maximum} pixels.", error.reason)
        case pipeline.ImageUrlUnreachable():
            return RembgError(400, "The image URL is not accessible.", error.reason)
        case pipeline.QueueFull(retry_after_s=retry_after_s):
            return RembgError(429, "Too many requests: the queue is full.", error.reason, {"Retry-After": str(retry_after_s)})
        case pipeline.ShuttingDown():
            return RembgError(503, "The service is shutting down.", error.reason)
        case pipeline.SceneUnavailable():  # rembg's API never asks for a scene; kept total
            return RembgError(400, str(error), error.reason)
    return RembgError(500, "The image could not be processed.", "internal")


def unknown_model(source: Source, value: str | None, available: tuple[str, ...]) -> dict[str, Any]:
    names = [f"'{name}'" for name in available]
    expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return problem(
        "literal_error", source, "model", f"Input should be {expected} (the networks this server has loaded)", value, {"expected": expected}
    )
