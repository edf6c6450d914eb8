"""Jobs through the runtime: completion, failure, waiting, cancellation, shutdown, bad input."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

import pytest
from _waiting import wait_until, waiting_inside
from flows import pipeline
from loguru import logger

from actorflow import (
    ActorCrash,
    Flow,
    FlowRegistry,
    FlowValidationError,
    JobStatus,
    QueueFullError,
    Routine,
    Runtime,
    RuntimeClosedError,
    UnknownFlowError,
    get_current_job,
)
from actorflow._clock import Clock
from actorflow.engine import worker_core
from actorflow.logging import disable_logging, enable_logging
from actorflow.store import create_store
from actorflow.testing import DeterministicRuntime


def single(flow_id: str, logic: Any, *, events: tuple[str, ...] = ("out",)) -> Flow:
    routine = Routine()
    routine.add_slot("in")
    for event in events:
        routine.add_event(event)
    routine.set_logic(logic)
    flow = Flow(flow_id)
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)
    return flow


def test_pipeline_jobs_complete_with_data_of_every_routine(runtime: Runtime) -> None:
    pipeline("pipe", 3)
    jobs = [runtime.post("pipe", "r0", "in", {"value": i})[1] for i in range(50)]
    assert runtime.wait_until_all_jobs_finished(timeout=10)
    for job in jobs:
        assert job.status == JobStatus.COMPLETED
        assert job.data["path"] == ["r0", "r1", "r2"]
        assert job.completed_at is not None and job.completed_at >= job.created_at


def test_job_is_pending_until_first_message_is_handled(runtime: Runtime) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        entered.set()
        assert gate.wait(10)

    single("gated", logic)
    _, first = runtime.post("gated", "only", "in", 1)
    assert entered.wait(10)
    _, second = runtime.post("gated", "only", "in", 2)
    assert first.status == JobStatus.RUNNING
    assert second.status == JobStatus.PENDING  # queued behind the first message
    gate.set()
    assert second.wait(10)
    assert second.status == JobStatus.COMPLETED


def test_logic_error_fails_the_job_with_traceback_and_worker_goes_on(runtime: Runtime) -> None:
    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        if slot_data["in"][0] == "bad":
            raise KeyError("missing thing")

    single("fails", logic)
    _, bad = runtime.post("fails", "only", "in", "bad")
    _, good = runtime.post("fails", "only", "in", "good")
    assert bad.wait(10) and good.wait(10)
    assert bad.status == JobStatus.FAILED
    assert bad.error == "KeyError: 'missing thing'"
    failure = [e for e in bad.trace_log if e["action"] == "failed"]
    assert failure and "Traceback" in failure[0]["details"]["traceback"]
    assert failure[0]["routine_id"] == "only"
    assert good.status == JobStatus.COMPLETED


def test_failed_job_runs_none_of_its_remaining_messages(runtime: Runtime) -> None:
    """A job fails in one branch while its message waits in another routine's mailbox."""
    gate = threading.Event()
    ran: list[Any] = []
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: source.emit("out", n=sd["in"][0]))
    boom = Routine()
    boom.add_slot("in")

    def explode(sd: Any, m: Any, ws: Any) -> None:
        if sd["in"][0]["n"] == "bad":
            raise RuntimeError("bad input")

    boom.set_logic(explode)
    slow = Routine()
    slow.add_slot("in")

    def hold(sd: Any, m: Any, ws: Any) -> None:
        ran.append(sd["in"][0]["n"])
        if sd["in"][0]["n"] == "first":
            assert gate.wait(10)

    slow.set_logic(hold)
    flow = Flow("partial")
    flow.add_routine(source, "source")
    flow.add_routine(boom, "boom")
    flow.add_routine(slow, "slow")
    flow.connect("source", "out", "slow", "in")
    flow.connect("source", "out", "boom", "in")
    FlowRegistry.get_instance().register(flow)
    _, first = runtime.post("partial", "source", "in", "first")
    _, bad = runtime.post("partial", "source", "in", "bad")
    assert bad.wait(10)  # failed while its message for "slow" still waits behind "first"
    gate.set()
    assert first.wait(10)
    runtime.shutdown()
    assert bad.status == JobStatus.FAILED and first.status == JobStatus.COMPLETED
    assert ran == ["first"]
    assert [(d["job_id"], d["routine_id"], d["reason"]) for d in runtime.dead_letters()] == [
        (bad.job_id, "slow", "job failed")
    ]


