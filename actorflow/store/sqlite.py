"""The durable single-machine backend: one SQLite file in WAL mode, no server.

* one ``sqlite3`` connection (``check_same_thread=False``) guarded by the store
  lock; other processes may open the same file (SQLite's own locking, with a
  ``busy_timeout``); ``update()``, ``write_if()`` and ``write_many_if()`` run in a
  ``BEGIN IMMEDIATE`` transaction, so they are atomic across threads *and* processes;
* ``synchronous=FULL`` by default: when ``put`` returns, the write-ahead log has
  been fsynced, so an acknowledged write survives a process crash *and* a power
  loss.  ``synchronous="normal"`` is faster and still survives a process crash,
  but may lose the last writes on power loss or an OS crash;
* range queries walk the primary-key index
  (``WHERE key >= ? AND key < ? ORDER BY key LIMIT ?``);
* expiry lives in an ``expires_at`` column (wall-clock seconds, so it means the
  same in every process); every read filters expired rows, and they are deleted
  by the next operation or by the reaper thread;
* ``max_entries`` evicts by a ``used`` counter column (``put``, ``get`` and
  ``update`` count as use). A ``get`` never writes: it notes its use in memory,
  and the next write of this store (or ``close``) stores the noted uses before it
  evicts anything, so eviction in this process sees every read. Another process
  sees them once this one has written or closed; a crash loses only the order.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from actorflow.errors import ConfigurationError
from actorflow.store._evict import Event, Reaper
from actorflow.store._options import (
    TTL,
    Clock,
    EvictionCallback,
    callable_option,
    max_entries_option,
    seconds_option,
)
from actorflow.store.base import Backend, Store
from actorflow.store.serializers import Serializer

__all__ = ["SqliteBackend", "SqliteStore"]

_TABLE = "actorflow_store"
_META = "actorflow_store_meta"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS {_TABLE} (
    key        TEXT PRIMARY KEY NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,
    used       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {_TABLE}_expiry ON {_TABLE}(expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS {_TABLE}_used ON {_TABLE}(used);
CREATE TABLE IF NOT EXISTS {_META} (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
INSERT OR IGNORE INTO {_META} VALUES ('entries', (SELECT COUNT(*) FROM {_TABLE}));
CREATE TRIGGER IF NOT EXISTS {_TABLE}_counted_in AFTER INSERT ON {_TABLE} BEGIN
    UPDATE {_META} SET value = value + 1 WHERE name = 'entries';
END;
CREATE TRIGGER IF NOT EXISTS {_TABLE}_counted_out AFTER DELETE ON {_TABLE} BEGIN
    UPDATE {_META} SET value = value - 1 WHERE name = 'entries';
END;
COMMIT;
"""

_UPSERT = (
    f"INSERT INTO {_TABLE} (key, value, expires_at, used) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, used = excluded.used"
)

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


