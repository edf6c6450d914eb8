"""What the sync and async redis backends share: options, key layout and Lua.

Layout under ``key_prefix`` (default ``"actorflow:"``):

* ``{key_prefix}v:{key}`` -- a string holding the serialized value (with
  ``PX`` expiry when the entry has a TTL);
* ``{key_prefix}index`` -- a sorted set of every key (all scores 0) that range
  queries walk with ``ZRANGEBYLEX``.  ``put`` and ``delete`` change the value and
  the index in one ``MULTI``/``EXEC`` transaction; members whose value has expired
  are skipped and removed by the range script.

``update`` is an optimistic transaction on one pooled connection: ``WATCH`` +
``GET`` sent together, then ``MULTI``/``SET``/``ZADD``/``EXEC``; a ``nil`` reply
to ``EXEC`` means another client changed the key, and the loop retries (two
round trips per attempt instead of the three of redis-py's pipeline helper).

``write_if`` (``put_if``/``delete_if``) is one Lua script: it reads the guard and writes or
deletes the key (value and index) in one atomic step, one round trip. ``write_many_if``
(``put_many_if``) does the same for several keys in one script.

Single-node Redis only: the range script reads keys it computes itself, which
Redis Cluster does not allow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actorflow.errors import ConfigurationError
from actorflow.store._options import TTL, default_ttl_option, seconds_option

DEFAULT_KEY_PREFIX = "actorflow:"
MAX_UPDATE_ATTEMPTS = 10_000
SCAN_BATCH = 256

RANGE_SCRIPT = """
local index = KEYS[1]
local low, high = ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local prefix = ARGV[4]
local with_values = ARGV[5] == '1'
local out = {}
local found = 0
while true do
  local want = tonumber(ARGV[6])
  if limit >= 0 then want = limit - found end
  local members = redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, want)
  for _, member in ipairs(members) do
    local value
    if with_values then
      value = redis.call('GET', prefix .. member)
    else
      value = redis.call('EXISTS', prefix .. member) == 1
    end
    if value then
      found = found + 1
      out[#out + 1] = member
      if with_values then out[#out + 1] = value end
    else
      redis.call('ZREM', index, member)
    end
  end
  if #members < want or (limit >= 0 and found >= limit) then break end
  low = '(' .. members[#members]
end
return out
"""


WRITE_IF_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == 'put' then
  if ARGV[5] == '' then
    redis.call('SET', KEYS[2], ARGV[4])
  else
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  end
  redis.call('ZADD', KEYS[3], 0, ARGV[6])
  return 1
end
local removed = redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[6])
return 1 + removed
"""
"""``write_if``: test the guard and write (or delete) in one atomic step. Returns 0 when the
guard does not hold, 1 when it held (2: and a delete removed an entry)."""


WRITE_MANY_IF_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
local removed = 0
for i = 3, #KEYS do
  local at = 4 + (i - 3) * 3
  if ARGV[at] == 'put' then
    if ARGV[3] == '' then
      redis.call('SET', KEYS[i], ARGV[at + 1])
    else
      redis.call('SET', KEYS[i], ARGV[at + 1], 'PX', ARGV[3])
    end
    redis.call('ZADD', KEYS[2], 0, ARGV[at + 2])
  else
    removed = removed + redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], ARGV[at + 2])
  end
end
return 1 + removed
"""
"""``write_many_if``: test the guard, then write (or delete) every key in one atomic step.
KEYS: the guard, the index, then the value keys; ARGV: whether a value is expected, the
expected bytes, the ``PX`` milliseconds (empty: none), then ``put``/``del``, the bytes and
the index member of each key. Returns 0 when the guard does not hold, else 1 + the number
of entries the deletes removed."""


@dataclass(frozen=True)
class Layout:
    """Redis key names for one ``key_prefix``."""

    key_prefix: str

    @property
    def value_prefix(self) -> bytes:
        """Prefix of every value key."""
        return (self.key_prefix + "v:").encode()

    @property
    def index(self) -> bytes:
        """The sorted-set index of keys."""
        return (self.key_prefix + "index").encode()

    def value_key(self, key: str) -> bytes:
        """The redis key holding ``key``'s value."""
        return self.value_prefix + key.encode()

    @staticmethod
    def member(key: str) -> bytes:
        """``key`` as an index member."""
        return key.encode()

    @staticmethod
    def lex_bounds(low: str, high: str | None) -> tuple[bytes, bytes]:
        """``ZRANGEBYLEX`` bounds for ``low <= key < high``."""
        return b"[" + low.encode(), b"+" if high is None else b"(" + high.encode()

    def range_args(
        self, low: str, high: str | None, limit: int | None, *, with_values: bool
    ) -> list[Any]:
        """ARGV of :data:`RANGE_SCRIPT`."""
        lower, upper = self.lex_bounds(low, high)
        return [
            lower,
            upper,
            -1 if limit is None else limit,
            self.value_prefix,
            1 if with_values else 0,
            SCAN_BATCH,
        ]


def write_if_call(
    layout: Layout,
    guard: str,
    expected: bytes | None,
    key: str,
    data: bytes | None,
    ttl: float | None,
) -> tuple[list[bytes], list[Any]]:
    """KEYS and ARGV of :data:`WRITE_IF_SCRIPT`."""
    milliseconds = ttl_milliseconds(ttl)
    keys = [layout.value_key(guard), layout.value_key(key), layout.index]
    args: list[Any] = [
        b"0" if expected is None else b"1",
        b"" if expected is None else expected,
        b"del" if data is None else b"put",
        b"" if data is None else data,
        b"" if milliseconds is None else milliseconds,
        layout.member(key),
    ]
    return keys, args


def write_many_if_call(
    layout: Layout,
    guard: str,
    expected: bytes | None,
    writes: Sequence[tuple[str, bytes | None]],
    ttl: float | None,
) -> tuple[list[bytes], list[Any]]:
    """KEYS and ARGV of :data:`WRITE_MANY_IF_SCRIPT`."""
    milliseconds = ttl_milliseconds(ttl)
    keys = [layout.value_key(guard), layout.index]
    args: list[Any] = [
        b"0" if expected is None else b"1",
        b"" if expected is None else expected,
        b"" if milliseconds is None else milliseconds,
    ]
    for key, data in writes:
        keys.append(layout.value_key(key))
        args += [b"del" if data is None else b"put", b"" if data is None else data]
        args.append(layout.member(key))
    return keys, args


def watch_commands(value_key: bytes) -> list[tuple[Any, ...]]:
    """First half of ``update``: ``WATCH`` the value and read it, in one round trip."""
    return [("WATCH", value_key), ("GET", value_key)]


def write_commands(
    layout: Layout, key: str, data: bytes, ttl: float | None
) -> list[tuple[Any, ...]]:
    """Second half of ``update``: the guarded write, ``MULTI`` ... ``EXEC``."""
    milliseconds = ttl_milliseconds(ttl)
    expiry: tuple[Any, ...] = () if milliseconds is None else ("PX", milliseconds)
    return [
        ("MULTI",),
        ("SET", layout.value_key(key), data, *expiry),
        ("ZADD", layout.index, 0, layout.member(key)),
        ("EXEC",),
    ]


def exec_succeeded(reply: Any) -> bool:
    """Whether an ``EXEC`` reply means the transaction ran (``None``: a watched key changed)."""
    if reply is None:
        return False
    for item in reply:
        if isinstance(item, Exception):
            raise item
    return True


def backoff(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th lost ``WATCH`` race (jittered, <= 20 ms)."""
    return random.uniform(0, min(0.0005 * 2 ** min(attempt, 6), 0.02))


def ttl_milliseconds(ttl: float | None) -> int | None:
    """``PX`` argument for ``ttl`` seconds (at least 1 ms)."""
    return None if ttl is None else max(1, math.ceil(ttl * 1000))


def pairs(flat: list[Any]) -> list[tuple[str, bytes]]:
    """``[k1, v1, k2, v2]`` from the range script as ``[(k1, v1), (k2, v2)]``."""
    return [(flat[i].decode(), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


@dataclass(frozen=True)
class RedisOptions:
    """Validated redis connection options."""

    url: str | None
    host: str
    port: int
    db: int
    password: str | None
    ssl: bool
    key_prefix: str
    default_ttl: float | None
    max_connections: int
    socket_timeout: float | None
    socket_connect_timeout: float | None

    def pool_kwargs(self, ssl_connection_class: type, pool_timeout: float = 20.0) -> dict[str, Any]:
        """Keyword arguments for a ``BlockingConnectionPool`` (sync or async)."""
        kwargs: dict[str, Any] = {
            "max_connections": self.max_connections,
            "timeout": pool_timeout,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
        }
        if self.url is None:
            kwargs.update(host=self.host, port=self.port, db=self.db, password=self.password)
            if self.ssl:
                kwargs["connection_class"] = ssl_connection_class
        return kwargs


def redis_options(
    *,
    url: str | None,
    host: str | None,
    port: int | None,
    db: int | None,
    password: str | None,
    ssl: bool | None,
    key_prefix: str,
    default_ttl: TTL | None,
    max_connections: int,
    socket_timeout: float | None,
    socket_connect_timeout: float | None,
) -> RedisOptions:
    """Validate the redis options (``url`` excludes host/port/db/password/ssl)."""
    explicit = {
        "host": host,
        "port": port,
        "db": db,
        "password": password,
        "ssl": ssl,
    }
    if url is not None:
        given = sorted(name for name, value in explicit.items() if value is not None)
        if given:
            raise ConfigurationError(
                f"give either url or {', '.join(given)}, not both (the url already says them)"
            )
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"url must start with redis://, rediss:// or unix://, got {url!r}"
            )
    if not isinstance(key_prefix, str) or "\x00" in key_prefix:
        raise ConfigurationError(f"key_prefix must be a str without NUL, got {key_prefix!r}")
    for name, value in (("port", port), ("db", db), ("max_connections", max_connections)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigurationError(f"{name} must be an int, got {value!r}")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port}")
    if db is not None and db < 0:
        raise ConfigurationError(f"db must be >= 0, got {db}")
    if max_connections <= 0:
        raise ConfigurationError(f"max_connections must be > 0, got {max_connections}")
    return RedisOptions(
        url=url,
        host="localhost" if host is None else host,
        port=6379 if port is None else port,
        db=0 if db is None else db,
        password=password,
        ssl=bool(ssl),
        key_prefix=key_prefix,
        default_ttl=default_ttl_option(default_ttl),
        max_connections=max_connections,
        socket_timeout=seconds_option(socket_timeout, "socket_timeout"),
        socket_connect_timeout=seconds_option(socket_connect_timeout, "socket_connect_timeout"),
    )


def server_stats(info: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``INFO`` worth reporting."""
    return {
        "redis_version": info.get("redis_version"),
        "used_memory_human": info.get("used_memory_human"),
    }