def test_a_failed_logic_call_delivers_none_of_its_emits(runtime: Runtime) -> None:
    ran: list[str] = []
    first = Routine()
    first.add_slot("in")
    first.add_event("out")

    def fan(slot_data: Any, msg: Any, ws: Any) -> None:
        for i in range(5):
            first.emit("out", i=i)
        raise RuntimeError("after emitting")

    first.set_logic(fan)
    second = Routine()
    second.add_slot("in")
    second.set_logic(lambda sd, m, ws: ran.append("second"))
    flow = Flow("allornothing")
    flow.add_routine(first, "first")
    flow.add_routine(second, "second")
    flow.connect("first", "out", "second", "in")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("allornothing", "first", "in", {})
    assert job.wait(10)
    runtime.shutdown()
    assert job.status == JobStatus.FAILED
    assert ran == []


def test_emitting_undeclared_event_fails_that_job_only(runtime: Runtime) -> None:
    routine_ref: list[Routine] = []

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        routine_ref[0].emit("nope" if slot_data["in"][0] else "out", x=1)

    flow = single("undeclared", logic)
    routine_ref.append(flow.get_routine("only"))
    _, bad = runtime.post("undeclared", "only", "in", True)
    _, good = runtime.post("undeclared", "only", "in", False)
    assert bad.wait(10) and good.wait(10)
    assert bad.status == JobStatus.FAILED and "nope" in (bad.error or "")
    assert good.status == JobStatus.COMPLETED  # an event with no connections is a no-op


def test_emit_outside_logic_is_an_error() -> None:
    routine = Routine()
    routine.add_event("out")
    with pytest.raises(RuntimeError, match="outside routine logic"):
        routine.emit("out", x=1)


def test_get_current_job_is_none_outside_logic(runtime: Runtime) -> None:
    seen: list[Any] = []
    single("current", lambda sd, m, ws: seen.append(get_current_job().job_id))  # type: ignore[union-attr]
    assert get_current_job() is None
    _, job = runtime.post("current", "only", "in", 1)
    assert job.wait(10)
    assert seen == [job.job_id]
    assert get_current_job() is None


def test_get_job_and_list_jobs(runtime: Runtime) -> None:
    pipeline("pipe", 2)
    _, job = runtime.post("pipe", "r0", "in", {"value": 1}, job_id="custom-1")
    assert job.job_id == "custom-1"
    assert job.wait(10)
    fetched = runtime.get_job("custom-1")
    assert fetched is not None and fetched.status == "completed"
    assert runtime.get_job("unknown") is None
    assert [j.job_id for j in runtime.list_jobs("completed")] == ["custom-1"]
    assert runtime.list_jobs(JobStatus.FAILED) == []
    with pytest.raises(ValueError, match="already exists"):
        runtime.post("pipe", "r0", "in", {}, job_id="custom-1")
    with pytest.raises(ValueError):
        runtime.list_jobs("bogus")


