"""Key rules and key-range arithmetic shared by every backend.

Keys are compared by Unicode code point, which is also the byte order of their
UTF-8 encoding -- the order SQLite (``BINARY`` collation) and Redis (``ZRANGEBYLEX``)
use -- so every backend returns ranges in the same order.
"""

from __future__ import annotations

from actorflow.errors import ConfigurationError
from actorflow.store.errors import InvalidKeyError

SCOPE_SEPARATOR = ":"
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def _problem(text: object, *, allow_empty: bool) -> str | None:
    if not isinstance(text, str):
        return f"must be str, not {type(text).__name__}"
    if not text and not allow_empty:
        return "must not be empty"
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be encodable as UTF-8 (it contains a lone surrogate)"
    return None


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid key, else raise :class:`InvalidKeyError`."""
    problem = _problem(key, allow_empty=False)
    if problem is not None:
        raise InvalidKeyError(f"store key {key!r} {problem}")
    return key  # type: ignore[return-value]


def check_bound(bound: object, what: str) -> str:
    """Validate a range bound or prefix (which may be empty)."""
    problem = _problem(bound, allow_empty=True)
    if problem is not None:
        raise InvalidKeyError(f"{what} {bound!r} {problem}")
    return bound  # type: ignore[return-value]


def check_scope_name(name: object) -> str:
    """Validate the name given to ``scope()``."""
    problem = _problem(name, allow_empty=False)
    if problem is not None:
        raise InvalidKeyError(f"scope name {name!r} {problem}")
    return name  # type: ignore[return-value]


_QUOTED = {"%": "%25", SCOPE_SEPARATOR: "%3A", "\x00": "%00"}


def quote_scope_name(text: str) -> str:
    """The scope name that stands for ``text`` alone.

    ``store.scope("a:b")`` is the same view as ``store.scope("a").scope("b")``, so two
    names taken from outside (ids, tenants) can share keys: every key of scope
    ``"shop:eu"`` is also in scope ``"shop"``.  The quoted name has no separator, so
    ``scope(quote_scope_name(a))`` and ``scope(quote_scope_name(b))`` never share a key
    when ``a != b``.  ``%`` (the escape character), ``:``, NUL and lone surrogates are
    written as ``%25``, ``%3A``, ``%00`` and ``%uXXXX``; every other character is kept,
    so a name without them is unchanged.  Each escape is told apart by the character
    after ``%``, so no two texts quote to the same name.
    """
    if not isinstance(text, str):
        raise InvalidKeyError(f"scope name {text!r} must be str, not {type(text).__name__}")
    if not text:
        raise InvalidKeyError("scope name '' must not be empty")
    parts: list[str] = []
    for char in text:
        quoted = _QUOTED.get(char)
        if quoted is not None:
            parts.append(quoted)
        elif ord(char) in _SURROGATES:
            parts.append(f"%u{ord(char):04X}")
        else:
            parts.append(char)
    return "".join(parts)


def check_limit(limit: object) -> int | None:
    """Validate the ``limit`` of ``range_get``."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ConfigurationError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ConfigurationError(f"limit must be >= 0, got {limit}")
    return limit


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    ``None`` means there is no such bound (``prefix`` is empty or made only of the
    largest code point).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code <= _MAX_CODE_POINT:
            if code in _SURROGATES:
                code = _SURROGATES.stop
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def key_range(prefix: str, start: str, end: str | None) -> tuple[str, str | None] | None:
    """Full-key bounds ``[low, high)`` for ``range_get(start, end)`` in a view.

    ``end=None`` selects every key that starts with ``start``; ``high=None`` means
    unbounded.  Returns ``None`` when the range is empty (``end <= start``).
    """
    if end is None:
        low = prefix + start
        return low, prefix_end(low)
    if end <= start:
        return None
    return prefix + start, prefix + end
