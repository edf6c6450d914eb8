"""The store contract: every test runs on every backend, sync and async.

The ``harness`` fixture (conftest.py) yields memory, sqlite and redis in both
modes; async stores are driven through a synchronous facade whose calls run as
coroutines on one event loop, so the same assertions hold for both APIs.
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import threading
from typing import Any

import pytest
from _store_harness import Harness

from actorflow.errors import ConfigurationError, SerializationError
from actorflow.store import (
    ABSENT,
    InvalidKeyError,
    InvalidTTLError,
    ReadOnlyStoreError,
    StoreClosedError,
    UnencodableValueError,
    WrongTypeError,
    quote_scope_name,
)

# --------------------------------------------------------------------- basics


def test_put_get_exists_delete(harness: Harness) -> None:
    s = harness.make()
    assert s.get("missing") is None
    assert s.get("missing", 7) == 7
    assert not s.exists("missing")
    values: list[Any] = [
        0,
        -1,
        2**63 - 1,
        1.5,
        "",
        "héllo ✓",
        True,
        None,
        [1, [2, {"a": None}]],
        {"k": [1, 2], "é": {"x": 1.25}},
    ]
    for i, value in enumerate(values):
        s.put(f"k{i}", value)
    for i, value in enumerate(values):
        got = s.get(f"k{i}")
        assert got == value
        assert type(got) is type(value)
    assert s.exists("k7")  # holds None, but exists
    assert s.delete("k0") is True
    assert s.delete("k0") is False
    assert not s.exists("k0")
    s.put("k1", "replaced")
    assert s.get("k1") == "replaced"


def test_values_are_copied_in_and_out(harness: Harness) -> None:
    s = harness.make()
    value = {"a": [1]}
    s.put("x", value)
    value["a"].append(2)
    assert s.get("x") == {"a": [1]}
    fetched = s.get("x")
    fetched["a"].append(3)
    assert s.get("x") == {"a": [1]}


KEYS = ["a", "a:1", "a:2", "ab", "b", "b:1", "é", "z", "ü", "a:10"]


def test_range_get_is_ordered_and_end_exclusive(harness: Harness) -> None:
    s = harness.make()
    for i, key in enumerate(KEYS):
        s.put(key, i)
    ordered = sorted(KEYS)  # code point order: ... "z" < "é" < "ü"
    assert [k for k, _ in s.range_get("")] == ordered
    assert s.keys() == ordered
    assert s.range_get("a", "b") == [("a", 0), ("a:1", 1), ("a:10", 9), ("a:2", 2), ("ab", 3)]
    assert [k for k, _ in s.range_get("a:1", "a:2")] == ["a:1", "a:10"]  # end excluded
    assert [k for k, _ in s.range_get("a:")] == ["a:1", "a:10", "a:2"]  # prefix
    assert [k for k, _ in s.range_get("a", limit=2)] == ["a", "a:1"]
    assert [k for k, _ in s.range_get("a:1x", "b")] == ["a:2", "ab"]  # bounds need not exist
    assert [k for k, _ in s.range_get("c", "zz")] == ["z"]
    assert [k for k, _ in s.range_get("z")] == ["z"]
    assert [k for k, _ in s.range_get("é", "ü")] == ["é"]
    assert s.range_get("b", "a") == []
    assert s.range_get("b", "b") == []
    assert s.range_get("", limit=0) == []
    assert s.range_get("nothing") == []
    assert s.keys("a:") == ["a:1", "a:10", "a:2"]
    assert s.keys("zz") == []


# --------------------------------------------------------------------- scopes


def test_scopes_prefix_keys_and_nest(harness: Harness) -> None:
    s = harness.make()
    user = s.scope("user")
    admin = user.scope("admin")
    assert user.prefix == "user:"
    assert admin.prefix == "user:admin:"
    user.put("1", "u1")
    admin.put("1", "a1")
    s.put("user2:1", "other scope")
    s.put("1", "root")
    s.put("user", "not in the scope")
    assert s.get("user:1") == "u1"
    assert s.get("user:admin:1") == "a1"
    assert user.get("admin:1") == "a1"
    s.put("user:5", 5)
    assert user.get("5") == 5
    assert user.keys() == ["1", "5", "admin:1"]
    assert admin.keys() == ["1"]
    assert user.range_get("") == [("1", "u1"), ("5", 5), ("admin:1", "a1")]
    assert user.range_get("", limit=1) == [("1", "u1")]
    assert user.range_get("a", "b") == [("admin:1", "a1")]
    assert user.range_get("admin:") == [("admin:1", "a1")]
    assert admin.range_get("") == [("1", "a1")]
    assert s.scope("user2").keys() == ["1"]
    assert s.scope("nobody").keys() == []
    assert s.scope("user").scope("admin").get("1") == "a1"
    assert s.scope("user:admin").get("1") == "a1"  # "a:b" is the same as a, then b


def test_deleting_in_one_scope_never_touches_another(harness: Harness) -> None:
    s = harness.make()
    user, team, admin = s.scope("user"), s.scope("team"), s.scope("user").scope("admin")
    for view in (s, user, team, admin):
        view.put("1", view.prefix or "root")
    assert user.delete("1") is True
    assert s.get("1") == "root"
    assert team.get("1") == "team:"
    assert admin.get("1") == "user:admin:"
    assert user.delete("1") is False
    assert team.delete("user:admin:1") is False
    assert admin.get("1") == "user:admin:"
    assert s.delete("team:1") is True
    assert team.keys() == []


def test_scopes_share_data_and_lock(harness: Harness) -> None:
    s = harness.make()
    scope = s.scope("a").scope("b")
    if harness.mode == "sync":
        assert scope.lock is s.lock
        assert s.reader().lock is s.lock
        with s.lock:  # re-entrant: the same thread may use the store while holding it
            scope.put("k", 1)
    else:
        scope.put("k", 1)
    assert s.get("a:b:k") == 1
    with pytest.raises(InvalidKeyError):
        s.scope("")


def test_quoted_scope_names_never_share_keys(harness: Harness) -> None:
    s = harness.make()
    names = ["shop", "shop:eu", "shop%3Aeu", "shop:", ":", "%", "%25", "a\x00b", "\ud800"]
    for index, name in enumerate(names):
        s.scope(quote_scope_name(name)).put("_x", index)
    for index, name in enumerate(names):
        scope = s.scope(quote_scope_name(name))
        assert scope.range_get("") == [("_x", index)]
    assert quote_scope_name("orders-1") == "orders-1"  # plain names are unchanged
    assert s.scope("shop").keys() == ["_x"]  # not shop:eu's key, which is eu:_x unquoted
    for bad in ("", 5, None):
        with pytest.raises(InvalidKeyError):
            quote_scope_name(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------- conditional writes


def test_put_if_is_compare_and_set(harness: Harness) -> None:
    s = harness.make()
    assert s.put_if("k", {"v": 1}) is True  # expected=ABSENT: put if absent
    assert s.put_if("k", {"v": 2}) is False
    assert s.get("k") == {"v": 1}
    assert s.put_if("k", {"v": 2}, expected={"v": 9}) is False
    assert s.put_if("k", {"v": 2}, expected={"v": 1}) is True
    assert s.get("k") == {"v": 2}
    s.put("none", None)  # a stored None is a value, not ABSENT
    assert s.put_if("none", 1) is False
    assert s.put_if("none", 1, expected=None) is True
    assert s.put_if("missing", 1, expected=None) is False
    assert not s.exists("missing")
    assert s.delete_if("k", expected={"v": 1}) is False
    assert s.get("k") == {"v": 2}
    assert s.delete_if("k", expected={"v": 2}) is True
    assert not s.exists("k")
    assert s.delete_if("k", expected=ABSENT) is True  # the test held; nothing to remove
    with pytest.raises(TypeError, match="ABSENT"):
        s.put_if("k", ABSENT)
    with pytest.raises(UnencodableValueError):
        s.put_if("k", {1, 2})
    with pytest.raises(UnencodableValueError):
        s.put_if("k", 1, expected={1, 2})
    assert not s.exists("k")


def test_put_if_fenced_by_another_key(harness: Harness) -> None:
    s = harness.make()
    worker = s.scope("w")
    worker.put("lease", {"owner": "a"})
    assert worker.put_if("n", 1, guard="lease", expected={"owner": "a"}) is True
    assert worker.put_if("n", 2, guard="lease", expected={"owner": "a"}) is True  # any old n
    assert s.get("w:n") == 2
    worker.put("lease", {"owner": "b"})  # another owner took the lease
    assert worker.put_if("n", 3, guard="lease", expected={"owner": "a"}) is False
    assert worker.delete_if("n", guard="lease", expected={"owner": "a"}) is False
    assert worker.get("n") == 2
    assert worker.delete_if("n", guard="lease", expected={"owner": "b"}) is True
    assert not worker.exists("n")
    assert s.put_if("n", 4, guard="lease", expected={"owner": "b"}) is False  # root "lease"
    assert s.put_if("n", 4, guard="w:lease", expected={"owner": "b"}) is True
    assert s.get("n") == 4


def test_an_expired_guard_is_absent(harness: Harness) -> None:
    s = harness.make()
    s.put("lease", "a", ttl=1)
    assert s.put_if("k", 1, guard="lease") is False
    assert s.put_if("k", 1, guard="lease", expected="a") is True
    harness.advance(1.5)
    assert s.put_if("k", 2, guard="lease", expected="a") is False
    assert s.put_if("lease", "b") is True  # put if absent: the expired one does not count
    assert s.put_if("k", 2, guard="lease", expected="b", ttl=1) is True
    assert s.get("k") == 2
    harness.advance(1.5)
    assert s.get("k") is None


def test_put_if_is_atomic_across_threads_and_store_objects(harness: Harness) -> None:
    """4 writers x 150 compare-and-set increments: each success is exactly one step."""
    count = 4
    stores = (
        [harness.make(name="cas") for _ in range(count)]
        if harness.shared_handles
        else [harness.make()] * count
    )
    stores[0].put("n", 0)
    wins = [0] * count

    def work(i: int) -> None:
        store = stores[i]
        while wins[i] < 150:
            current = store.get("n")
            if store.put_if("n", current + 1, expected=current):
                wins[i] += 1

    harness.run_threads(count, work)
    assert stores[0].get("n") == 150 * count


def test_put_many_if_writes_all_or_nothing(harness: Harness) -> None:
    s = harness.make()
    s.put("lease", {"owner": "a"})
    s.put("old", 0)
    s.put("gone", "x")
    mine = {"owner": "a"}
    items = {"n": 1, "m": {"v": [1, 2]}, "gone": ABSENT, "none": None}
    assert s.put_many_if(items, guard="lease", expected=mine) is True
    assert {key: s.get(key, ABSENT) for key in ("n", "m", "gone", "none", "old")} == {
        "n": 1,
        "m": {"v": [1, 2]},
        "gone": ABSENT,
        "none": None,
        "old": 0,
    }
    s.put("lease", {"owner": "b"})  # another owner took the lease: nothing is written
    assert s.put_many_if({"n": 2, "m": 2, "old": ABSENT}, guard="lease", expected=mine) is False
    assert (s.get("n"), s.get("m"), s.get("old")) == (1, {"v": [1, 2]}, 0)
    assert s.put_many_if({"n": 2}, guard="nobody") is True  # expected=ABSENT: held
    assert s.put_many_if({"n": 3}, guard="lease") is False
    assert s.put_many_if({}, guard="lease", expected={"owner": "b"}) is True  # a test only
    assert s.get("n") == 2


def test_put_many_if_with_its_guard_among_the_keys_is_a_compare_and_set(
    harness: Harness,
) -> None:
    s = harness.make()
    assert s.put_many_if({"version": 1, "a": "first", "b": "first"}, guard="version") is True
    assert s.put_many_if({"version": 1, "a": "again"}, guard="version") is False
    assert s.put_many_if({"version": 2, "a": "second"}, guard="version", expected=1) is True
    assert (s.get("version"), s.get("a"), s.get("b")) == (2, "second", "first")


def test_put_many_if_in_a_scope_and_bad_input_write_nothing(harness: Harness) -> None:
    s = harness.make()
    worker = s.scope("w")
    assert worker.put_many_if({"a": 1, "b:c": 2}, guard="lease") is True
    assert s.keys() == ["w:a", "w:b:c"]
    with pytest.raises(UnencodableValueError):
        worker.put_many_if({"a": 5, "z": {1, 2}}, guard="lease")
    with pytest.raises(UnencodableValueError):
        worker.put_many_if({"a": 5}, guard="lease", expected={1, 2})
    with pytest.raises(InvalidKeyError):
        worker.put_many_if({"a": 5, "": 1}, guard="lease")
    with pytest.raises(InvalidKeyError):
        worker.put_many_if({"a": 5}, guard="")
    with pytest.raises(TypeError, match="mapping"):
        worker.put_many_if([("a", 5)], guard="lease")
    assert s.keys() == ["w:a", "w:b:c"]
    assert worker.get("a") == 1


def test_put_many_if_ttl_applies_to_every_value(harness: Harness) -> None:
    s = harness.make()
    assert s.put_many_if({"a": 1, "b": 2}, guard="g", ttl=1) is True
    s.put("c", 3)
    harness.advance(1.5)
    assert s.keys() == ["c"]


def test_put_many_if_is_atomic_across_threads_and_store_objects(harness: Harness) -> None:
    """4 writers x 100 guarded transfers between two keys: every success moves exactly one
    unit, and no write of one transfer lands without the others."""
    count = 4
    stores = (
        [harness.make(name="transfer") for _ in range(count)]
        if harness.shared_handles
        else [harness.make()] * count
    )
    stores[0].put_many_if({"version": 0, "x": 0, "y": 0}, guard="version")
    wins = [0] * count

    def work(i: int) -> None:
        store = stores[i]
        while wins[i] < 100:
            version = store.get("version")
            x, y = store.get("x"), store.get("y")
            items = {"version": version + 1, "x": x - 1, "y": y + 1}
            if store.put_many_if(items, guard="version", expected=version):
                wins[i] += 1

    harness.run_threads(count, work)
    total = 100 * count
    assert [stores[0].get(key) for key in ("version", "x", "y")] == [total, -total, total]


def test_read_only_views_have_no_conditional_writes(harness: Harness) -> None:
    s = harness.make()
    reader = s.reader()
    for verb, args, kwargs in (
        ("put_if", ("a", 1), {}),
        ("delete_if", ("a",), {"expected": ABSENT}),
        ("put_many_if", ({"a": 1},), {"guard": "a"}),
    ):
        assert not hasattr(reader, verb)
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            getattr(reader, verb)(*args, **kwargs)
    assert s.keys() == []


# ------------------------------------------------------------------ read-only


def test_reader_is_a_read_only_view(harness: Harness) -> None:
    s = harness.make()
    reader = s.reader()
    s.put("a", 1)
    s.put("user:1", "u")
    assert reader.get("a") == 1
    assert reader.exists("a")
    assert reader.keys() == ["a", "user:1"]
    assert reader.range_get("user:") == [("user:1", "u")]
    assert reader.get_stats()["backend"] == harness.backend
    for verb, args in (("put", ("a", 2)), ("delete", ("a",)), ("update", ("a", abs))):
        assert not hasattr(reader, verb)
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            getattr(reader, verb)(*args)
    with pytest.raises(AttributeError):  # ReadOnlyStoreError is an AttributeError
        reader.put("a", 3)
    scoped = reader.scope("user")
    assert scoped.get("1") == "u"
    with pytest.raises(ReadOnlyStoreError):
        scoped.put("1", "x")
    with pytest.raises(ReadOnlyStoreError):
        s.scope("user").reader().delete("1")
    assert s.get("a") == 1
    assert s.get("user:1") == "u"


# ---------------------------------------------------------------------- typed


@dataclasses.dataclass
class Address:
    city: str
    postcode: str


@dataclasses.dataclass
class User:
    name: str
    age: int
    address: Address
    tags: list[str] = dataclasses.field(default_factory=list)
    nickname: str | None = None


def test_typed_store_round_trips_dataclasses(harness: Harness) -> None:
    s = harness.make()
    users = harness.typed(s.scope("users"), User)
    ada = User("Ada", 36, Address("London", "N1"), ["math"])
    users.put("ada", ada)
    got = users.get("ada")
    assert got == ada
    assert isinstance(got.address, Address)
    assert s.get("users:ada") == {
        "name": "Ada",
        "age": 36,
        "address": {"city": "London", "postcode": "N1"},
        "tags": ["math"],
        "nickname": None,
    }
    assert users.range_get("") == [("ada", ada)]
    older = users.update("ada", lambda u: dataclasses.replace(u, age=u.age + 1))
    assert older.age == 37
    assert users.get("ada").age == 37
    assert users.get("nobody") is None
    assert users.keys() == ["ada"]


def test_typed_store_refuses_wrong_types_naming_the_key(harness: Harness) -> None:
    s = harness.make()
    users = harness.typed(s, User)
    with pytest.raises(TypeError, match="'bob'"):
        users.put("bob", {"name": "Bob", "age": 1, "address": {"city": "x", "postcode": "y"}})
    assert not s.exists("bob")
    s.put("bad", {"name": "x"})  # written untyped: missing fields
    with pytest.raises(WrongTypeError, match="'bad'"):
        users.get("bad")
    s.put("worse", {"name": "x", "age": "36", "address": {"city": "c", "postcode": "p"}})
    with pytest.raises(TypeError, match=r"'worse'.*\.age"):
        users.get("worse")
    ints = harness.typed(s.scope("n"), int)
    ints.put("a", 1)
    for wrong in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match="'b'"):
            ints.put("b", wrong)
    assert not s.exists("n:b")
    assert ints.update("a", lambda v: v + 1) == 2
    with pytest.raises(TypeError, match="'a'"):
        ints.update("a", str)
    assert ints.get("a") == 2
    assert ints.range_get("") == [("a", 2)]
    pairs = harness.typed(s.scope("p"), tuple[int, str])
    pairs.put("x", (1, "one"))
    assert pairs.get("x") == (1, "one")  # a tuple again, even through JSON


# ------------------------------------------------------------------------ TTL


def test_ttl_expires_entries_on_read(harness: Harness) -> None:
    s = harness.make()
    s.put("short", 1, ttl=0.2)
    s.put("td", 2, ttl=datetime.timedelta(milliseconds=200))
    s.put("long", 3, ttl=60)
    s.put("forever", 4)
    s.update("updated", lambda old: 5, ttl=0.2)
    assert s.keys() == ["forever", "long", "short", "td", "updated"]
    harness.advance(0.4)
    assert s.get("short") is None
    assert not s.exists("td")
    assert s.get("updated") is None
    assert s.get("long") == 3
    assert s.keys() == ["forever", "long"]
    assert [k for k, _ in s.range_get("")] == ["forever", "long"]
    assert s.delete("short") is False
    s.put("short", "again")  # a new entry, without expiry
    harness.advance(0.4)
    assert s.get("short") == "again"


def test_default_ttl(harness: Harness) -> None:
    s = harness.make(default_ttl=0.2)
    s.put("a", 1)
    s.put("b", 2, ttl=60)
    s.scope("x").put("c", 3)
    harness.advance(0.4)
    assert s.get("a") is None
    assert s.get("x:c") is None
    assert s.get("b") == 2


# --------------------------------------------------------- bounds and eviction


def test_max_entries_evicts_least_recently_used(harness: Harness) -> None:
    if not harness.bounded:
        with pytest.raises(ConfigurationError, match="max_entries"):
            harness.make(max_entries=3)
        return
    events: list[tuple[str, Any, str]] = []
    s = harness.make(max_entries=3, on_evict=lambda k, v, r: events.append((k, v, r)))
    s.put("a", 1)
    s.put("b", 2)
    s.put("c", 3)
    assert s.get("a") == 1  # a is now the most recently used
    s.put("d", 4)
    assert events == [("b", 2, "capacity")]
    assert s.keys() == ["a", "c", "d"]
    assert s.exists("c")  # exists, keys and range_get do not count as use
    s.range_get("")
    s.put("e", 5)
    assert events[-1] == ("c", 3, "capacity")
    s.update("a", lambda v: v + 10)  # update counts as use
    s.put("f", 6)
    assert events[-1] == ("d", 4, "capacity")
    assert s.keys() == ["a", "e", "f"]
    assert s.get_stats()["entries"] == 3
    assert s.get_stats()["evicted_capacity"] == 3


def test_a_write_after_a_read_is_the_newest_use(harness: Harness) -> None:
    if not harness.bounded:
        pytest.skip("the redis store has no max_entries")
    events: list[tuple[str, Any, str]] = []
    s = harness.make(max_entries=3, on_evict=lambda k, v, r: events.append((k, v, r)))
    s.put("a", 1)
    s.put("b", 2)
    s.put("c", 3)
    assert s.get("a") == 1
    assert s.get("b") == 2
    s.put("a", 10)  # newer than the read of b: b is now the least recently used
    assert s.get("c") == 3
    s.put("d", 4)
    assert events == [("b", 2, "capacity")]
    assert s.keys() == ["a", "c", "d"]


def test_on_evict_reports_capacity_expired_and_deleted(harness: Harness) -> None:
    if not harness.bounded:
        with pytest.raises(ConfigurationError, match="on_evict"):
            harness.make(on_evict=print)
        return
    events: list[tuple[str, Any, str]] = []
    s = harness.make(max_entries=2, on_evict=lambda k, v, r: events.append((k, v, r)))
    scope = s.scope("u")
    scope.put("x", {"v": 1}, ttl=0.2)
    scope.put("y", 2)
    assert scope.delete("y") is True
    assert events == [("u:y", 2, "deleted")]
    assert s.delete("missing") is False
    harness.advance(0.3)
    assert scope.get("x") is None
    assert events[-1] == ("u:x", {"v": 1}, "expired")
    s.put("p", 1)
    s.put("q", 2)
    s.put("r", 3)
    assert events[-1] == ("p", 1, "capacity")
    assert [reason for _, _, reason in events] == ["deleted", "expired", "capacity"]


def test_a_failing_on_evict_callback_does_not_break_the_store(harness: Harness) -> None:
    if not harness.bounded:
        pytest.skip("the redis store has no on_evict")

    def explode(key: str, value: Any, reason: str) -> None:
        raise RuntimeError("callback failed")

    s = harness.make(max_entries=1, on_evict=explode)
    s.put("a", 1)
    s.put("b", 2)
    assert s.keys() == ["b"]


def test_reaper_reclaims_expired_entries_in_the_background(harness: Harness) -> None:
    if not harness.bounded:
        pytest.skip("redis expires keys itself; the store has no on_evict to observe")
    reclaimed = threading.Event()

    def on_evict(key: str, value: Any, reason: str) -> None:
        if (key, reason) == ("k", "expired"):
            reclaimed.set()

    before = set(threading.enumerate())
    s = harness.make(clock=None, on_evict=on_evict)  # the real clock
    s.put("k", 1, ttl=0.05)
    assert reclaimed.wait(10), "the reaper did not reclaim the expired entry"
    assert s.get_stats()["evicted_expired"] == 1
    reapers = [t for t in set(threading.enumerate()) - before if t.name.endswith("-reaper")]
    assert len(reapers) == 1
    assert reapers[0].daemon
    s.close()
    assert not reapers[0].is_alive(), "close() did not stop the reaper"


def test_close_while_holding_the_lock_does_not_deadlock(harness: Harness) -> None:
    if harness.mode == "async":
        pytest.skip("async stores do not expose the lock")
    s = harness.make(clock=None)
    s.put("k", 1, ttl=30)  # starts the reaper on memory and sqlite
    with s.lock:
        s.close()
    assert s.closed


# ---------------------------------------------------------------- serializers


@pytest.mark.parametrize("serializer", ["json", "pickle", "cloudpickle"])
def test_serializers_round_trip(harness: Harness, serializer: str) -> None:
    s = harness.make(serializer=serializer)
    s.put("plain", {"a": [1, 2.5, None, "x"]})
    assert s.get("plain") == {"a": [1, 2.5, None, "x"]}
    assert s.get_stats()["serializer"] == serializer
    if serializer == "json":
        s.put("tuple", (1, 2))
        assert s.get("tuple") == [1, 2]  # JSON has no tuples
        return
    rich = {"when": datetime.datetime(2024, 1, 2, 3, 4), "set": {1, 2}, "tuple": (1, 2)}
    s.put("rich", rich)
    assert s.get("rich") == rich
    if serializer == "cloudpickle":
        s.put("fn", lambda x: x * 2)
        assert s.get("fn")(21) == 42


@pytest.mark.parametrize("serializer", ["json", "pickle", "cloudpickle"])
def test_unencodable_values_are_refused_and_nothing_is_written(
    harness: Harness, serializer: str
) -> None:
    s = harness.make(serializer=serializer)
    s.put("cfg", {"ok": 1})
    bad = {"ok": 2, "db": {"connection": threading.Lock()}}
    with pytest.raises(SerializationError) as caught:
        s.put("cfg", bad)
    error = caught.value
    assert isinstance(error, UnencodableValueError)
    assert "'cfg'" in str(error)
    assert "['db']['connection']" in str(error)
    assert "lock" in str(error)
    assert (error.key, error.path, error.serializer) == ("cfg", "['db']['connection']", serializer)
    assert s.get("cfg") == {"ok": 1}
    with pytest.raises(SerializationError, match="'u:new'"):
        s.scope("u").put("new", bad)
    assert not s.exists("u:new")
    with socket.socket() as sock, pytest.raises(SerializationError, match=r"\['sock'\]"):
        s.update("cfg", lambda old: {**old, "sock": sock})
    assert s.get("cfg") == {"ok": 1}
    if serializer == "pickle":
        with pytest.raises(SerializationError, match=r"\['f'\]\[1\]"):
            s.put("fn", {"f": [1, lambda: 0]})
    if serializer == "json":
        with pytest.raises(SerializationError, match="set"):
            s.put("set", {1, 2})
    assert s.keys() == ["cfg"]


def test_update_that_raises_writes_nothing(harness: Harness) -> None:
    s = harness.make()
    s.put("n", 1)

    def fail(old: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        s.update("n", fail)
    with pytest.raises(ValueError):
        s.update("fresh", fail)
    assert s.get("n") == 1
    assert not s.exists("fresh")
    assert s.update("fresh", lambda old: [old]) == [None]


# --------------------------------------------------------------------- errors


def test_bad_keys_and_ttls_are_refused(harness: Harness) -> None:
    s = harness.make()
    for key in (1, None, b"bytes", ("t",)):
        with pytest.raises(TypeError):
            s.put(key, "x")
        with pytest.raises(InvalidKeyError):
            s.get(key)
    for key in ("", "a\x00b", "\ud800"):
        with pytest.raises(ValueError):
            s.put(key, "x")
    for ttl in (-1, 0, float("nan"), float("inf"), "10", True, datetime.timedelta(seconds=-1)):
        with pytest.raises(InvalidTTLError):
            s.put("k", "x", ttl=ttl)
    with pytest.raises(ValueError):
        s.range_get("", limit=-1)
    with pytest.raises(TypeError):
        s.range_get(5)
    assert s.keys() == []


def test_unknown_and_bad_options_are_refused(harness: Harness) -> None:
    with pytest.raises(ConfigurationError, match="'colour'") as caught:
        harness.make(colour="red")
    assert "valid options" in str(caught.value)
    assert "default_ttl" in str(caught.value)
    with pytest.raises(ConfigurationError, match="default_ttl"):
        harness.make(default_ttl=-5)
    with pytest.raises(ConfigurationError, match="yaml"):
        harness.make(serializer="yaml")
    if harness.bounded:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ConfigurationError, match="max_entries"):
                harness.make(max_entries=bad)
        with pytest.raises(ConfigurationError, match="on_evict"):
            harness.make(on_evict="print")


# ---------------------------------------------------------------- concurrency


def test_parent_and_scope_written_from_8_threads(harness: Harness) -> None:
    s = harness.make()
    scope = s.scope("job")
    rounds = 60

    def record(i: int, n: int) -> dict[str, Any]:
        return {"writer": i, "n": n, "payload": [i] * 32}

    def work(i: int) -> None:
        view = s if i % 2 == 0 else scope
        for n in range(rounds):
            view.put(f"w{i}:{n}", record(i, n))
            view.put("shared", record(i, n))
            assert view.get(f"w{i}:{n}") == record(i, n)

    harness.run_threads(8, work)
    for i in range(8):
        view = s if i % 2 == 0 else scope
        assert view.keys(f"w{i}:") == sorted(f"w{i}:{n}" for n in range(rounds))
        for n in range(rounds):
            assert view.get(f"w{i}:{n}") == record(i, n)
    for view in (s, scope):
        shared = view.get("shared")
        assert shared["payload"] == [shared["writer"]] * 32  # never torn
    assert len(s.keys("w")) == 4 * rounds
    assert len(scope.keys("w")) == 4 * rounds


def test_update_from_4_workers_loses_nothing(harness: Harness) -> None:
    """4 threads (sync) or 4 tasks (async) x 2,500 increments, half through a scope."""
    s = harness.make()
    scope = s.scope("c")

    def increment(value: Any) -> int:
        return (value or 0) + 1

    if harness.mode == "sync":

        def work(i: int) -> None:
            for _ in range(2500):
                if i % 2:
                    scope.update("n", increment)
                else:
                    s.update("c:n", increment)  # the same key, through the parent

        harness.run_threads(4, work)
    else:
        parent, child = s._target, scope._target

        async def task(i: int) -> None:
            for _ in range(2500):
                if i % 2:
                    await child.update("n", increment)
                else:
                    await parent.update("c:n", increment)

        harness.run_tasks(4, task)
    assert s.get("c:n") == 10_000


def test_update_is_atomic_across_store_objects(harness: Harness) -> None:
    if not harness.shared_handles:
        pytest.skip("two memory stores never share data")
    stores = [harness.make(name="shared") for _ in range(4)]
    harness.run_threads(
        4, lambda i: [stores[i].update("n", lambda v: (v or 0) + 1) for _ in range(250)]
    )
    assert stores[0].get("n") == 1000


# ------------------------------------------------------------ stats, lifecycle


def test_stats(harness: Harness) -> None:
    s = harness.make()
    s.put("a", 1)
    s.put("b", 2)
    assert s.get("a") == 1
    assert s.get("zz") is None
    assert s.delete("b")
    stats = s.get_stats()
    for name in (
        "backend",
        "serializer",
        "entries",
        "hits",
        "misses",
        "puts",
        "deletes",
        "evicted_capacity",
        "evicted_expired",
        "max_entries",
        "default_ttl",
        "prefix",
    ):
        assert name in stats, name
    assert stats["backend"] == harness.backend
    assert (stats["entries"], stats["hits"], stats["misses"]) == (1, 1, 1)
    assert (stats["puts"], stats["deletes"]) == (2, 1)
    assert s.scope("u").get_stats()["prefix"] == "u:"


def test_close_and_context_managers(harness: Harness) -> None:
    s = harness.make()
    scope = s.scope("a")
    reader = s.reader()
    scope.close()  # only detaches the view
    with pytest.raises(StoreClosedError):
        scope.get("x")
    s.put("x", 1)
    s.close()
    s.close()  # harmless
    for view in (s, reader):
        with pytest.raises(StoreClosedError):
            view.get("x")
    with pytest.raises(StoreClosedError):
        s.put("x", 2)
    with harness.make(name="ctx") as store:
        store.put("k", "v")
    with pytest.raises(StoreClosedError):
        store.get("k")
    if harness.shared_handles:  # the data outlives the store object
        with harness.make(name="ctx") as again:
            assert again.get("k") == "v"
