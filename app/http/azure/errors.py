"""Azure's error envelope, byte for byte.

Two families (CONTRACT.md §4): backend errors carry a named code, compact JSON,
``application/json; charset=utf-8`` and ``x-ms-error-code``; gateway (APIM)
errors carry the status as the code, a space after ``"message":`` and plain
``application/json``.
"""

from __future__ import annotations

import json
from typing import Sequence

from starlette.responses import Response

from app import errors as pipeline

API_SUPPORTED_VERSIONS = (
    "4.0-pre1,2022-07-31-preview,2022-10-12-preview,2023-02-01-preview,"
    "2023-04-01-preview,2023-06-01-preview,2023-07-01-preview,2023-10-01"
)


class AzureError(Exception):
    """A backend error: ``{"error":{"code":…,"message":…[,"innererror":{…}]}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner_code: str | None = None,
        inner_message: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason or code  # a short label for metrics
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.inner_message = inner_message
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.inner_code is not None:
            error["innererror"] = {"code": self.inner_code, "message": self.inner_message or ""}
        return json.dumps({"error": error}, separators=(",", ":"), ensure_ascii=False).encode()

    def response(self) -> Response:
        headers = {"x-ms-error-code": self.code, **self.headers}
        return Response(self.body(), self.status, headers=headers, media_type="application/json; charset=utf-8")


class GatewayError(AzureError):
    """An APIM gateway error: the status as the code, ``application/json``, no ``x-ms-error-code``.

    The recorded 404 has a space after ``"message":`` (56 bytes); the recorded 401
    is compact (Content-Length 224), so ``spaced`` follows each recording.
    """

    def __init__(self, status: int, message: str, spaced: bool, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, str(status), message, headers=headers, reason=reason)
        self.spaced = spaced

    def body(self) -> bytes:
        separator = ": " if self.spaced else ":"
        return (
            '{"error":{"code":' + json.dumps(self.code) + ',"message"' + separator + json.dumps(self.message, ensure_ascii=False) + "}}"
        ).encode()

    def response(self) -> Response:
        # Starlette appends "; charset=utf-8" to text/* only, so application/json stays bare as APIM sends it.
        return Response(self.body(), self.status, headers=self.headers, media_type="application/json")


def invalid_request(reason: str, message: str, inner_code: str | None = None, inner_message: str | None = None) -> AzureError:
    return AzureError(400, "InvalidRequest", message, inner_code, inner_message, reason=reason)


def invalid_mode() -> AzureError:
    return invalid_request("invalid_mode", "Value for mode is invalid.")


def invalid_target() -> AzureError:
    return invalid_request("invalid_target", "Value for target is invalid. Use auto, subject or scene.")


def invalid_decontaminate() -> AzureError:
    return invalid_request("invalid_decontaminate", "Value for decontaminate is invalid. Use true or false.")


def invalid_refine() -> AzureError:
    return invalid_request("invalid_refine", "Value for refine is invalid. Use true, false or auto.")


def invalid_model(available: Sequence[str]) -> AzureError:
    # Not Azure's parameter; the message names what this server loaded rather than echoing the request.
    return invalid_request("invalid_model", f"Value for model is invalid. This server has loaded: {', '.join(available)}.")


def scene_unavailable() -> AzureError:
    return invalid_request("scene_unavailable", "target=scene is not available: this server has scene handling off (no sky network or person detector loaded).")


def invalid_image_size(limit: int) -> AzureError:
    return invalid_request("image_size", f"The image size is not allowed to be zero or larger than {limit} bytes.")


def invalid_image_dimension(minimum: int, maximum: int) -> AzureError:
    return invalid_request("image_dimension", f"The image dimension is not allowed to be smaller than {minimum} and larger than {maximum}.")


def invalid_image_format() -> AzureError:
    return invalid_request("image_format", "Image format is not valid.", "InvalidImageFormat", "Input data is not a valid image.")


def url_not_accessible() -> AzureError:
    return invalid_request("url_not_accessible", "The provided image url is not accessible.")


def unsupported_content_type(content_type: str) -> AzureError:
    return invalid_request("content_type", f"The provided image content type {content_type} is not supported.")


def invalid_json_body() -> AzureError:
    return invalid_request("json_body", "The request body is not valid JSON with a 'url' property.")


def body_timeout() -> AzureError:
    return AzureError(408, "Timeout", "The request body was not received in time.", reason="body_timeout")


def internal_error() -> AzureError:
    return AzureError(500, "InternalServerError", "The processing resulted in an internal error.", reason="internal")


def service_unavailable() -> AzureError:
    return AzureError(503, "ServiceUnavailable", "The service is unavailable.", reason="unavailable")


def resource_not_found() -> GatewayError:
    return GatewayError(404, "Resource not found", spaced=True, reason="not_found")


def _access_denied(realm: str, reason: str, message: str) -> GatewayError:
    # APIM's 401s: compact bodies (the recording is 224 bytes) and a challenge naming the key header.
    challenge = f'AzureApiManagementKey realm="{realm}",name="Ocp-Apim-Subscription-Key",type="header"'
    return GatewayError(401, message, spaced=False, reason=reason, headers={"WWW-Authenticate": challenge})


def invalid_key(realm: str) -> GatewayError:
    return _access_denied(
        realm,
        "invalid_key",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
        "for an active subscription and use a correct regional API endpoint for your resource.",
    )


def missing_key(realm: str) -> GatewayError:
    return _access_denied(
        realm,
        "missing_key",
        "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
    )


def rate_limited(retry_after_s: int) -> GatewayError:
    return GatewayError(
        429,
        "Requests to the Segment Operation under Computer Vision API have exceeded the capacity of this service. "
        f"Please retry after {retry_after_s} second{'s' if retry_after_s != 1 else ''}.",
        spaced=True,
        reason="rate_limited",
        headers={"Retry-After": str(retry_after_s)},
    )


def from_pipeline(error: pipeline.PipelineError) -> AzureError:
    """The pipeline's refusal as Azure answers it."""
    match error:
        case pipeline.UnknownModel(available=available):
            return invalid_model(available)
        case pipeline.SceneUnavailable():
            return scene_unavailable()
        case pipeline.ImageTooLarge(limit=limit):
            return invalid_image_size(limit)
        case pipeline.NotAnImage():
            return invalid_image_format()
        case pipeline.ImageDimensions(minimum=minimum, maximum=maximum):
            return invalid_image_dimension(minimum, maximum)
        case pipeline.ImageUrlUnreachable():
            return url_not_accessible()
        case pipeline.QueueFull(retry_after_s=retry_after_s):
            return rate_limited(retry_after_s)
        case pipeline.ShuttingDown():
            return service_unavailable()
    return internal_error()
