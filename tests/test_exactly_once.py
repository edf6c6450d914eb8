"""Exactly-once state calls: a call with an id is applied once, across retries and restarts.

On Ray every WorkerState call carries an id, and Ray retries a call whose actor process died
with the same arguments. The supervisor answers a known id with the first result; with a
durable store the ids of calls that changed the state are written with the change, so a
supervisor restored from the store after its process died still knows them.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from actorflow import (
    Flow,
    FlowRegistry,
    JobStatus,
    Routine,
    Runtime,
    WorkerLeaseLostError,
    WorkerStateExistsError,
)
from actorflow._lease import WorkerStore
from actorflow.engine.state_owner import StateCall, SupervisorCore
from actorflow.store import Backend, Store, create_store
from actorflow.store.sqlite import SqliteBackend

# ------------------------------------------------------------------ the supervisor itself


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the durable store again, as a restarted process does (the memory store: the
    same object, whose data lives as long as it does)."""
    opened: list[Store] = []
    if request.param == "memory":
        memory = create_store("memory")
        opened.append(memory)

        def again() -> Store:
            return memory

    elif request.param == "sqlite":

        def again() -> Store:
            opened.append(create_store("sqlite", path=str(tmp_path / "state.sqlite3")))
            return opened[-1]

    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"exactly-once:{uuid.uuid4().hex[:8]}:"

        def again() -> Store:
            opened.append(create_store("redis", url=url, key_prefix=prefix))
            return opened[-1]

    yield again
    for store in opened:
        store.close()


def start(
    store: Any,
    *,
    restore: bool = False,
    discard: bool = False,
    owner: str = "runtime-a",
    take_over: bool = False,
    **options: Any,
) -> SupervisorCore:
    """A supervisor of worker ``w`` on ``store``, as a process starts one."""
    core = SupervisorCore("w", store=WorkerStore(store, "w", owner, 15.0, **options))
    core.open_store(restore=restore, discard=discard, take_over=take_over)
    return core


def call(core: SupervisorCore, op: str, key: str, arg: Any = None, extra: Any = None,
         op_id: str | None = None) -> Any:  # fmt: skip
    return core.call_inline(StateCall(op, key, arg, extra, None, op_id))


def snapshot(core: SupervisorCore) -> Any:
    return call(core, "snapshot", "", None)


def add(by: int) -> Callable[[Any], Any]:
    return lambda state: {"x": (state or {"x": 0})["x"] + by}