def test_bad_input_raises_at_once_and_posts_nothing(runtime: Runtime) -> None:
    pipeline("pipe", 2)
    with pytest.raises(UnknownFlowError, match="nope"):
        runtime.post("nope", "r0", "in", {})
    with pytest.raises(FlowValidationError, match="'ghost'"):
        runtime.post("pipe", "ghost", "in", {})
    with pytest.raises(FlowValidationError, match="'wrong'"):
        runtime.post("pipe", "r0", "wrong", {})
    with pytest.raises(TypeError):
        runtime.post("pipe", "r0", "in", {}, metadata=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no worker"):
        runtime.post("pipe", "r0", "in", {}, worker_id="ghost-worker")
    assert runtime.list_jobs() == []


def test_post_after_shutdown_raises(runtime: Runtime) -> None:
    pipeline("pipe", 2)
    runtime.shutdown()
    with pytest.raises(RuntimeClosedError):
        runtime.post("pipe", "r0", "in", {})
    with pytest.raises(RuntimeClosedError):
        runtime.exec("pipe")
    assert runtime.list_jobs() == []


def test_cancel_job_stops_it_before_it_runs(runtime: Runtime) -> None:
    gate = threading.Event()
    entered = threading.Event()
    ran: list[int] = []

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        ran.append(slot_data["in"][0])
        entered.set()
        assert gate.wait(10)

    single("cancel", logic)
    runtime.post("cancel", "only", "in", 1)
    assert entered.wait(10)
    _, queued = runtime.post("cancel", "only", "in", 2)
    assert runtime.cancel_job(queued.job_id) is True
    assert runtime.cancel_job(queued.job_id) is False
    gate.set()
    assert runtime.wait_until_all_jobs_finished(10)
    assert queued.status == JobStatus.CANCELLED
    assert ran == [1]
    assert any(d["job_id"] == queued.job_id for d in runtime.dead_letters())


def test_shutdown_without_wait_cancels_running_jobs() -> None:
    gate = threading.Event()
    entered = threading.Event()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        entered.set()
        gate.wait(10)

    single("slow", logic)
    runtime = Runtime()
    _, running = runtime.post("slow", "only", "in", 1)
    _, queued = runtime.post("slow", "only", "in", 2)
    assert entered.wait(10)
    stopper = threading.Thread(target=runtime.shutdown, kwargs={"wait": False})
    stopper.start()
    # shutdown cancels both at once, then waits for the routine actor to stop
    assert running.wait(10) and queued.wait(10)
    assert running.status == JobStatus.CANCELLED and queued.status == JobStatus.CANCELLED
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("actorflow-")]


def test_shutdown_with_timeout_cancels_what_is_left() -> None:
    gate = threading.Event()
    single("stuck", lambda sd, m, ws: gate.wait(10))
    runtime = Runtime()
    _, job = runtime.post("stuck", "only", "in", 1)
    # the routine is let go only once the shutdown has cancelled its job (the shutdown then
    # waits for the actor to stop): nothing but the shutdown's timeout can end the job
    releaser = threading.Thread(target=lambda: job.wait(10) and gate.set())
    releaser.start()
    assert runtime.shutdown(wait=True, timeout=0.05) is False
    releaser.join(10)
    assert job.status == JobStatus.CANCELLED
    assert job.error == "cancelled: runtime shut down"


def left_in_the_mailbox(strict: bool, deterministic: bool) -> tuple[list[Any], Runtime]:
    """Three jobs whose messages are still in routine "only"'s mailbox when the runtime shuts
    down without waiting: in a deterministic runtime, nothing was delivered yet; on threads,
    the routine's actor crashed and its successor waits out a 30 s restart backoff."""

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        if slot_data["in"][0] == "crash":
            raise ActorCrash("the successor starts in 30 s")

    flow = single("stranded", logic)
    flow.set_supervision(backoff_base=30.0, backoff_max=30.0)
    if deterministic:
        runtime: Runtime = DeterministicRuntime(seed=1, strict=strict)
    else:
        runtime = Runtime(strict=strict)
        _, crashed = runtime.post("stranded", "only", "in", "crash")
        assert crashed.wait(10) and crashed.status == JobStatus.FAILED  # no actor until +30 s
    jobs = [runtime.post("stranded", "only", "in", n)[1] for n in range(3)]
    runtime.shutdown(wait=False)
    return jobs, runtime


