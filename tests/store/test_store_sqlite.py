"""SQLite-only behaviour of a bounded store: reads never write, and their order persists."""

from __future__ import annotations

from pathlib import Path

from actorflow.store import SqliteStore


def _changes(store: SqliteStore) -> int:
    return int(store._backend._db.total_changes)  # type: ignore[attr-defined]


def test_a_get_on_a_bounded_store_does_not_write(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "lru.db", max_entries=3)
    try:
        store.put("a", 1)
        store.put("b", 2)
        before = _changes(store)
        for _ in range(50):
            assert store.get("a") == 1
            assert store.get("missing") is None
        assert _changes(store) == before  # no UPDATE, no transaction per read
        store.put("c", 3)  # the next write stores the reads' uses, then evicts
        store.put("d", 4)
        assert store.keys() == ["a", "c", "d"]  # b was the least recently used
    finally:
        store.close()


def test_the_order_of_reads_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lru.db"
    first = SqliteStore(path, max_entries=3)
    first.put("a", 1)
    first.put("b", 2)
    first.put("c", 3)
    assert first.get("a") == 1  # noted in memory, stored by close()
    first.close()
    second = SqliteStore(path, max_entries=3)
    try:
        second.put("d", 4)
        assert second.keys() == ["a", "c", "d"]
    finally:
        second.close()
