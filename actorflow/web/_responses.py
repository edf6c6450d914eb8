"""JSON responses that never fail on a value JSON cannot hold (internal)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["JSON_TYPE", "error_response", "json_body", "json_response"]

JSON_TYPE = "application/json"


def _fallback(value: Any) -> Any:
    """A value JSON has no form for (a datetime, a set, an object in the job's data)."""
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value) if not hasattr(value, "isoformat") else value.isoformat()


def json_body(payload: Any) -> bytes:
    """``payload`` as UTF-8 JSON; values JSON cannot hold are written as text."""
    return json.dumps(payload, ensure_ascii=False, default=_fallback).encode("utf-8")


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response (``application/json``, UTF-8)."""
    return Response(json_body(payload), status, dict(headers or {}), media_type=JSON_TYPE)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status, headers)
