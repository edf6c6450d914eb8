"""Bounds on a worker's state, enforced by its supervisor."""

from __future__ import annotations

from dataclasses import dataclass

from actorflow.errors import ConfigurationError

__all__ = ["StateLimits"]


@dataclass(frozen=True)
class StateLimits:
    """Maximum encoded size of one state key and of all keys together (None: unbounded).

    An update that would cross a limit is refused with ``StateLimitError`` and nothing is
    stored. Sizes are those of the encoded value (JSON bytes by default).
    """

    max_key_bytes: int | None = None
    max_total_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_key_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"StateLimits.{name} must be a positive int, got {value!r}"
                )
