"""Recording jobs: what each routine's logic read and did, kept as JSON to replay a job later.

``Runtime(record=True)`` (or ``record=RecordSettings(...)``) keeps, for each of the most
recent jobs, one *step* per run of a routine's logic: the slot data and policy message it
was given, the job's data and metadata as it saw them, every WorkerState call it made with
the value returned (or the error raised), what it emitted, what it wrote to the job, and the
exception it raised, with its traceback. ``Runtime.recording(job_id)`` exports one job's
recording as a JSON-safe dict; ``actorflow.testing.replay`` runs the job again from it.

Values are kept as JSON: ``None``, booleans, numbers, strings, lists and dicts with string
keys are kept as they are; tuples, sets, bytes, non-finite floats and dicts with other keys
are tagged so they come back as the same type on replay. Anything else (an object of your own
class, a function) is kept as its type and ``repr`` only: it cannot be given back on replay,
where it arrives as an :class:`Unreplayable` placeholder, and the recording lists where such
values are (``"unreplayable"``), so a replay that needs one says so instead of silently
running with something else.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMAT",
    "RecordSettings",
    "Unreplayable",
    "decode_value",
    "encode_value",
    "unreplayable_paths",
]

FORMAT = "actorflow-recording/1"  # the "format" field of every exported recording
TAG = "__actorflow__"  # the key of a tagged value: {"__actorflow__": kind, "value": ...}
MAX_REPR = 200  # characters of an unreplayable value's repr kept


@dataclass(frozen=True)
class RecordSettings:
    """How much a runtime records (``Runtime(record=RecordSettings(...))``).

    Args:
        max_jobs: how many jobs' recordings are kept; the oldest job's goes first.
        max_steps: how many steps one job's recording keeps; later ones are counted in the
            recording's ``"steps_dropped"`` and not kept.
    """

    max_jobs: int = 1000
    max_steps: int = 200

    def __post_init__(self) -> None:
        for name in ("max_jobs", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RecordSettings.{name} must be a positive int, got {value!r}")


class Unreplayable:
    """Stands in, on replay, for a recorded value that JSON could not hold (its type and
    ``repr`` were kept). Comparing it with anything but an equal placeholder is False."""

    __slots__ = ("repr", "type")

    def __init__(self, type_name: str, text: str) -> None:
        self.type = type_name
        self.repr = text

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Unreplayable) and other.type == self.type and other.repr == self.repr
        )

    def __hash__(self) -> int:
        return hash((self.type, self.repr))

    def __repr__(self) -> str:
        return f"Unreplayable({self.type}: {self.repr})"


def _tagged(kind: str, value: Any) -> dict[str, Any]:
    return {TAG: kind, "value": value}


def encode_value(value: Any) -> Any:
    """``value`` as JSON-safe data (see the module's docstring for what is kept how)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if type(value) is int else _opaque(value)
    if isinstance(value, float):
        if type(value) is not float:
            return _opaque(value)
        return value if math.isfinite(value) else _tagged("float", repr(value))
    if type(value) is list:
        return [encode_value(item) for item in value]
    if type(value) is dict:
        if all(type(key) is str for key in value) and TAG not in value:
            return {key: encode_value(item) for key, item in value.items()}
        return _tagged("dict", [[encode_value(k), encode_value(v)] for k, v in value.items()])
    if type(value) is tuple:
        return _tagged("tuple", [encode_value(item) for item in value])
    if type(value) in (set, frozenset):
        items = sorted((encode_value(item) for item in value), key=repr)
        return _tagged(type(value).__name__, items)
    if type(value) is bytes:
        return _tagged("bytes", base64.b64encode(value).decode("ascii"))
    if isinstance(value, Mapping):  # a read-only view (MappingProxyType), a job's data
        return encode_value(dict(value))
    if type(value) is Unreplayable:  # a replay passing on what it was given: as recorded
        return _tagged("unreplayable", {"type": value.type, "repr": value.repr})
    return _opaque(value)


def _opaque(value: Any) -> dict[str, Any]:
    kind = type(value)
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the handling it records
        text = f"<repr failed: {type(exc).__name__}>"
    if len(text) > MAX_REPR:
        text = text[: MAX_REPR - 3] + "..."
    return _tagged("unreplayable", {"type": f"{kind.__module__}.{kind.__qualname__}", "repr": text})


def decode_value(data: Any) -> Any:
    """The value :func:`encode_value` encoded (an :class:`Unreplayable` where it could not)."""
    if isinstance(data, list):
        return [decode_value(item) for item in data]
    if not isinstance(data, dict):
        return data
    kind = data.get(TAG)
    if kind is None:
        return {key: decode_value(item) for key, item in data.items()}
    value = data["value"]
    if kind == "tuple":
        return tuple(decode_value(item) for item in value)
    if kind == "set":
        return {decode_value(item) for item in value}
    if kind == "frozenset":
        return frozenset(decode_value(item) for item in value)
    if kind == "dict":
        return {decode_value(k): decode_value(v) for k, v in value}
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "float":
        return float(value)
    if kind == "unreplayable":
        return Unreplayable(value["type"], value["repr"])
    raise ValueError(f"unknown tagged value in a recording: {kind!r}")


def unreplayable_paths(data: Any, path: str = "") -> list[str]:
    """Where in encoded ``data`` a value could not be kept (JSON-path-like strings)."""
    found: list[str] = []
    if isinstance(data, list):
        for index, item in enumerate(data):
            found += unreplayable_paths(item, f"{path}[{index}]")
    elif isinstance(data, dict):
        if data.get(TAG) == "unreplayable":
            found.append(f"{path} ({data['value']['type']})")
        elif TAG in data:
            found += unreplayable_paths(data["value"], path)
        else:
            for key, item in data.items():
                found += unreplayable_paths(item, f"{path}.{key}" if path else key)
    return found