class SqliteBackend(Backend):
    """Bytes in one SQLite table (see the module docstring)."""

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        default_ttl: TTL | None = None,
        on_evict: EvictionCallback | None = None,
        serializer: str | Serializer = "json",
        clock: Clock | None = None,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
    ) -> None:
        super().__init__(serializer=serializer, default_ttl=default_ttl, on_evict=on_evict)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigurationError(f"sqlite store needs a file path, got {path!r}")
        mode = _SYNCHRONOUS.get(str(synchronous).lower())
        if mode is None:
            raise ConfigurationError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        busy = seconds_option(busy_timeout, "busy_timeout", allow_none=False, allow_zero=True)
        self.path = os.fspath(path)
        self.synchronous = mode.lower()
        self.max_entries = max_entries_option(max_entries)
        self._clock: Clock = callable_option(clock, "clock") or time.time
        self._events: list[Event] = []
        self._touched: dict[str, int] = {}  # key -> use count of reads not stored yet
        self._counts = dict.fromkeys(
            ("hits", "misses", "puts", "deletes", "evicted_capacity", "evicted_expired"), 0
        )
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open sqlite store {self.path!r}: {exc}") from exc
        try:
            self._setup(mode)
        except BaseException:
            self._db.close()
            raise
        self._condition = threading.Condition(self.lock)
        self._reaper = Reaper(
            "actorflow-store-sqlite-reaper",
            self._condition,
            self._clock,
            lambda: None if self._due == math.inf else self._due,
            self._reap,
        )
        if self._due != math.inf:
            with self.lock:
                self._reaper.schedule(self._due)

    def _setup(self, synchronous: str) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(_SCHEMA)
        with self._transaction():
            db.execute(
                f"INSERT OR IGNORE INTO {_META} VALUES ('serializer', ?)", (self.serializer.name,)
            )
            (written_with,) = db.execute(
                f"SELECT value FROM {_META} WHERE name = 'serializer'"
            ).fetchone()
            (used,) = db.execute(f"SELECT COALESCE(MAX(used), 0) FROM {_TABLE}").fetchone()
        if written_with != self.serializer.name:
            raise ConfigurationError(
                f"sqlite store {self.path!r} holds values written with the "
                f"{written_with!r} serializer; open it with serializer={written_with!r}"
            )
        self._used = int(used)
        self._due = self._earliest_expiry()

    # ------------------------------------------------------------ bookkeeping

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _earliest_expiry(self) -> float:
        (due,) = self._db.execute(
            f"SELECT MIN(expires_at) FROM {_TABLE} WHERE expires_at IS NOT NULL"
        ).fetchone()
        return math.inf if due is None else float(due)

    def _tick(self) -> int:
        self._used += 1
        return self._used

    def _record(self, rows: list[Any], reason: str) -> None:
        self._counts["evicted_" + reason] += len(rows)
        if self.evictions.active:
            self._events.extend((key, value, reason) for key, value in rows)

    def _purge(self, now: float) -> None:
        """Delete expired rows (inside the caller's transaction)."""
        if now < self._due:
            return
        rows = self._db.execute(
            f"DELETE FROM {_TABLE} WHERE expires_at <= ? RETURNING key, value", (now,)
        ).fetchall()
        self._record(rows, "expired")
        self._due = self._earliest_expiry()

    def _store_touches(self) -> None:
        """Store the uses that reads noted (inside the caller's transaction)."""
        touched = self._touched
        if touched:
            self._db.executemany(
                f"UPDATE {_TABLE} SET used = ? WHERE key = ?",
                [(used, key) for key, used in touched.items()],
            )
            touched.clear()

    def _evict(self) -> None:
        """Enforce ``max_entries`` (inside the caller's transaction)."""
        if self.max_entries is None:
            return
        self._store_touches()
        (entries,) = self._db.execute(
            f"SELECT value FROM {_META} WHERE name = 'entries'"
        ).fetchone()
        excess = int(entries) - self.max_entries
        if excess > 0:
            rows = self._db.execute(
                f"DELETE FROM {_TABLE} WHERE key IN "
                f"(SELECT key FROM {_TABLE} ORDER BY used LIMIT ?) RETURNING key, value",
                (excess,),
            ).fetchall()
            self._record(rows, "capacity")

    @contextmanager
    def _operation(self, *, write: bool) -> Iterator[float]:
        """Hold the lock (and a write transaction if ``write``); reclaim expired rows first.

        Yields the current time; eviction callbacks fire after the lock is released
        and only if the transaction committed.
        """
        events: list[Event] = []
        with self.lock:
            now = self._clock()
            try:
                if write:
                    with self._transaction():
                        self._purge(now)
                        yield now
                else:
                    if now >= self._due:
                        with self._transaction():
                            self._purge(now)
                    yield now
                events = self._events
            finally:
                self._events = []
        if events:
            self.evictions.fire(events)

    def _reap(self) -> None:
        with self._operation(write=False):
            pass

    def _write(self, key: str, data: bytes, ttl: float | None, now: float) -> None:
        expires_at = None if ttl is None else now + ttl
        self._touched.pop(key, None)  # this write is a newer use than a noted read
        self._db.execute(_UPSERT, (key, data, expires_at, self._tick()))
        self._counts["puts"] += 1
        self._evict()
        if expires_at is not None and expires_at < self._due:
            self._due = expires_at
            self._reaper.schedule(expires_at)

    def _read(self, key: str, now: float) -> bytes | None:
        row = self._db.execute(
            f"SELECT value FROM {_TABLE} WHERE key = ? AND {_LIVE}", (key, now)
        ).fetchone()
        if row is None:
            return None
        if self.max_entries is not None:
            self._touched[key] = self._tick()  # stored by the next write (_store_touches)
        return bytes(row[0])

    # ------------------------------------------------------------------ verbs

    def put(self, key: str, data: bytes, ttl: float | None) -> None:
        with self._operation(write=True) as now:
            self._write(key, data, ttl, now)

    def get(self, key: str) -> bytes | None:
        with self._operation(write=False) as now:
            data = self._read(key, now)
            self._counts["misses" if data is None else "hits"] += 1
            return data

    def _remove(self, key: str, now: float) -> bool:
        row = self._db.execute(
            f"DELETE FROM {_TABLE} WHERE key = ? RETURNING value, expires_at", (key,)
        ).fetchone()
        if row is None:
            return False
        value, expires_at = row
        if expires_at is not None and expires_at <= now:
            self._record([(key, value)], "expired")
            return False
        self._counts["deletes"] += 1
        if self.evictions.active:
            self._events.append((key, bytes(value), "deleted"))
        return True

    def delete(self, key: str) -> bool:
        with self._operation(write=True) as now:
            return self._remove(key, now)

    def exists(self, key: str) -> bool:
        with self._operation(write=False) as now:
            row = self._db.execute(
                f"SELECT 1 FROM {_TABLE} WHERE key = ? AND {_LIVE}", (key, now)
            ).fetchone()
            return row is not None

    def _select(self, columns: str, low: str, high: str | None, limit: int | None) -> str:
        upper = "" if high is None else " AND key < ?"
        return (
            f"SELECT {columns} FROM {_TABLE} WHERE key >= ?{upper} AND {_LIVE} ORDER BY key LIMIT ?"
        )

    @staticmethod
    def _args(low: str, high: str | None, now: float, limit: int | None) -> tuple[Any, ...]:
        bounds: tuple[Any, ...] = (low,) if high is None else (low, high)
        return (*bounds, now, -1 if limit is None else limit)

    def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        with self._operation(write=False) as now:
            rows = self._db.execute(
                self._select("key, value", low, high, limit), self._args(low, high, now, limit)
            ).fetchall()
            return [(key, bytes(value)) for key, value in rows]

    def keys(self, low: str, high: str | None) -> list[str]:
        with self._operation(write=False) as now:
            rows = self._db.execute(
                self._select("key", low, high, None), self._args(low, high, now, None)
            ).fetchall()
            return [key for (key,) in rows]

    def update(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        with self._operation(write=True) as now:
            self._write(key, fn(self._read(key, now)), ttl, now)

    def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        return self.write_many_if(guard, expected, ((key, data),), ttl)

    def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        with self._operation(write=True) as now:  # one BEGIN IMMEDIATE transaction
            row = self._db.execute(
                f"SELECT value FROM {_TABLE} WHERE key = ? AND {_LIVE}", (guard, now)
            ).fetchone()
            if (None if row is None else bytes(row[0])) != expected:
                return False
            for key, data in writes:
                if data is None:
                    self._remove(key, now)
                else:
                    self._write(key, data, ttl, now)
            return True

    def stats(self) -> dict[str, Any]:
        with self._operation(write=False) as now:
            (entries,) = self._db.execute(
                f"SELECT COUNT(*) FROM {_TABLE} WHERE {_LIVE}", (now,)
            ).fetchone()
            return {
                "backend": self.name,
                "serializer": self.serializer.name,
                "entries": entries,
                "max_entries": self.max_entries,
                "default_ttl": self.default_ttl,
                "path": self.path,
                "synchronous": self.synchronous,
                **self._counts,
                "reaper_errors": self._reaper.errors,
            }

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self._reaper.stop()
        with self.lock:
            try:
                if self._touched:
                    with self._transaction():
                        self._store_touches()
            except sqlite3.OperationalError:  # the file is locked by another process: only
                pass  # the eviction order of the last reads is lost, never a value
            finally:
                self._db.close()


class SqliteStore(Store):
    """A durable :class:`~actorflow.store.Store` in one SQLite file.

    :param path: the database file (created if missing); other processes may open
        the same file at the same time.
    :param max_entries, default_ttl, on_evict, serializer, clock: as for
        :class:`~actorflow.store.MemoryStore` (the default clock is ``time.time``,
        because expiry times are stored in the file).
    :param synchronous: ``"full"`` (default: acknowledged writes survive power loss)
        or ``"normal"`` (faster; survives a process crash only).
    :param busy_timeout: seconds to wait for another process's write lock.
    """

    __slots__ = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        default_ttl: TTL | None = None,
        on_evict: EvictionCallback | None = None,
        serializer: str | Serializer = "json",
        clock: Clock | None = None,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            SqliteBackend(
                path,
                max_entries=max_entries,
                default_ttl=default_ttl,
                on_evict=on_evict,
                serializer=serializer,
                clock=clock,
                synchronous=synchronous,
                busy_timeout=busy_timeout,
            )
        )