def test_a_repeated_call_id_is_applied_once_and_gets_the_first_result() -> None:
    core = SupervisorCore("w")  # no store: the ids are remembered in memory only
    assert call(core, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert call(core, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert call(core, "modify", "_m", add(5), op_id="e1#2") == {"x": 5}
    assert call(core, "modify", "_m", add(5), op_id="e1#2") == {"x": 5}
    assert call(core, "increment", "_n", "count", 1, op_id="e2#1") == 2
    assert call(core, "increment", "_n", "count", 1) == 3  # no id: every call applies
    assert call(core, "increment", "_n", "count", 1) == 4
    assert snapshot(core) == {"_n": {"count": 4}, "_m": {"x": 5}}


def test_a_call_retried_after_a_supervisor_restart_is_applied_once(
    reopen: Callable[[], Store],
) -> None:
    """The process dies after a change was stored and before its caller got the answer; the
    restarted supervisor restores the state, and the retried calls (same ids) change nothing
    and get the first results."""
    first = start(reopen())
    call(first, "put", "gone", "soon")  # without an id
    assert call(first, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert call(first, "put", "_p", [1, 2], op_id="e1#2") is None
    assert call(first, "modify", "_m", add(5), op_id="e1#3") == {"x": 5}
    assert call(first, "delete", "gone", op_id="e1#4") is True
    stored = snapshot(first)
    # the process dies: no close_store, the lease stays; Ray restarts it as the same runtime
    again = start(reopen(), restore=True)
    assert snapshot(again) == stored == {"_n": {"count": 1}, "_p": [1, 2], "_m": {"x": 5}}
    assert call(again, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert call(again, "put", "_p", [3], op_id="e1#2") is None
    assert call(again, "modify", "_m", add(5), op_id="e1#3") == {"x": 5}
    assert call(again, "delete", "gone", op_id="e1#4") is True
    assert snapshot(again) == stored
    assert call(again, "increment", "_n", "count", 1, op_id="e2#1") == 2  # a new call applies
    third = start(reopen(), restore=True)
    assert call(third, "increment", "_n", "count", 1, op_id="e2#1") == 2
    assert call(third, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert snapshot(third) == {"_n": {"count": 2}, "_p": [1, 2], "_m": {"x": 5}}


def test_the_stored_ids_are_never_state(reopen: Callable[[], Store]) -> None:
    """Each supervisor below stands for a process that died (no close_store), but for the
    last two."""
    store = reopen()
    core = start(store)
    call(core, "increment", "_n", "count", 1, op_id="e1#1")
    assert sorted(store.keys()) == ["worker:w", "worker:w%applied:0", "worker:w:_n"]
    assert snapshot(core) == {"_n": {"count": 1}}
    again = start(reopen(), restore=True)
    assert snapshot(again) == {"_n": {"count": 1}}
    assert call(again, "delete", "_n", op_id="e2#1") is True
    assert len(reopen().keys("worker:w%applied:")) == 2
    # no state is left, only ids: a start without restore is not refused, and drops them
    fresh = start(reopen())
    assert sorted(reopen().keys()) == ["worker:w"]
    assert call(fresh, "increment", "_n", "count", 1, op_id="e1#1") == 1  # a new run
    with pytest.raises(WorkerStateExistsError, match=r"\(1 key: '_n'\)"):
        start(reopen())
    assert sorted(reopen().keys()) == ["worker:w%applied:0", "worker:w:_n"]  # refused: kept
    start(reopen(), discard=True).close_store()
    assert reopen().keys() == []


def test_a_worker_that_stops_deletes_its_stored_ids_with_its_lease(
    reopen: Callable[[], Store],
) -> None:
    core = start(reopen())
    call(core, "increment", "_n", "count", 1, op_id="e1#1")
    core.close_store()  # the worker stopped: no call of its runtime can come again
    assert reopen().keys() == ["worker:w:_n"]
    again = start(reopen(), restore=True)
    assert call(again, "increment", "_n", "count", 1, op_id="e2#1") == 2
    again.close_store()
    assert reopen().keys() == ["worker:w:_n"]


def test_calls_without_an_id_and_reads_store_no_id(reopen: Callable[[], Store]) -> None:
    store = reopen()
    core = start(store)
    call(core, "increment", "_n", "count", 1)
    call(core, "put", "_p", 1)
    assert call(core, "get", "_n", op_id="r#1") == {"count": 1}
    assert call(core, "snapshot", "", op_id="r#2") == {"_n": {"count": 1}, "_p": 1}
    assert call(core, "delete", "missing", op_id="r#3") is False  # changed nothing
    assert sorted(store.keys()) == ["worker:w", "worker:w:_n", "worker:w:_p"]


class CountingStore:
    """A store whose views count the range reads made through them, by prefix."""

    def __init__(self, inner: Any, reads: Counter[str]) -> None:
        self._inner = inner
        self.reads = reads

    def scope(self, name: str) -> CountingStore:
        return CountingStore(self._inner.scope(name), self.reads)

    def range_get(self, *args: Any, **kwargs: Any) -> Any:
        self.reads[self._inner.prefix] += 1
        return self._inner.range_get(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_restore_reads_the_stored_ids_only_when_a_call_with_an_id_comes(
    reopen: Callable[[], Store],
) -> None:
    """On threads no call has an id: a restore reads the state and nothing more."""
    call(start(reopen()), "increment", "_n", "count", 1, op_id="e1#1")
    reads: Counter[str] = Counter()
    again = start(CountingStore(reopen(), reads), restore=True)
    assert call(again, "increment", "_n", "count", 1) == 2
    assert reads == {"worker:w:": 1}
    assert call(again, "increment", "_n", "count", 1, op_id="e1#1") == 1
    assert call(again, "increment", "_n", "count", 1, op_id="e2#1") == 3
    assert reads == {"worker:w:": 1, "worker:w%applied:": 1}


def test_a_failed_call_is_not_remembered(reopen: Callable[[], Store]) -> None:
    store = reopen()
    core = start(store)
    call(core, "put", "_s", "text")
    for _ in range(2):  # applied again, and fails again: nothing was stored the first time
        with pytest.raises(TypeError, match="needs the state under '_s' to be a dict"):
            call(core, "increment", "_s", "count", 1, op_id="e1#1")
    assert sorted(store.keys()) == ["worker:w", "worker:w:_s"]


def test_a_worker_that_lost_its_lease_stores_neither_state_nor_id(
    reopen: Callable[[], Store],
) -> None:
    old = start(reopen())
    call(old, "increment", "_n", "count", 1, op_id="e1#1")
    new = start(reopen(), restore=True, owner="runtime-b", take_over=True)
    with pytest.raises(WorkerLeaseLostError):
        call(old, "increment", "_n", "count", 1, op_id="e2#1")
    assert call(new, "increment", "_n", "count", 1, op_id="e2#1") == 2  # e2#1 is new here
    assert call(new, "increment", "_n", "count", 1, op_id="e1#1") == 1  # e1#1 is not


def test_the_store_keeps_the_ids_of_the_last_stored_calls_only(
    reopen: Callable[[], Store],
) -> None:
    """The limit: an id older than the last ``stored_calls`` changes is forgotten at a
    restart, and its call, retried, applies again."""
    core = start(reopen(), stored_calls=3)
    for n, op_id in enumerate("abcd", start=1):
        assert call(core, "increment", "_n", "count", 1, op_id=op_id) == n
    assert len(reopen().keys("worker:w%applied:")) == 3
    again = start(reopen(), restore=True, stored_calls=3)
    assert [call(again, "increment", "_n", "count", 1, op_id=i) for i in "dcb"] == [4, 3, 2]
    assert call(again, "increment", "_n", "count", 1, op_id="e") == 5  # replaces b's slot
    third = start(reopen(), restore=True, stored_calls=3)
    assert [call(third, "increment", "_n", "count", 1, op_id=i) for i in "edc"] == [5, 4, 3]
    assert call(third, "increment", "_n", "count", 1, op_id="b") == 6  # forgotten: again
    assert snapshot(third) == {"_n": {"count": 6}}


# --------------------------------------------------------------------------------- Ray


class Signal:
    """A socket on which the test waits for a Ray actor to say it got somewhere (and on
    which that actor can wait for the test's answer)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.server.settimeout(60)

    def wait(self) -> socket.socket:
        """The connection of the actor that said it got there (waits up to 60 s)."""
        connection, _ = self.server.accept()
        connection.settimeout(60)
        assert connection.recv(16) == b"here"
        return connection

    def close(self) -> None:
        self.server.close()


def tell_and_wait(port: int) -> bytes:
    """In an actor: tell the test we got here, and wait for its answer (b"": it hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(b"here")
        connection.settimeout(None)
        return connection.recv(1)


def claim(marker: Path) -> bool:
    """True once: the first process to take ``marker`` away (atomic across processes)."""
    try:
        os.rename(marker, marker.with_suffix(".taken"))
    except FileNotFoundError:
        return False
    return True


class HoldingBackend(Backend):
    """A SQLite backend that stops right after the write that makes the counter reach the
    number in ``<directory>/armed`` has committed: it tells the test, then waits (until the
    test kills its process). Only the first process to see the armed file stops."""

    name = "sqlite"

    def __init__(self, path: str, directory: str, port: int) -> None:
        self.inner = SqliteBackend(path)
        super().__init__(serializer=self.inner.serializer)
        self.lock = self.inner.lock
        self.armed = Path(directory) / "armed"
        self.port = port

    def _written(self, writes: Sequence[tuple[str, bytes | None]]) -> None:
        for key, data in writes:
            if key.endswith(":_count") and data is not None and self.armed.exists():
                target = int(self.armed.read_text())
                if json.loads(data)["n"] == target and claim(self.armed):
                    tell_and_wait(self.port)  # the test kills this process meanwhile

    def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        done = self.inner.write_if(guard, expected, key, data, ttl)
        if done:
            self._written([(key, data)])
        return done

    def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        done = self.inner.write_many_if(guard, expected, writes, ttl)
        if done:
            self._written(writes)
        return done

    def put(self, key: str, data: bytes, ttl: float | None) -> None:
        self.inner.put(key, data, ttl)

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        return self.inner.range(low, high, limit)

    def keys(self, low: str, high: str | None) -> list[str]:
        return self.inner.keys(low, high)

    def update(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        self.inner.update(key, fn, ttl)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def holding_store(path: str, directory: str, port: int) -> Store:
    return Store(HoldingBackend(path, directory, port))


def count_once_per_job(slot_data: dict[str, list[Any]], policy_message: Any, ws: Any) -> None:
    for _ in slot_data["in"]:
        ws.increment("_count", "n")


def counting_flow(flow_id: str, logic: Callable[..., None], concurrency: int = 1) -> None:
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(logic)
    counter.set_concurrency(concurrency)
    flow = Flow(flow_id)
    flow.add_routine(counter, "count")
    FlowRegistry.get_instance().register(flow)


RUNS = 20
JOBS_PER_RUN = 6


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_increments_are_exact_after_a_supervisor_restart_20_runs_in_a_row(
    local_ray: None, tmp_path: Path
) -> None:
    """Each run posts jobs whose routine (two actors) increments a durable counter once, and
    kills the worker's state actor right after one of the increments was written to the
    store and before it was answered, while the others wait for it; Ray restarts the actor
    and retries the call. After every run the counter equals the number of completed jobs."""
    import ray

    counting_flow("counted", count_once_per_job, concurrency=2)
    signal = Signal()
    factory = functools.partial(
        holding_store, str(tmp_path / "state.sqlite3"), str(tmp_path), signal.port
    )
    completed = 0
    try:
        with Runtime(backend="ray", state_store=factory) as runtime:
            state = runtime.exec("counted", worker_id="counted-1")
            for run in range(RUNS):
                held_at = completed + 1 + run % JOBS_PER_RUN  # which increment is held
                (tmp_path / "armed").write_text(str(held_at))
                jobs = [
                    runtime.post("counted", "count", "in", i, worker_id="counted-1")[1]
                    for i in range(JOBS_PER_RUN)
                ]
                held = signal.wait()  # increment held_at is stored, its answer not sent
                ray.kill(runtime._workers["counted-1"].supervisor, no_restart=False)
                held.close()
                assert runtime.wait_until_all_jobs_finished(timeout=60)
                statuses = Counter(job.status for job in jobs)
                assert statuses == {JobStatus.COMPLETED: JOBS_PER_RUN}, [j.error for j in jobs]
                completed += JOBS_PER_RUN
                count = state.get_routine_state("_count")
                assert count == {"n": completed}, f"run {run + 1}: {count} after {completed} jobs"
    finally:
        signal.close()


def count_then_die_once(slot_data: dict[str, list[Any]], policy_message: Any, ws: Any) -> None:
    """Increments, then, on the first delivery only, lets the test restart the state actor
    (if it asks to) and kills its own process: Ray redelivers the message."""
    for item in slot_data["in"]:
        ws.increment("_count", "n")
        if claim(Path(item["marker"])):
            if item["port"] is not None:
                tell_and_wait(item["port"])
            os._exit(1)


@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("supervisor_restarts", [False, True], ids=["alone", "with-supervisor"])
def test_a_message_redelivered_after_its_routine_actor_died_increments_once(
    local_ray: None, tmp_path: Path, supervisor_restarts: bool
) -> None:
    """The routine actor's process dies after its increment was applied; Ray restarts it and
    delivers the message again, whose logic increments again with the same call id. With
    ``with-supervisor``, the state actor's process is also killed and restarted (from the
    store) between the first increment and the redelivery."""
    import ray

    counting_flow("redelivered", count_then_die_once)
    marker = tmp_path / "first-delivery"
    marker.touch()
    signal = Signal() if supervisor_restarts else None
    factory = functools.partial(create_store, "sqlite", path=str(tmp_path / "state.sqlite3"))
    try:
        with Runtime(backend="ray", state_store=factory) as runtime:
            state = runtime.exec("redelivered", worker_id="redelivered-1")
            item = {"marker": str(marker), "port": None if signal is None else signal.port}
            _, job = runtime.post("redelivered", "count", "in", item, worker_id="redelivered-1")
            if signal is not None:
                routine = signal.wait()  # the first increment is applied, the actor waits
                ray.kill(runtime._workers["redelivered-1"].supervisor, no_restart=False)
                assert state.get_routine_state("_count") == {"n": 1}  # the restarted one
                routine.sendall(b"g")  # now the routine actor's process dies
                routine.close()
            assert job.wait(timeout=60)
            assert job.status == JobStatus.COMPLETED, job.error
            assert not marker.exists()  # the first delivery did die
            assert state.get_routine_state("_count") == {"n": 1}
    finally:
        if signal is not None:
            signal.close()