@pytest.mark.parametrize("deterministic", [False, True], ids=["threads", "deterministic"])
@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_messages_left_in_a_mailbox_when_its_worker_stops_are_dead_letters(
    strict: bool, deterministic: bool
) -> None:
    jobs, runtime = left_in_the_mailbox(strict, deterministic)
    assert [job.status for job in jobs] == [JobStatus.CANCELLED] * 3
    assert [(d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()] == [
        ("only", "in", "worker stopped")
    ] * 3
    if not strict:  # see the next test
        assert [d["job_id"] for d in runtime.dead_letters()] == [job.job_id for job in jobs]


@pytest.mark.parametrize("deterministic", [False, True], ids=["threads", "deterministic"])
def test_a_sealed_message_left_in_a_mailbox_is_a_dead_letter_of_its_job(
    deterministic: bool,
) -> None:
    jobs, runtime = left_in_the_mailbox(True, deterministic)
    assert [d["job_id"] for d in runtime.dead_letters()] == [job.job_id for job in jobs]


def test_context_manager_waits_for_jobs() -> None:
    pipeline("pipe", 3)
    with Runtime() as runtime:
        jobs = [runtime.post("pipe", "r0", "in", {"value": i})[1] for i in range(20)]
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    assert not [t for t in threading.enumerate() if t.name.startswith("actorflow-")]


def test_exec_and_workers(runtime: Runtime) -> None:
    pipeline("pipe", 2)
    first = runtime.exec("pipe")
    second = runtime.exec("pipe", worker_id="w2")
    assert first.status == "running" and second.worker_id == "w2"
    with pytest.raises(ValueError, match="already running"):
        runtime.exec("pipe", worker_id="w2")
    state, job = runtime.post("pipe", "r0", "in", {"value": 1})
    assert state.worker_id == first.worker_id == job.worker_id
    state2, job2 = runtime.post("pipe", "r0", "in", {"value": 1}, worker_id="w2")
    assert state2.worker_id == "w2" == job2.worker_id
    runtime.shutdown()
    assert first.status == "stopped"
    with pytest.raises(RuntimeClosedError):
        first.get_routine_state("r0")


def test_post_starts_a_default_worker(runtime: Runtime) -> None:
    pipeline("pipe", 2)
    state, job = runtime.post("pipe", "r0", "in", {"value": 1})
    state2, _ = runtime.post("pipe", "r0", "in", {"value": 2})
    assert state.worker_id == state2.worker_id
    assert [w.worker_id for w in runtime.list_workers()] == [state.worker_id]


def test_await_job_does_not_block_the_event_loop(runtime: Runtime) -> None:
    gate = threading.Event()
    single("awaited", lambda sd, m, ws: gate.wait(10))

    async def main() -> list[str]:
        order: list[str] = []
        _, job = runtime.post("awaited", "only", "in", 1)

        async def other() -> None:
            order.append("loop alive")
            gate.set()

        waiter = asyncio.ensure_future(job)
        await other()
        result = await waiter
        order.append(result.status.value)
        return order

    assert asyncio.run(main()) == ["loop alive", "completed"]


def test_thread_pool_size_bounds_routine_threads_per_worker() -> None:
    pipeline("pipe", 3)
    with (
        Runtime(thread_pool_size=2) as runtime,
        pytest.raises(Exception, match="thread_pool_size=2"),
    ):
        runtime.exec("pipe")
    with Runtime(thread_pool_size=3) as runtime:
        runtime.exec("pipe")


def test_job_retention_forgets_oldest_finished_jobs() -> None:
    pipeline("pipe", 1)
    with Runtime(job_retention=5) as runtime:
        for i in range(20):
            _, job = runtime.post("pipe", "r0", "in", {"value": i})
            assert job.wait(10)
        kept = runtime.list_jobs()
        assert len(kept) == 5
        assert runtime.get_job(job.job_id) is not None


def test_wait_until_all_jobs_finished_times_out() -> None:
    gate = threading.Event()
    single("hold", lambda sd, m, ws: gate.wait(10))
    with Runtime() as runtime:
        runtime.post("hold", "only", "in", 1)
        assert runtime.wait_until_all_jobs_finished(timeout=0.05) is False
        gate.set()
        assert runtime.wait_until_all_jobs_finished(timeout=10) is True


def test_routine_actor_threads_are_named_after_their_worker_and_routine() -> None:
    names: list[str] = []
    single("named", lambda sd, m, ws: names.append(threading.current_thread().name), events=())
    with Runtime() as runtime:
        runtime.exec("named", worker_id="w")
        assert runtime.post("named", "only", "in", None)[1].wait(5)
    (name,) = names
    assert name.startswith("actorflow-w-only-")


def test_in_strict_mode_an_emit_that_cannot_be_pickled_fails_its_job_naming_why() -> None:
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: source.emit("out", lock=threading.Lock()))
    sink = Routine()
    sink.add_slot("in")
    sink.set_logic(lambda sd, m, ws: None)
    flow = Flow("unpicklable")
    flow.add_routine(source, "only")
    flow.add_routine(sink, "sink")
    flow.connect("only", "out", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=True) as runtime:
        _, job = runtime.post("unpicklable", "only", "in", None)
        assert job.wait(5)
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "SerializationError: routine 'only' event 'out' -> sink.in: the message cannot cross a "
        "process boundary (TypeError: cannot pickle '_thread.lock' object)"
    )


