"""WorkerState: owned by the supervisor, so updates are atomic, isolated, serializable, bounded."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from typing import Any

import pytest
from _waiting import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import (
    ConfigurationError,
    Flow,
    FlowRegistry,
    JobStatus,
    Routine,
    Runtime,
    RuntimeClosedError,
    StateAccessError,
    StateLimitError,
    StateLimits,
    StateSerializationError,
)
from actorflow._clock import Clock
from actorflow._lease import WorkerStore
from actorflow.engine.state_owner import StateCall, SupervisorCore
from actorflow.store import create_store


def routine(logic: Any, *, events: tuple[str, ...] = (), concurrency: int = 1) -> Routine:
    r = Routine()
    r.add_slot("in")
    for event in events:
        r.add_event(event)
    r.set_logic(logic)
    r.set_concurrency(concurrency)
    return r


def fan_out_counter_flow(flow_id: str, counters: int, concurrency: int = 1) -> None:
    source = routine(lambda sd, m, ws: source.emit("out", n=sd["in"][0]), events=("out",))
    flow = Flow(flow_id)
    flow.add_routine(source, "source")
    for i in range(counters):
        flow.add_routine(
            routine(lambda sd, m, ws: ws.increment("_shared", "count"), concurrency=concurrency),
            f"counter{i}",
        )
        flow.connect("source", "out", f"counter{i}", "in")
    FlowRegistry.get_instance().register(flow)


class WatchedTurn:
    """A stand-in for a supervisor's turn (its lock) that shows who contends for it.

    ``refused`` counts the calls that found the turn taken and went to the supervisor's
    mailbox instead (:meth:`SupervisorCore.apply_now`); ``waiting`` is set once a thread
    blocks for it (the supervisor's own thread, with a call in hand). With ``inline=False``
    every call is refused the inline path, so every call goes through the mailbox, in order.
    """

    def __init__(self, inline: bool = True, on_wait: Any = None) -> None:
        self._lock = threading.Lock()
        self.inline = inline
        self.refused: list[int] = []  # one entry per refusal (list.append is atomic)
        self.waiting = threading.Event()
        self._on_wait = on_wait

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not blocking:
            if self.inline and self._lock.acquire(False):
                return True
            self.refused.append(1)
            return False
        if self._lock.acquire(False):
            return True
        self.waiting.set()
        if self._on_wait is not None:
            self._on_wait()
        return self._lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def watch_turn(runtime: Runtime, worker_id: str, turn: WatchedTurn) -> Any:
    """Put ``turn`` in place of the worker's supervisor turn (while nothing holds it)."""
    worker = runtime._workers[worker_id]
    worker.supervisor_core.turn = turn
    return worker


def test_four_routines_5000_jobs_lose_no_increment() -> None:
    fan_out_counter_flow("race", counters=4)
    with Runtime() as runtime:
        state = runtime.exec("race")
        for i in range(5000):
            runtime.post("race", "source", "in", i)
        assert runtime.wait_until_all_jobs_finished(timeout=50)
        assert state.get_routine_state("_shared") == {"count": 20_000}
        assert all(j.status == JobStatus.COMPLETED for j in runtime.list_jobs())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counters=st.integers(1, 4),
    concurrency=st.integers(1, 4),
    jobs=st.integers(1, 400),
    outside=st.integers(0, 50),
)
def test_atomic_updates_hold_for_any_routine_count_and_concurrency(
    counters: int, concurrency: int, jobs: int, outside: int
) -> None:
    FlowRegistry.get_instance().clear()
    fan_out_counter_flow("race", counters=counters, concurrency=concurrency)
    with Runtime() as runtime:
        state = runtime.exec("race", worker_id="w")
        bumper = threading.Thread(
            target=lambda: [
                state.modify_routine_state(
                    "_shared", lambda s: {**(s or {}), "count": (s or {}).get("count", 0) + 1}
                )
                for _ in range(outside)
            ]
        )
        # The supervisor is busy until every caller (each counter actor with a message, and
        # the bumper) has made its first call: those calls meet, whatever the scheduling.
        turn = WatchedTurn(inline=False)
        worker = watch_turn(runtime, "w", turn)
        callers = counters * min(concurrency, jobs) + (1 if outside else 0)
        turn.acquire()
        try:
            bumper.start()
            for i in range(jobs):
                runtime.post("race", "source", "in", i)
            wait_until(
                lambda: turn.waiting.is_set() and worker._supervisor_mailbox.qsize() == callers - 1,
                f"{callers} state calls waiting for the supervisor",
            )
        finally:
            turn.release()
        bumper.join()
        assert runtime.wait_until_all_jobs_finished(timeout=50)
        assert state.get_routine_state("_shared")["count"] == counters * jobs + outside


