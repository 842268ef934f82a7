"""What the OpenAPI schema (``/openapi.json``, ``/docs``) says the service takes and
answers: the request bodies of ``POST /v1/predict``, its predictions and the
``{"error": "..."}`` body of every error status. The routes read their requests
themselves (no FastAPI models), so it is written out here; the integration suite fuzzes
the server against it (Schemathesis)."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "one line naming the problem"}},
    "required": ["error"],
}

ERROR_STATUSES = {
    400: "Bad request: not an image, malformed multipart or JSON body, unexpected field",
    408: "The request (headers and body) did not arrive in full within the request timeout",
    413: "Too large: the body, the number of images, or an image's pixels (checked from its header)",
    415: "The body is neither multipart/form-data nor application/json",
    500: "Scoring failed (a bug: the server logs it)",
    503: "Not ready yet, the scoring process stopped, or too many connections",
}

NUMBER = {"type": ["number", "null"]}  # null: a score orjson cannot write (NaN, infinity)
NUMBERS = {"type": "object", "additionalProperties": NUMBER}

PREDICTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "label": {"type": "string", "description": 'a class name or "unknown"'},
        "class_index": {"type": "integer", "description": "-1: unknown"},
        "known": {"type": "boolean"},
        "decision": {
            "type": "object",
            "properties": {
                "scorer": {"type": "string"},
                "score": NUMBER,
                "threshold": NUMBER,
                "margin": NUMBER,
                "decided_by": {"type": "string"},
                "member_score": NUMBER,
                "member_threshold": NUMBER,
            },
            "required": ["scorer", "score", "threshold", "margin"],
        },
        "scores": NUMBERS,
        "thresholds": NUMBERS,
        "margins": NUMBERS,
        "decided_by": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "for each fusion among the scorers, the member that decided; absent without one",
        },
    },
    "required": ["name", "label", "class_index", "known", "decision", "scores", "thresholds", "margins"],
}

PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PNG, JPEG, GIF, BMP, TIFF or WebP images",
                        }
                    },
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                        "names": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["images"],
                    "additionalProperties": False,
                }
            },
        },
    },
    "responses": {
        "200": {
            "description": "One prediction per image, in order",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"predictions": {"type": "array", "items": PREDICTION_SCHEMA}},
                        "required": ["predictions"],
                    }
                }
            },
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for the error ``statuses`` of a route, each with the
    ``{"error": "..."}`` body. 503 is possible on every route: past ``max_connections``
    uvicorn itself answers it, in plain text."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 503}):
        content: dict[str, Any] = {"application/json": {"schema": ERROR_SCHEMA}}
        if status == 503:
            content["text/plain"] = {"schema": {"type": "string"}}
        out[status] = {"description": ERROR_STATUSES[status], "content": content}
    return out
