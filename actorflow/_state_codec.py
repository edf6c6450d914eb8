"""Encoding of WorkerState values (internal): JSON by default, orjson when installed."""

from __future__ import annotations

import json
from typing import Any

from actorflow.errors import StateSerializationError

try:  # pragma: no cover - depends on the environment
    import orjson

    _OPTIONS = orjson.OPT_NON_STR_KEYS

    def _dumps(value: Any) -> bytes:
        result: bytes = orjson.dumps(value, option=_OPTIONS)
        return result

    def _loads(blob: bytes) -> Any:
        return orjson.loads(blob)
except ImportError:  # pragma: no cover

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    def _loads(blob: bytes) -> Any:
        return json.loads(blob)


__all__ = ["decode", "encode", "find_unencodable"]


def encode(key: str, value: Any) -> bytes:
    """Encode a state value; ``StateSerializationError`` names the key path and type."""
    try:
        return _dumps(value)
    except (TypeError, ValueError, OverflowError) as exc:
        found = find_unencodable(value)
        where = key if found is None else f"{key}{found[0]}"
        kind = type(value).__name__ if found is None else found[1].__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise StateSerializationError(
            f"worker state {where!r} holds {article} {kind}, which the JSON serializer "
            "cannot encode "
            "(keep connections, locks, files and functions in the routine, see on_start)"
        ) from exc


def decode(blob: bytes) -> Any:
    """Decode a state value (a fresh object every time)."""
    return _loads(blob)


_PLAIN = (str, int, float, bool, type(None))


def find_unencodable(value: Any, path: str = "") -> tuple[str, type] | None:
    """Path (like ``['db']['conn']``) and type of the first part JSON cannot encode."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, _PLAIN):
                return (f"{path}[{k!r}]", type(k))
            found = find_unencodable(v, f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = find_unencodable(v, f"{path}[{i}]")
            if found:
                return found
        return None
    return (path, type(value))