def test_concurrency_k_runs_k_actors_behind_one_mailbox() -> None:
    threads: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(3, timeout=10)

    def slow(sd: Any, m: Any, ws: Any) -> None:
        with lock:
            threads.add(threading.get_ident())
        if sd["in"][0] < 3:
            barrier.wait()  # only passes if three actors run at the same time

    flow = Flow("parallel")
    flow.add_routine(routine(slow, concurrency=3), "slow")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        jobs = [runtime.post("parallel", "slow", "in", i)[1] for i in range(30)]
        assert runtime.wait_until_all_jobs_finished(timeout=10)
    assert all(j.status == JobStatus.COMPLETED for j in jobs)
    assert len(threads) == 3


def test_reads_are_copies_and_state_outlives_jobs(runtime: Runtime) -> None:
    flow = Flow("copies")
    flow.add_routine(routine(lambda sd, m, ws: ws.increment("r", "seen")), "r")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("copies")
    state.update_routine_state("_cfg", {"items": [1]})
    got = state.get_routine_state("_cfg")
    got["items"].append(2)
    assert state.get_routine_state("_cfg") == {"items": [1]}
    for i in range(3):
        assert runtime.post("copies", "r", "in", i)[1].wait(10)
    assert state.get_routine_state("r") == {"seen": 3}
    assert state.routine_states == {"_cfg": {"items": [1]}, "r": {"seen": 3}}
    assert json.loads(json.dumps(state.snapshot())) == state.snapshot()
    assert (
        state.delete_routine_state("_cfg") is True and state.delete_routine_state("_cfg") is False
    )
    assert state.modify_routine_state("x", lambda old: (old or 0) + 5) == 5
    with pytest.raises(TypeError, match="not a number"):
        state.update_routine_state("y", {"n": "text"}) or state.increment("y", "n")


def test_two_workers_of_one_flow_never_share_state(runtime: Runtime) -> None:
    flow = Flow("two")
    flow.add_routine(routine(lambda sd, m, ws: ws.increment("r", "n")), "r")
    FlowRegistry.get_instance().register(flow)
    a = runtime.exec("two", worker_id="a")
    b = runtime.exec("two", worker_id="b")
    for _ in range(3):
        runtime.post("two", "r", "in", 1, worker_id="a")
    runtime.post("two", "r", "in", 1, worker_id="b")
    assert runtime.wait_until_all_jobs_finished(10)
    assert a.get_routine_state("r") == {"n": 3}
    assert b.get_routine_state("r") == {"n": 1}


def test_isolation_errors_name_both_routines_unless_granted(runtime: Runtime) -> None:
    outcomes: dict[str, str] = {}

    def probe(name: str, action: Any) -> Any:
        def logic(sd: Any, m: Any, ws: Any) -> None:
            try:
                action(ws)
                outcomes[name] = "ok"
            except StateAccessError as exc:
                outcomes[name] = str(exc)

        return logic

    flow = Flow("iso")
    flow.add_routine(
        routine(probe("read_other", lambda ws: ws.get_routine_state("owner"))), "reader"
    )
    flow.add_routine(
        routine(probe("write_other", lambda ws: ws.update_routine_state("owner", 1))), "writer"
    )
    flow.add_routine(
        routine(probe("granted_read", lambda ws: ws.get_routine_state("owner"))), "friend"
    )
    flow.add_routine(
        routine(probe("granted_write_denied", lambda ws: ws.update_routine_state("owner", 2))),
        "friend2",
    )
    flow.add_routine(
        routine(
            probe(
                "shared",
                lambda ws: (
                    ws.update_routine_state("_shared", 1),
                    ws.update_routine_state("free_key", 1),
                ),
            )
        ),
        "sharer",
    )
    flow.add_routine(routine(probe("own", lambda ws: ws.update_routine_state("owner", 3))), "owner")
    flow.grant_state_access("friend", "owner")
    flow.grant_state_access("friend2", "owner", write=False)
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("iso")
    for rid in ("reader", "writer", "friend", "friend2", "sharer", "owner"):
        assert runtime.post("iso", rid, "in", None)[1].wait(10)
    assert "'reader' may not read the state of routine 'owner'" in outcomes["read_other"]
    assert "'writer' may not write the state of routine 'owner'" in outcomes["write_other"]
    assert outcomes["granted_read"] == "ok"
    assert "may not write" in outcomes["granted_write_denied"]
    assert outcomes["shared"] == "ok" and outcomes["own"] == "ok"
    state.update_routine_state("reader", {"outside": True})  # the exec holder has full access
    assert state.get_routine_state("owner") == 3


