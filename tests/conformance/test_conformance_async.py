"""Async routines on every backend: ``async def`` logic is awaited on its worker's event loop,
with emits, job data, ``get_current_job()``, error strategies, timeouts, cancellation,
supervision and concurrency as for called logic, on every backend (on Ray, tasks on an event
loop inside the routine's actor)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from _waiting import wait_until
from conformance_kit import Backend, make_routine, register

from actorflow import (
    ActorCrash,
    ErrorStrategy,
    JobStatus,
    Routine,
    get_current_job,
)


async def _append(state: Any, key: str, value: Any) -> None:
    await state.aio.modify_routine_state(key, lambda old: [*(old or []), value])


def test_async_logic_runs_and_its_emits_job_data_and_current_job_arrive(
    backend: Backend,
) -> None:
    async def fetch(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        await asyncio.sleep(0.01)
        assert get_current_job() is job  # the same job after an await
        job.set_data("fetched", slot_data["in"][0])
        routines["fetch"].emit("out", value=slot_data["in"][0] * 10)

    def store(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("stored", slot_data["in"][0]["value"])

    routines = {
        "fetch": make_routine(fetch, events=["out"]),
        "store": make_routine(store),
    }
    register("io", routines, [("fetch", "out", "store", "in")])
    with backend.runtime() as runtime:
        jobs = [runtime.post("io", "fetch", "in", n)[1] for n in range(3)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    assert [dict(job.data) for job in jobs] == [{"fetched": n, "stored": n * 10} for n in range(3)]


def test_sync_and_async_routines_mix_in_one_flow(backend: Backend) -> None:
    def parse(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        routines["parse"].emit("out", n=int(slot_data["in"][0]))

    async def enrich(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        await asyncio.sleep(0)
        routines["enrich"].emit("out", n=slot_data["in"][0]["n"] + 1)

    def total(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("total", "sum", slot_data["in"][0]["n"])

    routines = {
        "parse": make_routine(parse, events=["out"]),
        "enrich": make_routine(enrich, events=["out"]),
        "total": make_routine(total),
    }
    register(
        "mixed", routines, [("parse", "out", "enrich", "in"), ("enrich", "out", "total", "in")]
    )
    with backend.runtime() as runtime:
        state = runtime.exec("mixed", worker_id="w")
        for text in ("1", "2", "3"):
            runtime.post("mixed", "parse", "in", text)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("total") == {"sum": 2 + 3 + 4}
        assert runtime.metrics()["routines"]["w"]["enrich"]["handled"] == 3


def test_retry_with_backoff_reruns_async_logic(backend: Backend) -> None:
    async def call(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        tries = await state.aio.increment("call", "tries")
        await asyncio.sleep(0.01)
        if tries < 3:
            raise ConnectionError(f"try {tries} refused")

    strategy = ErrorStrategy.RETRY(max_retries=3, delay=0.05, backoff=2.0)
    register("retrying", {"call": make_routine(call, strategy=strategy)})
    with backend.runtime() as runtime:
        state = runtime.exec("retrying", worker_id="w")
        _, job = runtime.post("retrying", "call", "in", 1)
        assert job.wait(backend.wait)
        assert state.get_routine_state("call") == {"tries": 3}
        metrics = runtime.metrics()["routines"]["w"]["call"]
    assert job.status == JobStatus.COMPLETED
    retries = [entry["details"] for entry in job.trace_log if entry["action"] == "retry"]
    assert [(d["attempt"], d["delay"], d["error"]) for d in retries] == [
        (1, 0.05, "ConnectionError: try 1 refused"),
        (2, 0.1, "ConnectionError: try 2 refused"),
    ]
    assert (metrics["handled"], metrics["failed"], metrics["retried"]) == (1, 2, 2)


def test_a_job_timeout_cancels_the_awaiting_task_and_its_emits_become_dead_letters(
    backend: Backend,
) -> None:
    async def slow(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if slot_data["in"][0] == "quick":
            return
        routines["slow"].emit("out", early=True)
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            job = get_current_job()
            assert job is not None
            job.set_data("saw", "CancelledError")
            raise

    routines = {
        "slow": make_routine(slow, events=["out"]),
        "next": make_routine(lambda sd, m, ws: None),
    }
    register("timing-out", routines, [("slow", "out", "next", "in")])
    with backend.runtime() as runtime:
        _, job = runtime.post("timing-out", "slow", "in", 1, job_id="slow-job", timeout=0.2)
        assert job.wait(backend.wait)
        # one message at a time: this one runs only once the timed-out job's task has ended
        _, quick = runtime.post("timing-out", "slow", "in", "quick")
        assert quick.wait(backend.wait)
        assert quick.status == JobStatus.COMPLETED
    assert job.status == JobStatus.FAILED
    assert job.error == "JobTimeoutError: job 'slow-job' timed out after 0.2 s"
    assert job.data["saw"] == "CancelledError"
    letters = [(d["job_id"], d["routine_id"], d["reason"]) for d in runtime.dead_letters()]
    assert letters == [("slow-job", "next", "job failed")]


def test_cancelling_a_job_cancels_its_awaiting_task(backend: Backend) -> None:
    gate = backend.gate()

    async def wait_forever(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        if slot_data["in"][0] == "quick":
            return
        gate.block()  # the test cancels the job here
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            job.set_data("saw", "CancelledError")
            raise
        job.set_data("finished", True)

    register("cancelling", {"wait": make_routine(wait_forever)})
    with backend.runtime() as runtime:
        _, job = runtime.post("cancelling", "wait", "in", "a")
        gate.during(lambda: runtime.cancel_job(job.job_id))
        assert job.wait(backend.wait)
        # one message at a time: this one runs only once the cancelled job's task has ended
        _, quick = runtime.post("cancelling", "wait", "in", "quick")
        assert quick.wait(backend.wait)
        assert quick.status == JobStatus.COMPLETED
    assert gate.result() is True
    assert job.status == JobStatus.CANCELLED
    assert dict(job.data) == {"saw": "CancelledError"}


def test_an_actor_crash_in_async_logic_restarts_it_and_loses_no_queued_message(
    backend: Backend,
) -> None:
    async def printer(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        page = slot_data["in"][0]
        await asyncio.sleep(0.01)  # the pages after it wait in the mailbox
        if page == 3:
            raise ActorCrash("paper jam")
        await _append(state, "printed", page)

    register("printing-async", {"printer": make_routine(printer)})
    with backend.runtime() as runtime:
        state = runtime.exec("printing-async", worker_id="w")
        jobs = [runtime.post("printing-async", "printer", "in", n)[1] for n in range(1, 7)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("printed") == [1, 2, 4, 5, 6]  # in order, none lost
        assert runtime.metrics()["workers"]["w"]["restarts"] == 1
    assert [job.status.value for job in jobs] == [
        "completed", "completed", "failed", "completed", "completed", "completed"
    ]  # fmt: skip
    assert jobs[2].error == "ActorCrash: paper jam (routine actor crashed)"


def test_concurrency_n_runs_n_messages_at_once_on_the_loop(backend: Backend) -> None:
    width = 5
    all_in = asyncio.Event()
    inside = [0]

    async def call(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        inside[0] += 1
        if inside[0] == width:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)  # only if `width` tasks are in at once
        await _append(state, "seen", inside[0])
        inside[0] -= 1

    register("wide", {"call": make_routine(call, concurrency=width)})
    with backend.runtime() as runtime:
        state = runtime.exec("wide", worker_id="w")
        jobs = [runtime.post("wide", "call", "in", n)[1] for n in range(width)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert [job.status for job in jobs] == [JobStatus.COMPLETED] * width
        # each saw all `width` in (those before it may have left once their call returned)
        seen = state.get_routine_state("seen")
        assert len(seen) == width and seen[0] == width


def test_the_messages_of_one_job_run_one_at_a_time_in_order(backend: Backend) -> None:
    def split(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for part in range(4):
            routines["split"].emit("out", part=part)

    async def handle(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        part = slot_data["in"][0]["part"]
        job = get_current_job()
        assert job is not None
        await asyncio.sleep(0.01 * (4 - part))  # later parts would overtake earlier ones
        await _append(state, job.job_id, part)

    routines = {
        "split": make_routine(split, events=["out"]),
        "handle": make_routine(handle, concurrency=8),
    }
    register("ordered", routines, [("split", "out", "handle", "in")])
    with backend.runtime() as runtime:
        state = runtime.exec("ordered", worker_id="w")
        jobs = [runtime.post("ordered", "split", "in", n, job_id=f"j{n}")[1] for n in range(3)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        orders = {job.job_id: state.get_routine_state(job.job_id) for job in jobs}
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    assert orders == {f"j{n}": [0, 1, 2, 3] for n in range(3)}


def test_an_async_routine_handles_one_message_at_a_time_by_default(backend: Backend) -> None:
    inside = [0]

    async def call(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        inside[0] += 1
        await _append(state, "inside", inside[0])
        await asyncio.sleep(0.01)  # another task would get in here
        inside[0] -= 1

    register("narrow", {"call": make_routine(call)})
    with backend.runtime() as runtime:
        state = runtime.exec("narrow", worker_id="w")
        for n in range(5):
            runtime.post("narrow", "call", "in", n)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("inside") == [1] * 5


def test_awaitable_state_calls_are_atomic(backend: Backend) -> None:
    async def count(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for _ in range(4):
            await state.aio.increment("count", "n")
            await asyncio.sleep(0)

    register("counting", {"count": make_routine(count, concurrency=50)})
    with backend.runtime() as runtime:
        state = runtime.exec("counting", worker_id="w")
        for n in range(50):
            runtime.post("counting", "count", "in", n)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("count") == {"n": 200}


def test_plain_state_calls_from_async_logic_work(backend: Backend) -> None:
    async def count(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        await asyncio.sleep(0)
        state.increment("count", "n")  # the plain form: it holds the loop, and works

    register("plain-state", {"count": make_routine(count, concurrency=4)})
    with backend.runtime() as runtime:
        state = runtime.exec("plain-state", worker_id="w")
        for n in range(20):
            runtime.post("plain-state", "count", "in", n)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("count") == {"n": 20}


def test_shutdown_awaits_the_tasks_in_flight(backend: Backend) -> None:
    async def call(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        await asyncio.sleep(0.05)
        job = get_current_job()
        assert job is not None
        job.set_data("done", slot_data["in"][0])

    register("draining", {"call": make_routine(call, concurrency=3)})
    with backend.runtime() as runtime:
        jobs = [runtime.post("draining", "call", "in", n)[1] for n in range(6)]
        assert runtime.shutdown(timeout=backend.wait) is True
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 6
    assert [job.data["done"] for job in jobs] == list(range(6))


def test_shutdown_cancels_the_tasks_still_in_flight_at_its_timeout(backend: Backend) -> None:
    async def hang(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        try:
            await state.aio.increment("hang", "started")
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            job.set_data("saw", "CancelledError")
            raise

    register("hanging", {"hang": make_routine(hang, concurrency=2)})
    with backend.runtime() as runtime:
        state = runtime.exec("hanging", worker_id="w")
        jobs = [runtime.post("hanging", "hang", "in", n)[1] for n in range(3)]
        backend.settle(runtime)
        # the two tasks must be running when the timeout runs out (on Ray they start in another
        # process, which a busy machine can delay by seconds)
        wait_until(
            lambda: state.get_routine_state("hang") == {"started": 2},
            "both tasks to start",
            backend.wait,
        )
        # on Ray the timeout is also the time the actors have to stop before they are killed
        # (docs/ray.md), in which the cancelled tasks must end and their data be reported
        assert runtime.shutdown(timeout=2.0 if backend.is_ray else 0.2) is False
    assert [job.status for job in jobs] == [JobStatus.CANCELLED] * 3
    assert [job.error for job in jobs] == ["cancelled: runtime shut down"] * 3
    # the two in flight saw their cancellation; the third, queued behind them, either never
    # started (a dead letter) or started as a slot freed and was cancelled in turn
    assert [job.data.get("saw") for job in jobs[:2]] == ["CancelledError", "CancelledError"]
    letters = [(d["job_id"], d["routine_id"]) for d in runtime.dead_letters()]
    if jobs[2].data.get("saw") is None:
        assert letters == [(jobs[2].job_id, "hang")]
    else:
        assert jobs[2].data["saw"] == "CancelledError"
        assert letters == []


class _Stage(Routine):
    """Records which incarnation of its actor (a new one per ``on_start``) handled each
    message, under its own state key; crashes on ``"crash"``. Plain or async logic."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")
        self.incarnation = ""

    def on_start(self) -> None:
        self.incarnation = uuid.uuid4().hex

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if slot_data["in"][0] == "crash":
            raise ActorCrash(f"{self.routine_id} lost its connection")
        assert self.routine_id is not None
        state.modify_routine_state(self.routine_id, lambda old: [*(old or []), self.incarnation])


