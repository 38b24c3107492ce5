"""rembg's server API in the OpenAPI document: its two operations as rembg's FastAPI app declares them (names,
defaults, bounds), served from the root, with this service's key schemes and its FastAPI-shaped errors."""

from __future__ import annotations

from typing import Any

from app.http.rembg.routes import KEY_HEADER, KEY_QUERY, PATH

_FLAG = {"type": "boolean", "default": False}
_COMMON: dict[str, dict[str, Any]] = {
    "model": {
        "type": "string",
        "description": (
            "A network the server has loaded (GET /health/ready lists them under \"models\"), by rembg's names "
            "(isnet-general-use, u2net, u2netp, ...). Absent: the server's default (BGR_MODEL), not rembg's u2net. "
            "Another name is a 422 listing the loaded ones."
        ),
    },
    "a": {"type": "boolean", "description": "Alpha matting: the matting stage re-solves the matte along its edge at the photo's size, and the soft edge gets the foreground's estimated colours; false: neither. Absent: the server's BGR_REFINE and BGR_DECONTAMINATE."},
    "af": {"type": "integer", "minimum": 0, "maximum": 255, "default": 240, "description": "Alpha matting's foreground threshold: checked, not used."},
    "ab": {"type": "integer", "minimum": 0, "maximum": 255, "default": 10, "description": "Alpha matting's background threshold: checked, not used."},
    "ae": {"type": "integer", "minimum": 0, "default": 10, "description": "Alpha matting's erosion size: checked, not used."},
    "om": {**_FLAG, "description": "Only the mask: the matte as an 8-bit grey PNG at the input's size."},
    "ppm": {**_FLAG, "description": "Post-process the mask: checked, not used."},
}
_QUERY_ONLY: dict[str, dict[str, Any]] = {
    "bgc": {
        "type": "string",
        "description": "Background colour r,g,b,a (0-255 each; r,g,b is opaque), or hex (3, 4, 6 or 8 digits) or a colour name. Not applied to a mask.",
    },
    "extras": {"type": "string", "description": "rembg's extra session parameters as JSON: accepted, not used."},
}
_SECURITY = [{"RembgApiKey": []}, {"RembgApiKeyQuery": []}]
_ERROR = {"$ref": "#/components/schemas/RembgError"}


def _query(schemas: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in schemas.items()]


def _responses(image_description: str) -> dict[str, Any]:
    return {
        "200": {"description": image_description, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        "default": {"description": "An error, as FastAPI words it: a 422 lists each bad parameter.", "content": {"application/json": {"schema": _ERROR}}},
    }


def paths() -> dict[str, Any]:
    image = "The cut-out as an RGBA PNG (over bgc when given), or with om the matte as a grey PNG."
    return {
        PATH: {
            "servers": [{"url": "/"}],  # rembg's server has no base path
            "get": {
                "operationId": "RembgRemoveFromUrl",
                "tags": ["rembg"],
                "summary": "Remove from URL (rembg's server API)",
                "description": "Removes the background from the image at url, fetched with this service's SSRF rules.",
                "security": _SECURITY,
                "parameters": [
                    {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}, "description": "URL of the image."},
                    *_query({**_COMMON, **_QUERY_ONLY}),
                ],
                "responses": _responses(image),
            },
            "post": {
                "operationId": "RembgRemoveFromFile",
                "tags": ["rembg"],
                "summary": "Remove from a file (rembg's server API)",
                "description": (
                    "Removes the background from the multipart part file. The options come as form fields, bgc and extras "
                    "in the query, as rembg reads them; an option missing from the form is also read from the query."
                ),
                "security": _SECURITY,
                "parameters": _query(_QUERY_ONLY),
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}, **_COMMON},
                                "required": ["file"],
                            }
                        }
                    },
                },
                "responses": _responses(image),
            },
        }
    }


def components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "RembgApiKey": {"type": "apiKey", "name": KEY_HEADER, "in": "header", "description": "rembg's API, when the service has keys."},
            "RembgApiKeyQuery": {"type": "apiKey", "name": KEY_QUERY, "in": "query", "description": "The same, for clients that only build URLs."},
        },
        "schemas": {
            "RembgError": {
                "type": "object",
                "properties": {
                    "detail": {
                        "oneOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "type": {"type": "string"},
                                        "loc": {"type": "array", "items": {"type": "string"}},
                                        "msg": {"type": "string"},
                                        "input": {},
                                        "ctx": {"type": "object"},
                                    },
                                    "required": ["type", "loc", "msg", "input"],
                                },
                            },
                        ]
                    }
                },
                "required": ["detail"],
            }
        },
    }


def document() -> dict[str, Any]:
    return {"paths": paths(), "components": components()}
