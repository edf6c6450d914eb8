"""Durable state is never deleted or mixed up by accident.

* a start without ``restore=True`` never destroys what is stored for the worker id;
* no two worker ids share a key in the store, whatever characters they hold;
* two runtimes never run one worker id on one store at once: the worker's lease refuses the
  second start, ends when its owner's process is killed (after its duration), and can be taken
  over at once on purpose, after which the old owner's state calls are refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _waiting import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import (
    ConfigurationError,
    Flow,
    FlowRegistry,
    InvalidDurationError,
    Routine,
    Runtime,
    WorkerLeaseHeldError,
    WorkerLeaseLostError,
    WorkerStateExistsError,
)
from actorflow.store import create_store

ROOT = Path(__file__).resolve().parents[2]


def counter_flow(flow_id: str = "count") -> None:
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda slot_data, message, state: state.increment("_c", "n"))
    flow = Flow(flow_id)
    flow.add_routine(counter, "counter")
    FlowRegistry.get_instance().register(flow)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made = (
        create_store("memory")
        if request.param == "memory"
        else create_store("sqlite", path=str(tmp_path / "state.sqlite3"), synchronous="normal")
    )
    with made:
        yield made


# -- a start never destroys stored state ------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_exec_without_restore_never_destroys_stored_state(store: Any, strict: bool) -> None:
    counter_flow()
    with Runtime(state_store=store, strict=strict) as runtime:
        runtime.exec("count", worker_id="orders-1").update_routine_state("_x", {"n": 7})
    with Runtime(state_store=store, strict=strict) as runtime:
        with pytest.raises(WorkerStateExistsError, match=r"restore=True.*discard_stored=True"):
            runtime.exec("count", worker_id="orders-1")
        assert store.get("worker:orders-1:_x") == {"n": 7}  # untouched
        assert runtime.get_worker("orders-1") is None  # and nothing started
        restored = runtime.exec("count", worker_id="orders-1", restore=True)
        assert restored.snapshot() == {"_x": {"n": 7}}
    assert store.keys() == ["worker:orders-1:_x"]  # the lease went with the worker


def test_a_default_worker_started_by_post_never_destroys_stored_state(store: Any) -> None:
    counter_flow()
    with Runtime(state_store=store) as runtime:
        _, job = runtime.post("count", "counter", "in", 1)
        assert job.wait(10)
        worker_id = job.worker_id
    assert store.get(f"worker:{worker_id}:_c") == {"n": 1}
    with Runtime(state_store=store) as runtime:  # the next run generates the same id
        with pytest.raises(WorkerStateExistsError, match=repr(worker_id)):
            runtime.post("count", "counter", "in", 2)
    assert store.get(f"worker:{worker_id}:_c") == {"n": 1}


def test_discarding_stored_state_is_explicit(store: Any) -> None:
    counter_flow()
    with Runtime(state_store=store) as runtime:
        runtime.exec("count", worker_id="w").update_routine_state("_x", 1)
    with Runtime(state_store=store) as runtime:
        with pytest.raises(ConfigurationError, match="contradict"):
            runtime.exec("count", worker_id="w", restore=True, discard_stored=True)
        assert store.get("worker:w:_x") == 1
        state = runtime.exec("count", worker_id="w", discard_stored=True)
        assert state.snapshot() == {}
        assert store.keys("worker:w:") == []
        state.update_routine_state("_y", 2)
    with Runtime() as runtime:
        for name in ("discard_stored", "take_over"):
            with pytest.raises(ConfigurationError, match=f"{name}=True needs"):
                runtime.exec("count", worker_id="w", **{name: True})


def test_a_worker_id_with_nothing_stored_starts_as_before(store: Any) -> None:
    counter_flow()
    with Runtime(state_store=store) as runtime:
        assert runtime.exec("count", worker_id="fresh").snapshot() == {}
    with Runtime(state_store=store, deterministic=True) as runtime:  # no timer thread there
        state = runtime.exec("count", worker_id="fresh-too")
        runtime.post("count", "counter", "in", 1, worker_id="fresh-too")
        runtime.run_until_idle()
        assert state.get_routine_state("_c") == {"n": 1}
    assert store.keys() == ["worker:fresh-too:_c"]


# -- worker ids never share keys -----------------------------------------------------------


def test_worker_shop_and_shop_eu_never_share_keys(store: Any) -> None:
    counter_flow()
    with Runtime(state_store=store) as runtime:
        runtime.exec("count", worker_id="shop:eu").update_routine_state("_x", "eu")
    with Runtime(state_store=store) as runtime:
        assert runtime.exec("count", worker_id="shop", restore=True).snapshot() == {}
    with Runtime(state_store=store) as runtime:
        runtime.exec("count", worker_id="shop")  # nothing of its own: starts, deletes nothing
        runtime.exec("count", worker_id="shop:eu", restore=True).update_routine_state("_y", 2)
    with Runtime(state_store=store) as runtime:
        eu = runtime.exec("count", worker_id="shop:eu", restore=True)
        assert eu.snapshot() == {"_x": "eu", "_y": 2}


ID_CHARS = st.sampled_from([":", "%", "3", "A", "a", "2", "5", "\x00", "\ud800", "é", "-"])
WORKER_IDS = st.lists(
    st.text(ID_CHARS, min_size=1, max_size=6) | st.text(min_size=1, max_size=6),
    min_size=2,
    max_size=4,
    unique=True,
)
STATE_KEYS = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=5
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(worker_ids=WORKER_IDS, keys=st.lists(STATE_KEYS, min_size=1, max_size=3, unique=True))
def test_no_two_worker_ids_share_a_key(worker_ids: list[str], keys: list[str]) -> None:
    counter_flow()
    with create_store("memory") as store:
        written = {
            worker_id: {key: [index, key] for key in keys}
            for index, worker_id in enumerate(worker_ids)
        }
        with Runtime(state_store=store, strict=False) as runtime:
            for worker_id, state in written.items():
                handle = runtime.exec("count", worker_id=worker_id)
                for key, value in state.items():
                    handle.update_routine_state(key, value)
        with Runtime(state_store=store, strict=False) as runtime:
            for worker_id, state in written.items():
                restored = runtime.exec("count", worker_id=worker_id, restore=True)
                assert restored.snapshot() == state
        with Runtime(state_store=store, strict=False) as runtime:
            for worker_id in worker_ids:  # each one finds its own state, and only its own
                with pytest.raises(WorkerStateExistsError, match=f"{len(keys)} key"):
                    runtime.exec("count", worker_id=worker_id)


# -- two runtimes, one worker id -----------------------------------------------------------


def two_runtimes_count_to_200(make_store: Callable[[], Any]) -> None:
    counter_flow()
    stores = [make_store(), make_store()]
    runtimes = [Runtime(state_store=s) for s in stores]
    handles, refused = [], []
    try:
        for runtime in runtimes:
            try:
                handles.append(runtime.exec("count", worker_id="w", restore=True))
            except WorkerLeaseHeldError as exc:
                refused.append(exc)
        acknowledged = [0, 0]

        def increment(thread: int) -> None:
            handle = handles[thread % len(handles)]
            for _ in range(100):
                handle.increment("_c", "n")
                acknowledged[thread] += 1

        threads = [threading.Thread(target=increment, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        assert sum(acknowledged) == 200
    finally:
        for runtime in runtimes:
            runtime.shutdown()
        for s in stores:
            s.close()
    with make_store() as check, Runtime(state_store=check) as runtime:
        restored = runtime.exec("count", worker_id="w", restore=True)
        assert restored.get_routine_state("_c") == {"n": 200}
    assert len(refused) == 1
    assert "take_over=True" in str(refused[0])


def test_two_runtimes_on_one_sqlite_file_never_lose_an_increment(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    two_runtimes_count_to_200(lambda: create_store("sqlite", path=path, synchronous="normal"))


@pytest.mark.redis
def test_two_runtimes_on_one_redis_never_lose_an_increment(redis_url: str) -> None:
    prefix = f"shared-{uuid.uuid4().hex[:8]}:"
    two_runtimes_count_to_200(lambda: create_store("redis", url=redis_url, key_prefix=prefix))


def test_a_worker_that_lost_its_lease_stops_writing(tmp_path: Path) -> None:
    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    with (
        create_store("sqlite", path=path) as first_store,
        create_store("sqlite", path=path) as second_store,
        Runtime(state_store=first_store) as first,
        Runtime(state_store=second_store) as second,
    ):
        old = first.exec("count", worker_id="w")
        old.increment("_c", "n")
        new = second.exec("count", worker_id="w", restore=True, take_over=True)
        assert new.get_routine_state("_c") == {"n": 1}
        with pytest.raises(WorkerLeaseLostError, match=r"lost its lease.*holds it now"):
            old.increment("_c", "n")  # the write is fenced: it never reaches the store
        with pytest.raises(WorkerLeaseLostError, match=r"lost its lease.*holds it now"):
            old.get_routine_state("_c")  # and its state is no longer its own, for the same reason
        _, job = first.post("count", "counter", "in", 1, worker_id="w")
        job.wait(10)
        assert job.status == "failed"
        assert "WorkerLeaseLostError" in (job.error or "")
        assert second_store.get("worker:w:_c") == {"n": 1}
        first.shutdown()  # stopping the old worker leaves the new owner's lease alone
        new.increment("_c", "n")
        assert second_store.get("worker:w:_c") == {"n": 2}


def test_a_renewal_finds_the_lost_lease_without_a_write(tmp_path: Path) -> None:
    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    with (
        create_store("sqlite", path=path) as first_store,
        create_store("sqlite", path=path) as second_store,
        Runtime(state_store=first_store, lease_seconds=0.3) as first,
        Runtime(state_store=second_store) as second,
    ):
        old = first.exec("count", worker_id="w")
        second.exec("count", worker_id="w", take_over=True, discard_stored=True)

        def refused() -> bool:
            try:
                old.get_routine_state("_c")  # a read: no write found the loss
            except WorkerLeaseLostError:
                return True
            return False

        wait_until(refused, "the old owner's next renewal to find the lease taken", timeout=10)


def test_a_running_worker_renews_its_lease(tmp_path: Path) -> None:
    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    with (
        create_store("sqlite", path=path) as first_store,
        create_store("sqlite", path=path) as second_store,
        Runtime(state_store=first_store, lease_seconds=0.3) as first,
        Runtime(state_store=second_store) as second,
    ):
        first.exec("count", worker_id="w")
        taken = second_store.get("worker:w")
        assert taken["owner"] == first.lease_owner

        def renewed_lease() -> Any:
            lease = second_store.get("worker:w")
            return lease if lease["expires_at"] > taken["expires_at"] + 1 else None

        renewed = wait_until(
            renewed_lease, "the lease to be renewed beyond 3 durations", timeout=10
        )
        assert renewed["owner"] == first.lease_owner
        with pytest.raises(WorkerLeaseHeldError):
            second.exec("count", worker_id="w")
        first.shutdown()
        assert not second_store.exists("worker:w")  # released when the worker stopped
        assert second.exec("count", worker_id="w").snapshot() == {}


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 1e300])
def test_lease_seconds_is_checked(bad: float) -> None:
    with pytest.raises(InvalidDurationError, match="lease_seconds"):
        Runtime(lease_seconds=bad)
    with pytest.raises(TypeError, match="lease_seconds"):
        Runtime(lease_seconds="15")  # type: ignore[arg-type]


# -- an owner killed with SIGKILL -------------------------------------------------------------

OWNER = textwrap.dedent(
    """
    import sys
    from actorflow import Flow, FlowRegistry, Routine, Runtime
    from actorflow.store import create_store

    path, lease = sys.argv[1], float(sys.argv[2])
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda sd, m, ws: ws.increment("_c", "n"))
    flow = Flow("count")
    flow.add_routine(counter, "counter")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(state_store=create_store("sqlite", path=path), lease_seconds=lease)
    state = runtime.exec("count", worker_id="w")
    for _ in range(25):
        state.increment("_c", "n")
    print("ready", flush=True)
    sys.stdin.readline()  # runs (and renews its lease) until killed
    """
)


def killed_owner(path: str, lease_seconds: float) -> None:
    """Start an owner of worker "w" in another process, then kill it with SIGKILL."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, path, str(lease_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line == "ready\n", owner.stderr.read() if owner.stderr else line
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(30)
    assert owner.returncode == -signal.SIGKILL