def test_routine_states_inside_a_routine_shows_only_what_it_may_read(runtime: Runtime) -> None:
    seen: list[dict[str, Any]] = []
    flow = Flow("visible")
    flow.add_routine(routine(lambda sd, m, ws: seen.append(ws.routine_states)), "a")
    flow.add_routine(routine(lambda sd, m, ws: None), "b")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("visible")
    for key in ("a", "b", "_shared", "other"):
        state.update_routine_state(key, key)
    assert runtime.post("visible", "a", "in", None)[1].wait(10)
    assert seen == [{"a": "a", "_shared": "_shared", "other": "other"}]


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        ({"conn": sqlite3.connect(":memory:")}, "db['conn']", "Connection"),
        ({"nested": [1, {"lock": threading.Lock()}]}, "db['nested'][1]['lock']", "lock"),
        ({"fn": lambda x: x}, "db['fn']", "function"),
        ({"sock": socket.socket()}, "db['sock']", "socket"),
    ],
)
def test_unserializable_state_is_refused_naming_path_and_type(
    runtime: Runtime, value: Any, path: str, type_name: str
) -> None:
    flow = Flow("ser")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("ser")
    with pytest.raises(StateSerializationError) as info:
        state.update_routine_state("db", value)
    assert path in str(info.value) and type_name in str(info.value)
    assert state.get_routine_state("db") is None
    with pytest.raises(StateSerializationError):
        state.modify_routine_state("db", lambda old: value)
    assert state.get_routine_state("db") is None
    if "sock" in value:
        value["sock"].close()


def test_state_limits_refuse_oversized_updates() -> None:
    flow = Flow("limits")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(state_limits=StateLimits(max_key_bytes=100, max_total_bytes=150)) as runtime:
        state = runtime.exec("limits")
        state.update_routine_state("a", "x" * 80)
        with pytest.raises(StateLimitError, match="limit per key is 100"):
            state.update_routine_state("b", "x" * 200)
        with pytest.raises(StateLimitError, match="limit for the worker is 150"):
            state.update_routine_state("b", "x" * 90)
        assert state.get_routine_state("b") is None
        state.update_routine_state("a", "x" * 10)  # replacing frees room
        state.update_routine_state("b", "x" * 90)
        small = runtime.exec("limits", worker_id="small", state_limits=StateLimits(max_key_bytes=5))
        with pytest.raises(StateLimitError):
            small.update_routine_state("a", "x" * 10)
    with pytest.raises(ConfigurationError):
        StateLimits(max_key_bytes=0)


