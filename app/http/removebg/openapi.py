"""The remove.bg paths of /openapi.json: the operations of remove.bg's v1.0 API as this service answers them."""

from __future__ import annotations

from typing import Any

from app.http.removebg.options import CHANNELS, FORMATS, SHADOW_METHODS, SIZE_PIXELS, TYPE_LEVELS, TYPES

_STRING = {"type": "string"}
_BOOLEAN_TEXT = {"type": "string", "enum": ["true", "false"]}
_ERRORS = {"$ref": "#/components/schemas/RemoveBgErrors"}
_ERROR_RESPONSE = {"content": {"application/json": {"schema": _ERRORS}}}
_SERVERS = [{"url": "/"}]  # the document's default server is Azure's /computervision
_SECURITY = [{"RemoveBgApiKey": []}]


def _parameters(with_files: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "image_file_b64": {**_STRING, "description": "The image, base64-encoded (one image source only)."},
        "image_url": {**_STRING, "description": "The image's URL, fetched by the service (one image source only)."},
        "size": {"type": "string", "enum": list(SIZE_PIXELS), "default": "preview"},
        "type": {"type": "string", "enum": list(TYPES), "default": "auto"},
        "type_level": {"type": "string", "enum": list(TYPE_LEVELS), "default": "1"},
        "format": {"type": "string", "enum": list(FORMATS), "default": "auto"},
        "roi": {**_STRING, "default": "0% 0% 100% 100%", "description": "x1 y1 x2 y2, each in px or %."},
        "crop": _BOOLEAN_TEXT,
        "crop_margin": {**_STRING, "default": "0", "description": "1, 2 or 4 values, each in px or %."},
        "scale": {**_STRING, "default": "original", "description": "original, or 10% to 100%."},
        "position": {**_STRING, "default": "original", "description": "original, center, or one or two values of 0% to 100%."},
        "channels": {"type": "string", "enum": list(CHANNELS), "default": "rgba"},
        "add_shadow": {**_BOOLEAN_TEXT, "description": "Accepted; no shadow is added here."},
        "semitransparency": {**_BOOLEAN_TEXT, "description": "Accepted; the matte is the same either way here."},
        "shadow_method": {"type": "string", "enum": list(SHADOW_METHODS), "description": "Accepted; no effect here."},
        "bg_color": {**_STRING, "description": "Hex (3, 4, 6 or 8 digits) or a colour name."},
        "bg_image_url": {**_STRING, "description": "A background image's URL."},
    }
    if with_files:
        properties["image_file"] = {"type": "string", "format": "binary"}
        properties["bg_image_file"] = {"type": "string", "format": "binary"}
        # No additionalProperties here: schemathesis cannot check a generated form holding files against it.
        return {"type": "object", "properties": properties}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def paths() -> dict[str, Any]:
    return {
        "/v1.0/removebg": {
            "servers": _SERVERS,
            "post": {
                "operationId": "RemoveBgRemoveBackground",
                "summary": "remove.bg v1.0: remove the background of an image",
                "security": _SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": _parameters(with_files=True)},
                        "application/x-www-form-urlencoded": {"schema": _parameters(with_files=False)},
                        "application/json": {"schema": _parameters(with_files=False)},
                    },
                },
                "responses": {
                    "200": {
                        "description": "The result: an image, a ZIP (color.jpg and alpha.png), or JSON with Accept: application/json.",
                        "headers": {
                            name: {"schema": {"type": "integer"}}
                            for name in ("X-Width", "X-Height", "X-Foreground-Top", "X-Foreground-Left", "X-Foreground-Width", "X-Foreground-Height")
                        }
                        | {
                            "X-Credits-Charged": {"schema": {"type": "number"}},
                            "X-Type": {"description": "person, when a person is detected; absent otherwise.", "schema": _STRING},
                        },
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            "image/webp": {"schema": {"type": "string", "format": "binary"}},
                            "application/zip": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": {"$ref": "#/components/schemas/RemoveBgResult"}},
                        },
                    },
                    "400": {"description": "Invalid parameters or an unprocessable input.", **_ERROR_RESPONSE},
                    "403": {"description": "Authentication failed.", **_ERROR_RESPONSE},
                    "408": {"description": "The body did not arrive in time.", **_ERROR_RESPONSE},
                    "429": {"description": "The queue is full; see Retry-After.", **_ERROR_RESPONSE},
                    "500": {"description": "The processing failed.", **_ERROR_RESPONSE},
                    "503": {"description": "The service is shutting down.", **_ERROR_RESPONSE},
                },
            },
        },
        "/v1.0/account": {
            "servers": _SERVERS,
            "get": {
                "operationId": "RemoveBgAccount",
                "summary": "remove.bg v1.0: credits (none are ever charged) and free calls",
                "security": _SECURITY,
                "responses": {
                    "200": {"description": "The account.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemoveBgAccount"}}}},
                    "403": {"description": "Authentication failed.", **_ERROR_RESPONSE},
                },
            },
        },
    }


def components() -> dict[str, Any]:
    number = {"type": "number"}
    return {
        "securitySchemes": {"RemoveBgApiKey": {"type": "apiKey", "name": "X-Api-Key", "in": "header"}},
        "schemas": {
            "RemoveBgErrors": {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["title", "code"],
                            "properties": {"title": _STRING, "code": _STRING, "detail": _STRING},
                        },
                    }
                },
            },
            "RemoveBgResult": {
                "type": "object",
                "properties": {
                    "data": {
                        "type": "object",
                        "properties": {"result_b64": _STRING}
                        | {f"foreground_{name}": {"type": "integer"} for name in ("top", "left", "width", "height")},
                    }
                },
            },
            "RemoveBgAccount": {
                "type": "object",
                "properties": {
                    "data": {
                        "type": "object",
                        "properties": {
                            "attributes": {
                                "type": "object",
                                "properties": {
                                    "credits": {"type": "object", "properties": {k: number for k in ("total", "subscription", "payg", "enterprise")}},
                                    "api": {"type": "object", "properties": {"free_calls": {"type": "integer"}, "sizes": _STRING}},
                                },
                            }
                        },
                    }
                },
            },
        },
    }


def document() -> dict[str, Any]:
    return {"paths": paths(), "components": components()}
