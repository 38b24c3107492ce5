"""Azure's body forms: the image raw, a JSON ``{"url": …}``, or a multipart part, within Azure's limits."""

from __future__ import annotations

import ast
import json

from starlette.datastructures import UploadFile
from starlette.requests import Request

from app.http.azure import errors
from app.http.body import MAX_IMAGE_BYTES, replayed

MAX_JSON_BYTES = 64 * 1024


def body_kind(content_type: str | None) -> str:
    """``raw``, ``json`` or ``multipart``; anything else is Azure's unsupported-content-type 400."""
    if not content_type:
        return "raw"  # clients that send bare bytes without a type
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/octet-stream" or media.startswith("image/"):
        return "raw"
    if media == "application/json":
        return "json"
    if media == "multipart/form-data":
        return "multipart"
    raise errors.unsupported_content_type(content_type.split(";", 1)[0].strip())


def parse_url_body(body: bytes) -> str:
    """The ``url`` of a JSON body; lenient as Azure's parser was (single quotes, any case of the key)."""
    try:
        text = body.decode("utf-8-sig")
        try:
            document = json.loads(text)
        except ValueError:
            document = ast.literal_eval(text)  # single-quoted JSON, as Azure's own curl sample sends
    except (ValueError, SyntaxError, RecursionError, MemoryError, UnicodeDecodeError, TypeError):
        raise errors.invalid_json_body() from None
    if isinstance(document, dict):
        for key, value in document.items():
            if isinstance(key, str) and key.lower() == "url" and isinstance(value, str) and value.strip():
                return value.strip()
    raise errors.invalid_json_body()


async def multipart_image(request: Request, body: bytes) -> bytes:
    """The first file part (or, failing that, the first field) of an already-read multipart body."""
    try:
        form = await replayed(request, body).form(max_files=8, max_fields=32)
    except Exception:
        raise errors.invalid_image_format() from None
    try:
        values = [value for _, value in form.multi_items()]
        upload = next((v for v in values if isinstance(v, UploadFile)), None)
        if upload is not None:
            data = await upload.read(MAX_IMAGE_BYTES + 1)
        elif values:
            data = str(values[0]).encode("latin-1", "replace")
        else:
            data = b""
    finally:
        await form.close()
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise errors.invalid_image_size(MAX_IMAGE_BYTES)
    return data