class ManualClock(Clock):
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_cache_is_bounded_lru_and_expires_on_read() -> None:
    flow = Flow("cache")
    flow.add_routine(
        routine(lambda sd, m, ws: ws.cache("users", max_entries=2).put(sd["in"][0], 1)), "r"
    )
    FlowRegistry.get_instance().register(flow)
    clock = ManualClock()
    with Runtime(clock=clock) as runtime:
        state = runtime.exec("cache")
        cache = state.cache("users", max_entries=2)
        cache.put("a", {"name": "A"})
        cache.put("b", {"name": "B"})
        assert cache.get("a") == {"name": "A"}  # a is now most recently used
        cache.put("c", {"name": "C"})
        assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
        assert runtime.post("cache", "r", "in", "d")[1].wait(10)
        assert len(state.cache("users", max_entries=2)) == 2
        with pytest.raises(ConfigurationError, match="already exists"):
            state.cache("users", max_entries=3)
        timed = state.cache("sessions", max_entries=10, ttl=30)
        timed.put("s", 1)
        clock.now += 29
        assert timed.get("s") == 1
        clock.now += 2
        assert timed.get("s", "gone") == "gone" and len(timed) == 0
        with pytest.raises(StateSerializationError):
            timed.put("bad", threading.Lock())
        with pytest.raises(ConfigurationError):
            state.cache("bad", max_entries=0)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_a_call_that_finds_the_supervisor_busy_waits_for_its_turn(strict: bool) -> None:
    applied, moved = threading.Event(), threading.Event()

    def count(sd: Any, m: Any, ws: Any) -> None:
        ws.increment("_shared", "n")
        applied.set()
        moved.set()

    flow = Flow("turns")
    flow.add_routine(routine(count), "count")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=strict) as runtime:
        state = runtime.exec("turns", worker_id="w")
        state.increment("_shared", "n")  # the supervisor is idle: applied on this thread
        turn = WatchedTurn(on_wait=moved.set)
        watch_turn(runtime, "w", turn)
        turn.acquire()  # as if the supervisor were applying a long call
        try:
            _, job = runtime.post("turns", "count", "in", 1)
            assert moved.wait(10)  # the call was applied, or it waits for the turn
            assert not applied.is_set(), "a state call ran while the supervisor was busy"
            assert turn.refused and not job.done  # it found the turn taken, and waits
        finally:
            turn.release()
        assert job.wait(10) and job.status == "completed"
        assert state.get_routine_state("_shared") == {"n": 2}


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_increments_made_together_are_each_applied(strict: bool) -> None:
    """Four routines increment one counter while the supervisor is busy: the four calls wait
    together, so all four are made before any is applied. An increment that read the value
    and wrote it back in two calls would lose three of them here, every time."""
    fan_out_counter_flow("race", counters=4)
    with Runtime(strict=strict) as runtime:
        state = runtime.exec("race", worker_id="w")
        turn = WatchedTurn(inline=False)  # every call goes through the mailbox, in order
        worker = watch_turn(runtime, "w", turn)
        turn.acquire()
        try:
            _, job = runtime.post("race", "source", "in", 1)
            # one call is in the supervisor's hands (waiting for the turn), three in its mailbox
            wait_until(
                lambda: turn.waiting.is_set() and worker._supervisor_mailbox.qsize() == 3,
                "four state calls waiting for the supervisor",
            )
            assert not job.done
        finally:
            turn.release()
        assert job.wait(10) and job.status == "completed", job.error
        assert state.get_routine_state("_shared") == {"count": 4}


def test_the_state_of_a_stopped_worker_says_which_worker_and_why_it_is_refused() -> None:
    flow = Flow("stopped_state")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        state = runtime.exec("stopped_state", worker_id="w")
    with pytest.raises(
        RuntimeClosedError, match=r"^worker 'w' is stopped; its state can no longer be used$"
    ):
        state.get_routine_state("anything")


def test_increment_of_a_field_that_is_no_number_names_the_key_the_field_and_its_type(
    runtime: Runtime,
) -> None:
    flow = Flow("not_a_number")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("not_a_number")
    state.update_routine_state("y", {"n": "text"})
    with pytest.raises(TypeError, match=r"^increment: 'y'\['n'\] is a str, not a number$"):
        state.increment("y", "n")
    assert state.get_routine_state("y") == {"n": "text"}


@pytest.mark.parametrize(
    ("start", "by", "field", "problem"),
    [
        (2**64 - 1, 1, "n", "integer does not fit in 64 bits"),
        (1.5e308, 1.5e308, "n", "JSON has no NaN or infinity"),
        (0, 1, 7, "JSON object keys must be str"),
    ],
    ids=["past 64 bits", "to infinity", "a field that is no str"],
)
@pytest.mark.parametrize("after_an_increment", [False, True], ids=["stored", "kept decoded"])
def test_an_increment_json_cannot_hold_is_refused_and_changes_nothing(
    runtime: Runtime, start: Any, by: Any, field: Any, problem: str, after_an_increment: bool
) -> None:
    """An increment re-checks only the number it wrote (the rest of the value was checked when
    it was stored), and a value only increments changed is kept decoded until it is read: on
    both ways the check still refuses what JSON cannot hold."""
    flow = Flow("numbers")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("numbers")
    state.update_routine_state("x", {"n": start})
    if after_an_increment:
        assert state.increment("x", "n", 0) == start
    with pytest.raises(StateSerializationError) as info:
        state.increment("x", field, by)
    assert problem in str(info.value.__cause__)  # the serializer's reason
    assert state.get_routine_state("x") == {"n": start}


