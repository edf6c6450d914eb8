"""Serializers: how a value becomes bytes in a store, and how to find what cannot.

Three serializers ship with actorflow:

``json`` (the default)
    Safe for untrusted data.  Accepts exactly ``None``, ``bool``, ``int`` (64-bit),
    finite ``float``, ``str``, ``list``, ``tuple`` (read back as ``list``) and
    ``dict`` with ``str`` keys, nested up to :data:`JSON_MAX_DEPTH` levels.  Anything
    else -- including subclasses such as enums or ``OrderedDict``, which would come
    back as their base type -- is refused instead of being silently converted.  Uses
    ``orjson`` when it is installed and the standard library otherwise; both accept
    and return the same values.
``pickle``
    Any picklable value.  **Trusted data only**: loading a pickle can run code.
``cloudpickle``
    Like ``pickle`` but also lambdas, closures and classes defined in ``__main__``.
    **Trusted data only.**  Open file handles are refused (cloudpickle would
    otherwise store the file's contents in place of the handle).

A custom serializer is any object with a ``name`` and ``dumps``/``loads`` methods
(see :class:`Serializer`).  :func:`find_unencodable` locates the first part of a
value that a serializer refuses; the store uses it to name the offending path in
:class:`~actorflow.store.errors.UnencodableValueError`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from actorflow.errors import ConfigurationError
from actorflow.store.errors import UnencodableValueError

__all__ = [
    "JSON_MAX_DEPTH",
    "CloudpickleSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "describe_unencodable",
    "encode_value",
    "find_unencodable",
    "get_serializer",
    "serializer_names",
]

JSON_MAX_DEPTH = 200
"""Deepest nesting of lists/dicts the ``json`` serializer accepts."""

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
"""The integers the ``json`` serializer accepts: from ``INT64_MIN`` to ``UINT64_MAX``."""


@runtime_checkable
class Serializer(Protocol):
    """What a store needs from a serializer."""

    @property
    def name(self) -> str:
        """Short name used in error messages and stats (``"json"``, ``"pickle"``...)."""
        ...

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise any exception if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`dumps`."""
        ...


# --------------------------------------------------------------------------- json


def _json_problem(value: Any, path: str = "", depth: int = 0) -> tuple[str, type, str] | None:
    """Return ``(path, type, reason)`` for the first part JSON cannot hold faithfully."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return None
    if kind is int:
        if INT64_MIN <= value <= UINT64_MAX:
            return None
        return path, kind, "integer does not fit in 64 bits"
    if kind is float:
        if math.isfinite(value):
            return None
        return path, kind, "JSON has no NaN or infinity"
    if kind is list or kind is tuple or kind is dict:
        if depth >= JSON_MAX_DEPTH:
            return path, kind, f"nested deeper than {JSON_MAX_DEPTH} levels (circular reference?)"
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    return f"{path}[{key!r}]", type(key), "JSON object keys must be str"
                problem = _json_problem(item, f"{path}[{key!r}]", depth + 1)
                if problem is not None:
                    return problem
            return None
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    for base in (bool, int, float, str, list, tuple, dict):
        if isinstance(value, base):
            name = base.__name__
            return path, kind, f"subclass of {name} would be read back as plain {name}"
    return path, kind, "not a JSON type"


class JsonSerializer:
    """Strict JSON (see the module docstring for what it accepts). Safe for untrusted data."""

    name = "json"
    trusted_only = False

    def __init__(self, *, use_orjson: bool | None = None) -> None:
        """Use orjson if ``use_orjson`` is true, or if it is ``None`` and orjson is installed."""
        orjson: Any = None
        if use_orjson is not False:
            try:
                import orjson  # noqa: PLC0415  (optional dependency)
            except ImportError:
                if use_orjson:
                    raise ConfigurationError("orjson is not installed") from None
        self._orjson = orjson
        self.backend = "orjson" if orjson is not None else "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` or raise ``TypeError`` naming the part JSON cannot hold."""
        problem = _json_problem(value)
        if problem is not None:
            path, kind, reason = problem
            where = f" at {path}" if path else ""
            raise TypeError(f"{kind.__name__}{where} cannot be stored as JSON: {reason}")
        if self._orjson is not None:
            return bytes(self._orjson.dumps(value))
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def dumps_valid(self, value: Any) -> bytes:
        """Encode ``value`` known to hold only what JSON holds faithfully (checked before:
        a value decoded from this serializer's output, changed only by such values)."""
        if self._orjson is not None:
            return bytes(self._orjson.dumps(value))
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        """Decode JSON bytes."""
        if self._orjson is not None:
            return self._orjson.loads(data)
        return json.loads(data)

    def __repr__(self) -> str:
        return f"JsonSerializer(backend={self.backend!r})"


# ------------------------------------------------------------------------- pickle


class PickleSerializer:
    """The standard library's pickle.  **Trusted data only**: loading runs code."""

    name = "pickle"
    trusted_only = True

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value``."""
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data`` (never call this on bytes you did not write)."""
        return pickle.loads(data)

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self.protocol})"