# -- the thread backend's worker: back-pressure, supervision, state calls, waiting ----------


def gated(flow_id: str, max_queue_length: int = 1) -> tuple[threading.Event, threading.Event]:
    """A one-routine flow whose slot "in" holds ``max_queue_length`` messages and whose logic
    holds its actor until the returned gate is set; ``holding`` is set once it does."""
    gate, holding = threading.Event(), threading.Event()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        holding.set()
        assert gate.wait(10)

    routine = Routine()
    routine.add_slot("in", max_queue_length=max_queue_length)
    routine.set_logic(logic)
    flow = Flow(flow_id)
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)
    return gate, holding


def test_a_message_dropped_from_a_full_mailbox_is_a_dead_letter_of_its_job() -> None:
    gate, holding = gated("dropping")
    with Runtime(overflow="drop_oldest") as runtime:
        runtime.exec("dropping", worker_id="w")
        runtime.post("dropping", "only", "in", 0)
        assert holding.wait(10)  # the actor holds message 0; the mailbox is empty
        _, dropped = runtime.post("dropping", "only", "in", 1)
        runtime.post("dropping", "only", "in", 2)  # the mailbox is full: message 1 goes
        assert dropped.wait(10) and dropped.status == JobStatus.FAILED
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        letters = runtime.dead_letters()
    assert [(d["job_id"], d["routine_id"], d["slot"], d["reason"]) for d in letters] == [
        (dropped.job_id, "only", "in", "dropped (mailbox full)")
    ]


@pytest.mark.parametrize("post_timeout", [0.0, 0.05], ids=["no_wait", "waited"])
def test_an_awaited_post_to_a_full_mailbox_gives_up_naming_the_limit(post_timeout: float) -> None:
    gate, holding = gated("awaited_full")
    with Runtime(post_timeout=post_timeout) as runtime:
        runtime.exec("awaited_full", worker_id="w")
        runtime.post("awaited_full", "only", "in", 0)
        assert holding.wait(10)
        runtime.post("awaited_full", "only", "in", 1)  # the mailbox holds its one message

        async def post() -> None:
            await runtime.post_async("awaited_full", "only", "in", 2)

        expected = (
            r"^routine 'only' of worker 'w' already has 1 messages waiting "
            rf"\(max_queue_length=1; overflow policy 'block', waited {post_timeout:g} s\)$"
        )
        try:
            with pytest.raises(QueueFullError, match=expected):
                asyncio.run(post())
        finally:
            gate.set()
        assert runtime.wait_until_all_jobs_finished(10)


def holding_the_supervisor(state: Any) -> tuple[threading.Thread, threading.Event]:
    """Start a modify_routine_state on another thread whose function holds the worker's
    supervisor (state calls wait for it) until the returned event is set."""
    inside, release = threading.Event(), threading.Event()

    def hold(old: Any) -> int:
        inside.set()
        release.wait(5)
        return 1

    holder = threading.Thread(target=state.modify_routine_state, args=("held", hold))
    holder.start()
    assert inside.wait(10)
    return holder, release


