"""Azure's part of the OpenAPI document: the segment operation as Azure's own spec describes it.

Azure's spec (azure-rest-api-specs, ImageAnalysis 2023-04-01-preview) is Swagger 2.0;
this is the same operation in OpenAPI 3.0: path, parameters, enum names, responses
and the error schema, plus the JSON and multipart bodies the service also accepts.
"""

from __future__ import annotations

from typing import Any

from app import __version__
from app.http.azure.routes import SUPPORTED_API_VERSIONS

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ERROR_REF = {"$ref": "#/components/schemas/Azure.Core.Foundations.ErrorResponse"}


def document() -> dict[str, Any]:
    """Azure's part of /openapi.json, and its head: the title, the default server (/computervision) and security."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ImageAnalysis Service (segment)",
            "version": max(SUPPORTED_API_VERSIONS),
            "description": f"Self-hosted, Azure-compatible background removal, service version {__version__}.",
        },
        "servers": [{"url": "/computervision"}],
        "security": [{"ApiKeyAuth": []}],
        "paths": {
            "/imageanalysis:segment": {
                "post": {
                    "operationId": "SegmentFromStream",
                    "description": (
                        "Segment the input image. An image stream of content type 'image/png' is returned, where the pixel "
                        "values depend on the analysis mode. The returned image has the same dimensions as the input image "
                        "for modes: foregroundMatting. The returned image has the same aspect ratio and same dimensions as "
                        "the input image up to a limit of 16 megapixels for modes: backgroundRemoval."
                    ),
                    "parameters": [
                        {"$ref": "#/components/parameters/Azure.Core.Foundations.ApiVersionParameter"},
                        {"$ref": "#/components/parameters/SharedSegmentQuery"},
                        {"$ref": "#/components/parameters/SegmentTarget"},
                        {"$ref": "#/components/parameters/SegmentDecontaminate"},
                        {"$ref": "#/components/parameters/SegmentRefine"},
                        {"$ref": "#/components/parameters/SegmentModel"},
                    ],
                    "requestBody": {
                        "description": "The image to be analyzed",
                        "required": True,
                        "content": {
                            "application/octet-stream": _BINARY,
                            "image/*": _BINARY,
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"url": {"type": "string", "format": "uri"}},
                                    "required": ["url"],
                                }
                            },
                            "multipart/form-data": {
                                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The request has succeeded.",
                            "headers": {
                                "x-segment-target": {
                                    "description": "This service's own: what the image was taken for, subject or scene.",
                                    "schema": {"type": "string", "enum": ["subject", "scene"]},
                                },
                                "x-segment-measures": {
                                    "description": "This service's own: the measures an automatic decision was made from.",
                                    "schema": {"type": "string"},
                                },
                                "x-segment-refined": {
                                    "description": "This service's own: whether the matting stage re-solved the matte (refine).",
                                    "schema": {"type": "string", "enum": ["true", "false"]},
                                },
                            },
                            "content": {"image/png": _BINARY},
                        },
                        "default": {
                            "description": "An unexpected error response.",
                            "headers": {
                                "x-ms-error-code": {
                                    "description": "String error code indicating what went wrong.",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": {"application/json": {"schema": _ERROR_REF}},
                        },
                    },
                }
            }
        },
        "components": {
            "securitySchemes": {"ApiKeyAuth": {"type": "apiKey", "name": "Ocp-Apim-Subscription-Key", "in": "header"}},
            "parameters": {
                "Azure.Core.Foundations.ApiVersionParameter": {
                    "name": "api-version",
                    "in": "query",
                    "description": "The API version to use for this operation.",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                    "x-ms-parameter-location": "method",
                    "x-ms-client-name": "apiVersion",
                },
                "SharedSegmentQuery": {
                    "name": "mode",
                    "in": "query",
                    "description": "The type of segmentation to perform",
                    "required": True,
                    "schema": {"type": "string", "enum": ["backgroundRemoval", "foregroundMatting"]},
                    "x-ms-enum": {
                        "name": "segmentationMode",
                        "modelAsString": True,
                        "values": [
                            {"name": "backgroundRemoval", "value": "backgroundRemoval", "description": "Remove the background"},
                            {"name": "foregroundMatting", "value": "foregroundMatting", "description": "Matt the foreground"},
                        ],
                    },
                    "x-ms-parameter-location": "method",
                },
                "SegmentTarget": {
                    "name": "target",
                    "in": "query",
                    "description": (
                        "Not in Azure's API: take the image as a subject (the salient object is kept), a scene "
                        "(everything but the sky is kept), or decide per image (auto). Absent: the server's default."
                    ),
                    "required": False,
                    "schema": {"type": "string", "enum": ["auto", "subject", "scene"]},
                },
                "SegmentDecontaminate": {
                    "name": "decontaminate",
                    "in": "query",
                    "description": (
                        "Not in Azure's API: for backgroundRemoval, give the cut-out's semi-transparent pixels the "
                        "foreground's estimated colour instead of the photo's, so no trace of the old background "
                        "shows on a new one. Absent: the server's default (off unless the operator turns it on)."
                    ),
                    "required": False,
                    "schema": {"type": "boolean"},
                },
                "SegmentRefine": {
                    "name": "refine",
                    "in": "query",
                    "description": (
                        "Not in Azure's API: the matting stage, which re-solves a subject's matte along its edge (hair, "
                        "fur, veils) from the photo's own pixels at its own size: true, false, or auto (photos with more "
                        "pixels than the network's input whose matte has a real unsure band). A refined cut-out also gets the "
                        "foreground's colours in its soft edge unless decontaminate=false. Absent: the server's default "
                        "(BGR_REFINE). Anything else is a 400 InvalidRequest."
                    ),
                    "required": False,
                    "schema": {"type": "string", "enum": ["true", "false", "auto"]},
                },
                "SegmentModel": {
                    "name": "model",
                    "in": "query",
                    "description": (
                        "Not in Azure's API: the network to segment with, one of those the server loaded (BGR_MODELS; "
                        "GET /health/ready lists them under \"models\"). Absent or empty: the server's default (BGR_MODEL). "
                        "A name the server has not loaded is a 400 InvalidRequest naming the loaded ones."
                    ),
                    "required": False,
                    "schema": {"type": "string"},
                },
            },
            "schemas": {
                "Azure.Core.Foundations.Error": {
                    "type": "object",
                    "description": "The error object.",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "target": {"type": "string"},
                        "details": {"type": "array", "items": {"$ref": "#/components/schemas/Azure.Core.Foundations.Error"}},
                        "innererror": {"$ref": "#/components/schemas/Azure.Core.Foundations.InnerError"},
                    },
                    "required": ["code", "message"],
                },
                "Azure.Core.Foundations.ErrorResponse": {
                    "type": "object",
                    "description": "A response containing error details.",
                    "properties": {"error": {"$ref": "#/components/schemas/Azure.Core.Foundations.Error"}},
                    "required": ["error"],
                },
                "Azure.Core.Foundations.InnerError": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "innererror": {"$ref": "#/components/schemas/Azure.Core.Foundations.InnerError"},
                    },
                },
            },
        },
    }