@pytest.mark.timeout(90)
def test_a_killed_owners_worker_is_taken_over_when_its_lease_ends(tmp_path: Path) -> None:
    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    killed_owner(path, lease_seconds=3)
    with create_store("sqlite", path=path) as store, Runtime(state_store=store) as runtime:
        lease = store.get("worker:w")  # left behind by the killed owner
        with pytest.raises(
            WorkerLeaseHeldError,
            match=r"owned by runtime '.*': that runtime holds the worker's lease",
        ):
            runtime.exec("count", worker_id="w", restore=True)

        def started() -> Any:
            try:
                return runtime.exec("count", worker_id="w", restore=True)
            except WorkerLeaseHeldError:
                return None

        state = wait_until(started, "the killed owner's lease to end", timeout=30)
        assert time.time() >= lease["expires_at"]  # not a moment before it ended
        assert state.get_routine_state("_c") == {"n": 25}
        state.increment("_c", "n")
    with create_store("sqlite", path=path) as store:
        assert store.get("worker:w:_c") == {"n": 26}
        assert not store.exists("worker:w")  # released at shutdown


@pytest.mark.timeout(90)
def test_a_killed_owners_worker_is_taken_over_at_once_on_purpose(tmp_path: Path) -> None:
    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    killed_owner(path, lease_seconds=600)
    with create_store("sqlite", path=path) as store, Runtime(state_store=store) as runtime:
        with pytest.raises(WorkerLeaseHeldError, match=r"ends in (59\d|600)\.\d s"):
            runtime.exec("count", worker_id="w", restore=True)
        state = runtime.exec("count", worker_id="w", restore=True, take_over=True)
        assert state.get_routine_state("_c") == {"n": 25}


# -- the Ray backend: the same rules, by the same code ----------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ray_supervisor_keeps_the_same_rules(local_ray: None, tmp_path: Path) -> None:
    import functools

    counter_flow()
    path = str(tmp_path / "state.sqlite3")
    factory = functools.partial(create_store, "sqlite", path=path)
    with Runtime(backend="ray", state_store=factory) as runtime:
        runtime.exec("count", worker_id="w").increment("_c", "n")
        with create_store("sqlite", path=path) as store, Runtime(state_store=store) as other:
            with pytest.raises(WorkerLeaseHeldError):
                other.exec("count", worker_id="w", restore=True)
    with Runtime(backend="ray", state_store=factory) as runtime:
        with pytest.raises(WorkerStateExistsError):
            runtime.exec("count", worker_id="w")
        assert runtime.exec("count", worker_id="w", restore=True).get_routine_state("_c") == {
            "n": 1
        }
    with create_store("sqlite", path=path) as store:
        assert store.keys() == ["worker:w:_c"]  # leases released at shutdown