class CloudpickleSerializer:
    """cloudpickle: pickle plus lambdas and closures.  **Trusted data only.**

    Open file handles are refused rather than replaced by their contents.
    """

    name = "cloudpickle"
    trusted_only = True

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        try:
            import cloudpickle  # noqa: PLC0415  (optional dependency)
        except ImportError:  # pragma: no cover - cloudpickle is a core dependency
            raise ConfigurationError(
                "serializer 'cloudpickle' needs the cloudpickle package"
            ) from None

        class _Pickler(cloudpickle.CloudPickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, io.IOBase):
                    raise TypeError(f"cannot pickle {type(obj).__name__!r} object (a file handle)")
                return super().reducer_override(obj)

        self._pickler_class: Any = _Pickler
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` with cloudpickle."""
        buffer = io.BytesIO()
        self._pickler_class(buffer, protocol=self.protocol).dump(value)
        return buffer.getvalue()

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data`` (never call this on bytes you did not write)."""
        return pickle.loads(data)

    def __repr__(self) -> str:
        return f"CloudpickleSerializer(protocol={self.protocol})"


_FACTORIES: dict[str, type[JsonSerializer | PickleSerializer | CloudpickleSerializer]] = {
    "json": JsonSerializer,
    "pickle": PickleSerializer,
    "cloudpickle": CloudpickleSerializer,
}


def serializer_names() -> list[str]:
    """The names :func:`get_serializer` accepts."""
    return sorted(_FACTORIES)


def get_serializer(name_or_instance: str | Serializer) -> Serializer:
    """Return the serializer called ``name_or_instance``, or the instance itself.

    Raises :class:`~actorflow.errors.ConfigurationError` for an unknown name or an
    object that is not a :class:`Serializer`.
    """
    if isinstance(name_or_instance, str):
        factory = _FACTORIES.get(name_or_instance)
        if factory is None:
            raise ConfigurationError(
                f"unknown serializer {name_or_instance!r}; valid serializers: "
                + ", ".join(serializer_names())
            )
        return factory()
    if isinstance(name_or_instance, Serializer) and isinstance(name_or_instance.name, str):
        return name_or_instance
    raise ConfigurationError(
        f"serializer must be one of {', '.join(serializer_names())} or an object with "
        f"name, dumps() and loads(); got {name_or_instance!r}"
    )


# --------------------------------------------------------------- finding culprits


def _encodes(serializer: Serializer, value: Any) -> bool:
    try:
        serializer.dumps(value)
    except Exception:
        return False
    return True


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    """The parts of ``value`` a serializer would encode, with their path suffixes."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"[{key!r}]", item
        for key in value:
            yield f"[{key!r}] (the key)", key
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield f"[{index}]", item
    elif isinstance(value, set | frozenset):
        for item in value:
            yield f"{{{item!r}}}", item
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield f".{field.name}", getattr(value, field.name, None)
    else:
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            for name, item in attributes.items():
                yield f".{name}", item
        for klass in type(value).__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name not in ("__dict__", "__weakref__") and hasattr(value, name):
                    yield f".{name}", getattr(value, name)


def _locate(value: Any, serializer: Serializer, path: str, seen: set[int]) -> tuple[str, type]:
    if id(value) not in seen and len(seen) < 10_000:
        seen.add(id(value))
        for suffix, child in _children(value):
            if not _encodes(serializer, child):
                return _locate(child, serializer, path + suffix, seen)
    return path, type(value)


def find_unencodable(value: Any, serializer: str | Serializer) -> tuple[str, type] | None:
    """Return ``(path, type)`` of the first part of ``value`` that cannot be encoded.

    ``None`` means the whole value encodes.  ``path`` is ``""`` when the value itself
    is the culprit, otherwise a Python-like access path such as
    ``"['db']['connection']"``, ``"[2]"`` or ``".lock"`` (an attribute).

    Examples:
        ```python
        >>> import threading
        >>> find_unencodable({"db": {"lock": threading.Lock()}}, "pickle")[0]
        "['db']['lock']"
        ```
    """
    codec = get_serializer(serializer)
    if isinstance(codec, JsonSerializer):
        problem = _json_problem(value)
        return None if problem is None else (problem[0], problem[1])
    if _encodes(codec, value):
        return None
    return _locate(value, codec, "", set())


def _diagnose(value: Any, codec: Serializer, error: BaseException | None) -> tuple[str, type, str]:
    """``(path, type, message)`` explaining why ``value`` cannot be encoded."""
    reason = "" if error is None else str(error)
    if isinstance(codec, JsonSerializer):
        problem = _json_problem(value)
        path, kind = ("", type(value)) if problem is None else (problem[0], problem[1])
        if problem is not None:
            reason = problem[2]
    else:
        found = find_unencodable(value, codec)
        path, kind = found if found is not None else ("", type(value))
    where = f" at {path}" if path else ""
    message = (
        f"value of type {kind.__module__}.{kind.__qualname__}{where} cannot be encoded by "
        f"the {codec.name!r} serializer"
    )
    return path, kind, f"{message}: {reason}" if reason else message


def describe_unencodable(
    value: Any, serializer: str | Serializer, error: BaseException | None = None
) -> str:
    """A one-line explanation of why ``value`` cannot be encoded (for error messages)."""
    return _diagnose(value, get_serializer(serializer), error)[2]


def encode_value(serializer: Serializer, value: Any, *, key: str) -> bytes:
    """Encode ``value`` stored under ``key``, or raise ``UnencodableValueError``.

    The error names the key, the serializer, the offending type and its path.
    """
    try:
        return serializer.dumps(value)
    except Exception as exc:
        path, kind, message = _diagnose(value, serializer, exc)
        raise UnencodableValueError(
            f"cannot store key {key!r}: {message}",
            key=key,
            path=path,
            value_type=kind,
            serializer=serializer.name,
        ) from exc
