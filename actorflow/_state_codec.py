"""Encoding of WorkerState values (internal).

The worker's serializer (``Runtime(state_serializer=...)``) is one of the store serializers:
strict JSON by default (what JSON cannot hold faithfully is refused, never silently changed),
or pickle/cloudpickle as an explicit opt-in for trusted deployments.
"""

from __future__ import annotations

import math
from typing import Any

from actorflow.errors import StateSerializationError
from actorflow.store.serializers import (
    INT64_MIN,
    UINT64_MAX,
    Serializer,
    find_unencodable,
    get_serializer,
)

__all__ = ["StateCodec"]


class StateCodec:
    """Encode/decode state values with one serializer; errors name the key path and type."""

    def __init__(self, serializer: str | Serializer = "json") -> None:
        self.serializer = get_serializer(serializer)
        self._dumps = self.serializer.dumps
        self._loads = self.serializer.loads
        self._dumps_valid = getattr(self.serializer, "dumps_valid", None)

    def encode(self, key: str, value: Any) -> bytes:
        try:
            return self._dumps(value)
        except Exception as exc:
            found = find_unencodable(value, self.serializer)
            where = key if found is None else f"{key}{found[0]}"
            kind = (type(value) if found is None else found[1]).__qualname__
            if "keys must be str" in str(exc):
                raise StateSerializationError(
                    f"worker state {where!r} is a dict key of type {kind}; JSON object keys "
                    "must be str (nothing is converted silently)"
                ) from exc
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            raise StateSerializationError(
                f"worker state {where!r} holds {article} {kind}, which the "
                f"{self.serializer.name.upper()} serializer cannot encode (keep connections, "
                "locks, files and functions in the routine, see on_start)"
            ) from exc

    @property
    def trusts_numbers(self) -> bool:
        """Whether a dict this codec decoded stays encodable after :meth:`number_fits` let a
        field be set to a number (strict JSON: it does, and encodes without a re-check)."""
        return self._dumps_valid is not None

    def number_fits(self, field: Any, value: Any) -> bool:
        """Whether ``value`` under ``field`` can be stored in a dict this codec decoded
        without checking the rest again (a str field, a 64-bit int or a finite float)."""
        return type(field) is str and (
            (type(value) is int and INT64_MIN <= value <= UINT64_MAX)
            or (type(value) is float and math.isfinite(value))
        )

    def encode_number_set(self, key: str, state: dict[str, Any], field: Any) -> bytes:
        """Encode ``state`` (a dict decoded from this codec) whose ``field`` was just set to a
        number: with strict JSON only that number and the field's name need checking."""
        if self._dumps_valid is not None and self.number_fits(field, state[field]):
            blob: bytes = self._dumps_valid(state)
            return blob
        return self.encode(key, state)

    def encode_trusted(self, value: Any) -> bytes:
        """Encode a value :meth:`trusts_numbers` vouches for (see :meth:`number_fits`)."""
        assert self._dumps_valid is not None
        blob: bytes = self._dumps_valid(value)
        return blob

    def decode(self, blob: bytes) -> Any:
        """A fresh copy of the stored value."""
        return self._loads(blob)
