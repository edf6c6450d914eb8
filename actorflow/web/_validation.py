"""Request bodies: read with a size limit, parsed as JSON, checked field by field (internal).

Nothing from a request is unpickled: a body is UTF-8 JSON or it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from actorflow.web._problems import ApiError

__all__ = ["DEFAULT_MAX_BODY", "Submission", "read_json", "submission"]

DEFAULT_MAX_BODY = 1024 * 1024
"""Bytes a request body may have by default (``create_app(..., max_body=...)``)."""

_FIELDS = {"routine", "slot", "data", "metadata"}


@dataclass(frozen=True)
class Submission:
    """A checked ``POST /api/flows/{flow_id}/jobs`` body."""

    routine: str
    slot: str
    data: Any
    metadata: dict[str, Any] | None


async def _read(request: Request, limit: int) -> bytes:
    """The body, read piece by piece: ``413`` as soon as it is longer than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {declared!r}") from None
        if length > limit:
            raise ApiError(413, f"the body has {length} bytes; at most {limit} are accepted")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is longer than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> Any:
    """The request's body as JSON (``415`` for another content type, ``400`` if it is not
    JSON, ``413`` if longer than ``limit`` bytes)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, f"the body must be application/json, not {kind!r}")
    body = await _read(request, limit)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(422, f"{name!r} must be a non-empty string, got {json.dumps(value)}")
    return value


def submission(body: Any) -> Submission:
    """Check a job submission: ``routine`` and ``slot`` (non-empty strings), ``data`` (any
    JSON, default null) and ``metadata`` (an object, optional); ``422`` otherwise."""
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown} (allowed: {sorted(_FIELDS)})")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(422, f"'metadata' must be an object, got {type(metadata).__name__}")
    return Submission(_text(body, "routine"), _text(body, "slot"), body.get("data"), metadata)