class _AsyncStage(_Stage):
    async def logic(  # type: ignore[override]
        self, slot_data: dict[str, list[Any]], message: Any, state: Any
    ) -> None:
        await asyncio.sleep(0)
        if slot_data["in"][0] == "crash":
            raise ActorCrash(f"{self.routine_id} lost its connection")
        assert self.routine_id is not None
        await _append(state, self.routine_id, self.incarnation)


@pytest.mark.parametrize(
    ("strategy", "crashing", "restarted"),
    [
        pytest.param("one_for_all", "plain", ["fetch", "plain"], id="one_for_all"),
        pytest.param("one_for_one", "fetch", ["fetch"], id="one_for_one-async-crash"),
        pytest.param("rest_for_one", "plain", ["fetch", "plain"], id="rest_for_one"),
    ],
)
def test_supervision_restarts_async_routines_like_plain_ones(
    backend: Backend, strategy: str, crashing: str, restarted: list[str]
) -> None:
    flow = register("supervised", {"plain": _Stage(), "fetch": _AsyncStage()})
    flow.set_supervision(strategy)
    names = ("plain", "fetch")
    with backend.runtime() as runtime:
        state = runtime.exec("supervised", worker_id="w")
        before = [runtime.post("supervised", name, "in", "ok")[1] for name in names]
        assert all(job.wait(backend.wait) for job in before)
        _, crashed = runtime.post("supervised", crashing, "in", "crash")
        assert crashed.wait(backend.wait)
        after = [runtime.post("supervised", name, "in", "ok")[1] for name in names]
        assert all(job.wait(backend.wait) for job in after)
        incarnations = {name: state.get_routine_state(name) for name in names}
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
    assert crashed.error == f"ActorCrash: {crashing} lost its connection (routine actor crashed)"
    assert [job.status for job in after] == [JobStatus.COMPLETED] * 2
    assert all(len(seen) == 2 for seen in incarnations.values()), incarnations
    assert restarts == 1
    assert sorted(name for name, seen in incarnations.items() if seen[0] != seen[1]) == restarted


def test_a_state_call_that_raises_in_async_logic_raises_its_own_error(backend: Backend) -> None:
    """``await state.aio...`` that the state owner refuses raises the owner's own error in the
    logic (on Ray, not Ray's wrapper of it)."""

    async def count(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        try:
            await state.aio.increment("_words", "n")
        except TypeError as exc:
            job.set_data("caught", f"{type(exc).__name__}: {exc}")
            raise

    register("refused-async", {"count": make_routine(count)})
    with backend.runtime() as runtime:
        state = runtime.exec("refused-async", worker_id="w")
        state.update_routine_state("_words", {"n": "text"})
        _, job = runtime.post("refused-async", "count", "in", 1, worker_id="w")
        assert job.wait(backend.wait)
    message = "TypeError: increment: '_words'['n'] is a str, not a number"
    assert job.data["caught"] == message
    assert job.status == JobStatus.FAILED and job.error == message