def test_values_changed_by_increments_read_modify_delete_and_snapshot_as_stored_ones(
    runtime: Runtime,
) -> None:
    flow = Flow("kept_decoded")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("kept_decoded")
    state.update_routine_state("x", {"n": 1, "tags": ["a"]})
    assert [state.increment("x", "n") for _ in range(3)] == [2, 3, 4]
    assert state.increment("x", "m", 0.5) == 0.5
    read = state.get_routine_state("x")
    assert read == {"n": 4, "tags": ["a"], "m": 0.5}
    read["n"] = 100  # a copy: nothing changes
    assert state.increment("x", "n") == 5
    assert state.snapshot()["x"] == {"n": 5, "tags": ["a"], "m": 0.5}
    assert state.modify_routine_state("x", lambda old: {**old, "n": old["n"] * 10})["n"] == 50
    assert state.increment("x", "n") == 51
    assert state.delete_routine_state("x") is True
    assert state.get_routine_state("x") is None
    assert state.increment("x", "n") == 1
    state.update_routine_state("x", {"n": 7})
    assert state.increment("x", "n") == 8
    # a key first written by an increment keeps its place in the order keys were written
    assert state.increment("first", "n") == 1
    state.update_routine_state("second", {"n": 2})
    assert list(state.snapshot()) == ["x", "first", "second"]


def test_the_total_limit_counts_every_byte_of_a_new_key() -> None:
    """A str of n characters takes n + 2 bytes (JSON quotes it): a new key one byte over
    the worker's limit is refused, one that fills it exactly is not."""
    flow = Flow("total")
    flow.add_routine(routine(lambda sd, m, ws: None), "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(state_limits=StateLimits(max_total_bytes=20)) as runtime:
        state = runtime.exec("total")
        with pytest.raises(StateLimitError, match=r"would take 21 bytes with 'b'"):
            state.update_routine_state("b", "x" * 19)
        state.update_routine_state("a", "x" * 8)  # 10 bytes
        with pytest.raises(StateLimitError, match=r"would take 21 bytes with 'b'"):
            state.update_routine_state("b", "x" * 9)
        state.update_routine_state("b", "x" * 8)  # exactly 20 bytes in all
        assert state.routine_states == {"a": "x" * 8, "b": "x" * 8}


def state_call(
    core: SupervisorCore, op: str, key: str, arg: Any = None, extra: Any = None,
    op_id: str | None = None,
) -> Any:  # fmt: skip
    """One state call applied by ``core`` as a Ray state owner applies it (no reply)."""
    return core.call_inline(StateCall(op, key, arg, extra, None, op_id))


def test_a_supervisor_without_a_clock_bounds_its_ttl_caches() -> None:
    """The state owner on Ray has no runtime clock (its TTL caches use real time); a cache
    with a TTL still keeps at most max_entries, evicting the least recently used."""
    core = SupervisorCore("w")
    state_call(core, "cache_open", "sessions", 2, 60.0)
    for key in ("a", "b", "c"):
        state_call(core, "cache_put", "sessions", key, {"k": key})
    assert state_call(core, "cache_len", "sessions") == 2
    assert state_call(core, "cache_get", "sessions", "a", "gone") == "gone"
    assert state_call(core, "cache_get", "sessions", "c") == {"k": "c"}


def test_a_call_with_an_id_is_applied_once_also_by_a_restored_supervisor() -> None:
    """Calls carry ids only on Ray (a call retried after its actor died comes with the same
    id), so the supervisor is driven here as the Ray state owner drives it."""
    store = create_store("memory")
    try:
        first = SupervisorCore("w", store=WorkerStore(store, "w", "runtime-a", 15.0))
        first.open_store()
        assert state_call(first, "increment", "_n", "count", 1, op_id="e1#1") == 1
        assert state_call(first, "increment", "_n", "count", 1, op_id="e1#1") == 1
        assert state_call(first, "get", "_n") == {"count": 1}
        # its process dies; the restarted one restores the state and the applied ids
        again = SupervisorCore("w", store=WorkerStore(store, "w", "runtime-a", 15.0))
        again.open_store(restore=True)
        assert state_call(again, "increment", "_n", "count", 1, op_id="e1#1") == 1
        assert state_call(again, "increment", "_n", "count", 1, op_id="e2#1") == 2
        assert state_call(again, "get", "_n") == {"count": 2}
    finally:
        store.close()
