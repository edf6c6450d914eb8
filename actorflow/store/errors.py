"""Errors raised by :mod:`actorflow.store`.

Every error is a subclass of :class:`actorflow.errors.ActorflowError`.  Two errors
from the shared hierarchy are re-exported here because the store raises them too:
:class:`~actorflow.errors.SerializationError` (a value the serializer cannot encode;
nothing was written) and :class:`~actorflow.errors.ConfigurationError` (an unknown
store type or option, or an option with a bad value).
"""

from __future__ import annotations

from actorflow.errors import (
    ActorflowError,
    ConfigurationError,
    InvalidDurationError,
    SerializationError,
)

__all__ = [
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DecodeError",
    "InvalidKeyError",
    "InvalidTTLError",
    "ReadOnlyStoreError",
    "SerializationError",
    "StoreClosedError",
    "StoreError",
    "UnencodableValueError",
]


class StoreError(ActorflowError):
    """Base class of the errors that only the store raises."""


class ReadOnlyStoreError(StoreError, AttributeError):
    """A write verb (``put``, ``delete``, ``update``) was used on a read-only view.

    It subclasses :class:`AttributeError` because a read-only view has no write
    methods at all: ``hasattr(view, "put")`` is ``False``.
    """


class StoreClosedError(StoreError, RuntimeError):
    """The store (or the view used) has been closed."""


class InvalidKeyError(StoreError, TypeError, ValueError):
    """A key is not a non-empty ``str`` that can be stored on every backend.

    Keys must be ``str`` (a ``TypeError``), non-empty, free of NUL characters and
    encodable as UTF-8 (a ``ValueError``); the class subclasses both.
    """


class InvalidTTLError(StoreError, InvalidDurationError):
    """A time-to-live is not a number of seconds or ``timedelta`` > 0 and at most
    ``threading.TIMEOUT_MAX`` (about 292 years).

    It is an :class:`~actorflow.errors.InvalidDurationError` (so a ``ConfigurationError``
    and a ``ValueError``): one ``except InvalidDurationError`` catches a bad TTL and any
    other bad duration.
    """


class DecodeError(StoreError, ValueError):
    """Stored bytes could not be decoded by the store's serializer.

    This usually means the data was written with another serializer.
    """


class ConcurrentUpdateError(StoreError, RuntimeError):
    """An optimistic ``update()`` kept losing races and gave up (redis backend only)."""


class UnencodableValueError(StoreError, SerializationError):
    """A value given for ``key`` cannot be encoded by the store's serializer.

    Nothing was written.  ``path`` locates the offending part inside the value
    (``""`` for the value itself, else e.g. ``"['db']['connection']"``) and
    ``value_type`` is its type.
    """

    def __init__(
        self, message: str, *, key: str, path: str, value_type: type, serializer: str
    ) -> None:
        super().__init__(message)
        self.key = key
        self.path = path
        self.value_type = value_type
        self.serializer = serializer
