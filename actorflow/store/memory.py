"""The in-process backend: a ``cachetools.TLRUCache`` plus a sorted key list.

* thread-safe: one ``threading.RLock`` guards the cache; every view shares it;
* values are stored serialized, so the store never aliases the caller's objects
  and accepts exactly what the other backends accept;
* ``max_entries`` evicts the least recently used entry (``put``, ``get`` and
  ``update`` count as use; ``exists``, ``keys`` and ``range_get`` do not);
* per-entry expiry (``ttl`` / ``default_ttl``) is checked on every read and
  reclaimed by a daemon reaper thread that sleeps until the next expiry;
* ``range_get`` bisects a sorted list of keys.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from cachetools import Cache, TLRUCache

from actorflow.store._evict import Event, Reaper
from actorflow.store._options import (
    TTL,
    Clock,
    EvictionCallback,
    callable_option,
    max_entries_option,
)
from actorflow.store.base import Backend, Store
from actorflow.store.serializers import Serializer

__all__ = ["MemoryBackend", "MemoryStore"]


class _Entry(NamedTuple):
    data: bytes
    expires_at: float  # math.inf: never


def _time_to_use(_key: str, entry: _Entry, _now: float) -> float:
    return entry.expires_at


class _Cache(TLRUCache[str, _Entry]):
    """A TLRU cache that reports every entry it drops on its own."""

    def __init__(
        self, maxsize: float, timer: Clock, removed: Callable[[str, _Entry, str], None]
    ) -> None:
        super().__init__(maxsize, _time_to_use, timer)
        self._removed = removed

    def popitem(self) -> tuple[str, _Entry]:
        key, entry = super().popitem()
        self._removed(key, entry, "capacity")
        return key, entry

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        expired = list(super().expire(time))
        for key, entry in expired:
            self._removed(key, entry, "expired")
        return expired


def _stored(cache: _Cache, key: str) -> bool:
    """Presence in the underlying mapping, expired or not, without touching LRU order."""
    return Cache.__contains__(cache, key)


class MemoryBackend(Backend):
    """Bytes in a bounded, expiring LRU cache (see the module docstring)."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        default_ttl: TTL | None = None,
        on_evict: EvictionCallback | None = None,
        serializer: str | Serializer = "json",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(serializer=serializer, default_ttl=default_ttl, on_evict=on_evict)
        self.max_entries = max_entries_option(max_entries)
        self._clock: Clock = callable_option(clock, "clock") or time.monotonic
        maxsize = math.inf if self.max_entries is None else self.max_entries
        self._cache = _Cache(maxsize, self._clock, self._removed)
        self._sorted: list[str] = []
        self._events: list[Event] = []
        self._expiries: list[tuple[float, str]] = []
        self._counts = dict.fromkeys(
            ("hits", "misses", "puts", "deletes", "evicted_capacity", "evicted_expired"), 0
        )
        self._condition = threading.Condition(self.lock)
        self._reaper = Reaper(
            "actorflow-store-memory-reaper",
            self._condition,
            self._clock,
            self._next_expiry,
            self._reap,
        )

    # ------------------------------------------------------------ bookkeeping

    def _unlist(self, key: str) -> None:
        index = bisect_left(self._sorted, key)
        if index < len(self._sorted) and self._sorted[index] == key:
            del self._sorted[index]

    def _removed(self, key: str, entry: _Entry, reason: str) -> None:
        self._unlist(key)
        self._counts["evicted_" + reason] += 1
        if self.evictions.active:
            self._events.append((key, entry.data, reason))

    @contextmanager
    def _operation(self) -> Iterator[None]:
        """Hold the lock, drop expired entries first, fire callbacks after releasing."""
        with self.lock:
            try:
                self._cache.expire()
                yield
            finally:
                events, self._events = self._events, []
        if events:
            self.evictions.fire(events)

    def _next_expiry(self) -> float | None:
        # Raw Cache methods only: TLRUCache.__len__ and friends would expire entries
        # here, outside _operation(), and their callbacks would be delayed.
        heap, cache = self._expiries, self._cache
        if len(heap) > 2 * Cache.__len__(cache) + 64:
            entries = ((key, Cache.__getitem__(cache, key)) for key in Cache.__iter__(cache))
            heap[:] = [(e.expires_at, key) for key, e in entries if e.expires_at != math.inf]
            heapq.heapify(heap)
        while heap:
            expires_at, key = heap[0]
            if _stored(cache, key):
                entry = Cache.__getitem__(cache, key)
                if entry.expires_at == expires_at:
                    return expires_at
            heapq.heappop(heap)
        return None

    def _reap(self) -> None:
        with self._operation():
            pass

    def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        cache = self._cache
        expires_at = math.inf if ttl is None else self._clock() + ttl
        is_new = not _stored(cache, key)
        cache[key] = _Entry(data, expires_at)
        if _stored(cache, key):
            if is_new:
                insort(self._sorted, key)
        elif not is_new:  # replaced by an entry that was already expired
            self._unlist(key)
        self._counts["puts"] += 1
        if ttl is not None:
            heapq.heappush(self._expiries, (expires_at, key))
            self._reaper.schedule(expires_at)

    def _live_entry(self, key: str) -> _Entry | None:
        try:
            return self._cache[key]  # marks the entry as recently used
        except KeyError:
            return None

    # ------------------------------------------------------------------ verbs

    def put(self, key: str, data: bytes, ttl: float | None) -> None:
        with self._operation():
            self._set(key, data, ttl)

    def get(self, key: str) -> bytes | None:
        with self._operation():
            entry = self._live_entry(key)
            self._counts["misses" if entry is None else "hits"] += 1
            return None if entry is None else entry.data

    def _remove(self, key: str) -> bool:
        cache = self._cache
        if not _stored(cache, key):
            return False
        entry = Cache.__getitem__(cache, key)
        self._unlist(key)
        try:
            del cache[key]
        except KeyError:  # it expired between expire() and now
            self._counts["evicted_expired"] += 1
            if self.evictions.active:
                self._events.append((key, entry.data, "expired"))
            return False
        self._counts["deletes"] += 1
        if self.evictions.active:
            self._events.append((key, entry.data, "deleted"))
        return True

    def delete(self, key: str) -> bool:
        with self._operation():
            return self._remove(key)

    def exists(self, key: str) -> bool:
        with self._operation():
            return key in self._cache

    def _scan(self, low: str, high: str | None) -> Iterator[tuple[str, _Entry]]:
        keys = self._sorted
        index = bisect_left(keys, low)
        stop = len(keys) if high is None else bisect_left(keys, high, index)
        now = self._clock()
        for position in range(index, stop):
            key = keys[position]
            entry = Cache.__getitem__(self._cache, key)
            if now < entry.expires_at:
                yield key, entry

    def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        with self._operation():
            rows: list[tuple[str, bytes]] = []
            for key, entry in self._scan(low, high):
                rows.append((key, entry.data))
                if limit is not None and len(rows) >= limit:
                    break
            return rows

    def keys(self, low: str, high: str | None) -> list[str]:
        with self._operation():
            return [key for key, _entry in self._scan(low, high)]

    def update(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        with self._operation():
            entry = self._live_entry(key)
            data = fn(None if entry is None else entry.data)
            self._set(key, data, ttl)

    def _holds(self, guard: str, expected: bytes | None) -> bool:
        """Whether ``guard`` holds ``expected`` (read without counting as a use)."""
        cache = self._cache
        current = None
        if _stored(cache, guard):
            entry = Cache.__getitem__(cache, guard)
            if self._clock() < entry.expires_at:
                current = entry.data
        return current == expected

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
        with self._operation():
            if not self._holds(guard, expected):
                return False
            for key, data in writes:
                if data is None:
                    self._remove(key)
                else:
                    self._set(key, data, ttl)
            return True

    def stats(self) -> dict[str, Any]:
        with self._operation():
            return {
                "backend": self.name,
                "serializer": self.serializer.name,
                "entries": len(self._cache),
                "max_entries": self.max_entries,
                "default_ttl": self.default_ttl,
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
            self._cache.clear()
            self._sorted.clear()
            self._expiries.clear()


class MemoryStore(Store):
    """An in-process :class:`~actorflow.store.Store` (data lives as long as the object).

    :param max_entries: keep at most this many entries, evicting the least recently
        used (reason ``"capacity"``).
    :param default_ttl: seconds (or ``timedelta``) after which entries expire unless
        ``put`` gives another ``ttl``.
    :param on_evict: ``on_evict(key, value, reason)`` called (outside the lock) when
        an entry is evicted (``"capacity"``), expires (``"expired"``) or is deleted
        (``"deleted"``).
    :param serializer: ``"json"`` (default), ``"pickle"``, ``"cloudpickle"`` or a
        :class:`~actorflow.store.serializers.Serializer`.
    :param clock: zero-argument callable returning seconds (default
        ``time.monotonic``); inject a fake clock to test expiry without sleeping.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        default_ttl: TTL | None = None,
        on_evict: EvictionCallback | None = None,
        serializer: str | Serializer = "json",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            MemoryBackend(
                max_entries=max_entries,
                default_ttl=default_ttl,
                on_evict=on_evict,
                serializer=serializer,
                clock=clock,
            )
        )
