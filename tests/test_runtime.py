"""Jobs through the runtime: completion, failure, waiting, cancellation, shutdown, bad input."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from flows import pipeline

from actorflow import (
    ActorCrash,
    Flow,
    FlowRegistry,
    FlowValidationError,
    JobStatus,
    Routine,
    Runtime,
    RuntimeClosedError,
    UnknownFlowError,
    get_current_job,
)
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
