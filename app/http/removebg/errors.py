"""remove.bg's error envelope, ``{"errors":[{"title","code","detail"?}]}``, its codes and statuses.

Titles of the codes in remove.bg's OpenAPI are its own words; codes it does not document (an unknown parameter, an
unreadable body, the service's own 5xx) follow its style and are marked so in the README.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from app import errors as pipeline

MAX_ECHOED_URL = 200  # a URL quoted back in a title is cut to this many characters


class RemoveBgError(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.reason = code  # the metrics label

    def body(self) -> bytes:
        error = {"title": self.title, "code": self.code}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}, ensure_ascii=False).encode()

    def response(self) -> Response:
        return Response(self.body(), self.status, headers=self.headers, media_type="application/json")


def bad_request(code: str, title: str, detail: str | None = None) -> RemoveBgError:
    return RemoveBgError(400, code, title, detail)


def invalid_value(name: str) -> RemoveBgError:
    """A parameter's value it does not take: remove.bg's ``invalid_<name>`` codes."""
    if name in ("size", "channels"):
        return bad_request(f"invalid_{name}", f"Invalid value for parameter '{name}'")
    if name in ("bg_image_url", "image_url"):
        return bad_request(f"invalid_{name}", f"Invalid {name}: Please provide a valid URL.")
    return bad_request(f"invalid_{name}", f"Invalid {name} parameter given")


def unknown_parameter(name: str) -> RemoveBgError:
    return bad_request("unknown_parameter", f"Unknown parameter given: {name[:100]}")


def invalid_body(reason: str) -> RemoveBgError:
    return bad_request("invalid_request_body", "The request body could not be read", reason)


def missing_source() -> RemoveBgError:
    return bad_request(
        "missing_source", "No image given", "Please provide the source image in the image_url, image_file or image_file_b64 parameter."
    )


def multiple_sources() -> RemoveBgError:
    return bad_request(
        "multiple_sources", "Multiple image sources given: Please provide either the image_url, image_file or image_file_b64 parameter."
    )


def multiple_bg_sources() -> RemoveBgError:
    return bad_request(
        "multiple_bg_sources",
        "Multiple background sources given: Please provide either the bg_color, the bg_image_url or the bg_image_file parameter.",
    )


def file_too_large(limit: int, what: str = "File") -> RemoveBgError:
    return bad_request("file_too_large", "File too large", f"{what} exceeds limit of {limit // (1024 * 1024)}MB")


def failed_to_read_image(detail: str | None = None) -> RemoveBgError:
    return bad_request("failed_to_read_image", "There was an error reading the image.", detail)


def invalid_file_type(received: str) -> RemoveBgError:
    return bad_request("invalid_file_type", "Invalid file type", f"Expected jpg/png/webp (or gif, bmp, tiff, ico), received {received}")


def invalid_dimensions(detail: str) -> RemoveBgError:
    return bad_request("invalid_dimensions", "Failed to read image dimensions", detail)


def resolution_too_high(detail: str) -> RemoveBgError:
    return bad_request("resolution_too_high", "Image resolution too high", detail)


def failed_image_download(url: str) -> RemoveBgError:
    return bad_request("failed_image_download", f"Failed to download image from given image_url: {url[:MAX_ECHOED_URL]}")


def failed_bg_download(url: str) -> RemoveBgError:
    return bad_request("failed_bg_download", f"Failed to download background image from given image_url: {url[:MAX_ECHOED_URL]}")


def roi_exceeds_bounds() -> RemoveBgError:
    return bad_request("roi_exceeds_bounds", "ROI exceeds image bounds", "The given roi parameter defines a region that exceeds the image bounds")


def roi_region_empty() -> RemoveBgError:
    return bad_request("roi_region_empty", "ROI region is empty", "The given roi parameter defines an empty region")


def unknown_foreground() -> RemoveBgError:
    return bad_request(
        "unknown_foreground", "Could not identify foreground in image. For details and recommendations see https://www.remove.bg/supported-images."
    )


def missing_key() -> RemoveBgError:
    return RemoveBgError(403, "auth_failed", "Missing API Key")


def invalid_key() -> RemoveBgError:
    return RemoveBgError(403, "auth_failed", "API Key invalid")


def rate_limited(retry_after_s: int) -> RemoveBgError:
    return RemoveBgError(429, "rate_limit_exceeded", "Rate limit exceeded", headers={"Retry-After": str(retry_after_s)})


def body_timeout() -> RemoveBgError:
    return RemoveBgError(408, "request_timeout", "The request body was not received in time.")


def unavailable() -> RemoveBgError:
    return RemoveBgError(503, "service_unavailable", "The service is unavailable.", "It is shutting down; retry on another replica.")


def unknown_operation(status: int) -> RemoveBgError:
    """An unknown path under /v1.0/ (404), or a method its operation lacks (405)."""
    if status == 405:
        return RemoveBgError(405, "method_not_allowed", "Method not allowed")
    return RemoveBgError(404, "not_found", "Not found")


def internal_error() -> RemoveBgError:
    return RemoveBgError(500, "internal_error", "The processing resulted in an internal error.")


def from_pipeline(error: pipeline.PipelineError) -> RemoveBgError:
    """The pipeline's refusal as remove.bg answers it (an unreadable image is told apart by the caller, which has the bytes)."""
    match error:
        case pipeline.ImageTooLarge(limit=limit):
            return file_too_large(limit)
        case pipeline.NotAnImage():
            return failed_to_read_image()
        case pipeline.ImageDimensions(minimum=minimum, maximum=maximum):
            return invalid_dimensions(f"Each side of the image must be {minimum} to {maximum} pixels.")
        case pipeline.ImageUrlUnreachable():
            return bad_request("failed_image_download", "Failed to download image from given image_url")
        case pipeline.QueueFull(retry_after_s=retry_after_s):
            return rate_limited(retry_after_s)
        case pipeline.ShuttingDown():
            return unavailable()
        case pipeline.SceneUnavailable() | pipeline.UnknownModel():
            return bad_request(error.reason, str(error) or "Not available on this server")
    return internal_error()