def test_a_state_call_the_supervisor_does_not_answer_in_time_raises_runtime_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 60 s bound on waiting for the supervisor, shortened so the test is quick."""
    monkeypatch.setattr(worker_core, "STATE_CALL_TIMEOUT", 0.2)
    single("unanswered", lambda sd, m, ws: None, events=())
    with Runtime() as runtime:
        state = runtime.exec("unanswered", worker_id="w")
        holder, release = holding_the_supervisor(state)
        try:
            with pytest.raises(
                RuntimeClosedError,
                match=r"^the supervisor of worker 'w' did not answer within 0\.2 s$",
            ):
                state.get_routine_state("held")
        finally:
            release.set()
            holder.join(10)
        assert state.get_routine_state("held") == 1


def test_an_awaited_state_call_waits_its_turn_behind_a_busy_supervisor() -> None:
    single("awaited_state", lambda sd, m, ws: None, events=())
    with Runtime() as runtime:
        state = runtime.exec("awaited_state", worker_id="w")
        state.update_routine_state("k", {"v": 1})
        holder, release = holding_the_supervisor(state)

        async def read() -> Any:
            task = asyncio.ensure_future(state.aio.get_routine_state("k"))
            await asyncio.sleep(0)  # the call is queued for the busy supervisor
            release.set()
            return await task

        try:
            assert asyncio.run(read()) == {"v": 1}
        finally:
            release.set()
            holder.join(10)


def test_under_one_for_one_a_crash_restarts_only_the_crashed_actor() -> None:
    starts: list[int] = []
    stops: list[int] = []

    class Counted(Routine):
        def on_start(self) -> None:
            starts.append(threading.get_ident())

        def on_stop(self) -> None:
            stops.append(threading.get_ident())

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        if slot_data["in"][0] == "crash":
            raise ActorCrash("this actor only")

    routine = Counted()
    routine.add_slot("in")
    routine.set_logic(logic)
    routine.set_concurrency(2)
    flow = Flow("one_for_one")
    flow.add_routine(routine, "only")
    flow.set_supervision(strategy="one_for_one")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        runtime.exec("one_for_one", worker_id="w")
        _, crashed = runtime.post("one_for_one", "only", "in", "crash")
        assert crashed.wait(10) and crashed.status == JobStatus.FAILED
        _, after = runtime.post("one_for_one", "only", "in", "fine")
        assert after.wait(10) and after.status == JobStatus.COMPLETED
        assert runtime.metrics()["workers"]["w"]["restarts"] == 1
    # the two actors, then the crashed one's successor; the other actor ran on throughout
    assert len(starts) == 3
    assert sorted(stops) == sorted(starts)  # each of them stopped once


def test_a_crashed_actor_restarts_with_info_logging_on() -> None:
    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        if slot_data["in"][0] == "crash":
            raise ActorCrash("restart me")

    single("logged_crash", logic, events=())
    lines: list[str] = []
    handler = enable_logging("INFO", lines.append)
    assert handler is not None
    try:
        with Runtime() as runtime:
            runtime.exec("logged_crash", worker_id="w")
            _, crashed = runtime.post("logged_crash", "only", "in", "crash")
            assert crashed.wait(5) and crashed.status == JobStatus.FAILED
            _, after = runtime.post("logged_crash", "only", "in", "fine")
            assert after.wait(5) and after.status == JobStatus.COMPLETED
    finally:
        disable_logging()
        logger.remove(handler)
    assert any("restarting routine only" in line for line in lines)


def test_a_second_wait_for_all_jobs_returns_as_soon_as_the_last_job_ends() -> None:
    gate, holding = gated("second_wait")
    with Runtime() as runtime:
        assert runtime.wait_until_all_jobs_finished(timeout=1)  # nothing to wait for
        runtime.post("second_wait", "only", "in", 0)
        assert holding.wait(10)
        results: list[bool] = []
        waiter = threading.Thread(
            target=lambda: results.append(runtime.wait_until_all_jobs_finished(timeout=10))
        )
        waiter.start()
        try:
            wait_until(
                lambda: waiting_inside(waiter, "wait_until_all_jobs_finished"),
                "the second wait to block",
            )
            gate.set()
            waiter.join(5)  # woken by the job's end, long before its timeout
            assert not waiter.is_alive() and results == [True]
        finally:
            gate.set()
            waiter.join(15)


def test_an_awaited_post_is_woken_by_room_after_a_blocking_post_gave_up() -> None:
    """Two awaited posts and one blocking post wait for room in one full mailbox; the blocking
    one gives up (its own, shorter, ``post_timeout``). Each message the actor then takes makes
    room for one of the awaited posts: both go through."""
    permits = threading.Semaphore(0)
    entered: queue.Queue[Any] = queue.Queue()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        entered.put(slot_data["in"][0])
        assert permits.acquire(timeout=10)  # one message handled per permit

    routine = Routine()
    routine.add_slot("in", max_queue_length=1)
    routine.set_logic(logic)
    flow = Flow("three_posters")
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)

    def blocking_post(runtime: Runtime) -> Exception | None:
        try:
            runtime.post("three_posters", "only", "in", "blocking")
        except QueueFullError as exc:
            return exc
        return None

    async def main(runtime: Runtime) -> None:
        first = asyncio.ensure_future(runtime.post_async("three_posters", "only", "in", "x"))
        second = asyncio.ensure_future(runtime.post_async("three_posters", "only", "in", "y"))
        await asyncio.sleep(0)  # both await room (for up to 10 s)
        runtime.post_timeout = 0.05
        assert isinstance(await asyncio.to_thread(blocking_post, runtime), QueueFullError)
        permits.release()  # the actor takes the queued message: room for one awaited post
        assert await asyncio.to_thread(entered.get, True, 10) == 1
        done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        for _ in range(10):  # the other awaited post looks at the full mailbox again
            await asyncio.sleep(0)
        assert len(done) == 1 and len(pending) == 1 and not pending.pop().done()
        permits.release()  # the actor takes that post's message: room for the other one
        await asyncio.wait_for(asyncio.gather(first, second), 5)

    with Runtime(post_timeout=10) as runtime:
        runtime.exec("three_posters", worker_id="w")
        runtime.post("three_posters", "only", "in", 0)
        assert entered.get(timeout=10) == 0
        runtime.post("three_posters", "only", "in", 1)  # the mailbox is full
        try:
            asyncio.run(main(runtime))
        finally:
            permits.release(10)
        assert runtime.wait_until_all_jobs_finished(10)


class ManualClock(Clock):
    """A runtime clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_a_workers_lease_is_renewed_on_the_runtimes_clock() -> None:
    single("leased", lambda sd, m, ws: None, events=())
    clock = ManualClock()
    store = create_store("memory")
    leases = store.scope("worker")
    with Runtime(clock=clock, state_store=store, lease_seconds=0.3) as runtime:
        runtime.exec("leased", worker_id="w")
        first = leases.get("w")
        assert first["owner"] == runtime.lease_owner
        clock.now += 1.0  # past a third of the lease: time to renew
        renewed = wait_until(
            lambda: leases.get("w")["expires_at"] > first["expires_at"],
            "the lease to be renewed",
            timeout=5,
        )
        assert renewed
    assert leases.get("w") is None  # released at shutdown


def test_virtual_time_does_not_renew_the_lease_of_a_deterministic_runtimes_worker() -> None:
    """A deterministic runtime runs no timer of its own: advancing virtual time (or waiting
    through it) only fires the timers of its jobs."""
    single("virtual_lease", lambda sd, m, ws: None, events=())
    store = create_store("memory")
    leases = store.scope("worker")
    with DeterministicRuntime(seed=1, state_store=store, lease_seconds=3) as runtime:
        runtime.exec("virtual_lease", worker_id="w")
        written = leases.get("w")
        runtime.advance(60)
        assert leases.get("w") == written
