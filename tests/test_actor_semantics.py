"""Each routine is an actor: one message at a time, in mailbox order, on its own thread."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest

from actorflow import (
    ConfigurationError,
    Flow,
    FlowRegistry,
    FlowValidationError,
    Routine,
    Runtime,
    get_current_job,
)

ROUNDS = 200
BASES = (0, 1000, 2000, 3000)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_a_routine_handles_one_message_at_a_time_in_mailbox_order(strict: bool) -> None:
    """Four threads post in lock-step rounds (a barrier between rounds), so their messages
    interleave in the mailbox; the actor holds the first message until every message is
    posted, so a second actor on the mailbox, if there were one, would run meanwhile."""
    active = 0
    overlaps = 0
    order: list[int] = []
    threads: set[int] = set()
    all_posted = threading.Event()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        nonlocal active, overlaps
        active += 1
        if active > 1:
            overlaps += 1
        order.append(slot_data["in"][0])
        threads.add(threading.get_ident())
        if len(order) == 1:
            assert all_posted.wait(10)
        active -= 1

    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(logic)
    flow = Flow("serial")
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)
    rounds = threading.Barrier(len(BASES), timeout=10)
    with Runtime(strict=strict) as runtime:

        def post_rounds(base: int) -> None:
            for i in range(ROUNDS):
                rounds.wait()  # every poster has posted its message of the round before
                runtime.post("serial", "only", "in", base + i)

        posters = [threading.Thread(target=post_rounds, args=(base,)) for base in BASES]
        for t in posters:
            t.start()
        for t in posters:
            t.join(30)
        all_posted.set()
        assert runtime.wait_until_all_jobs_finished(20)
    assert overlaps == 0
    assert len(threads) == 1 and threading.get_ident() not in threads
    # mailbox order: round i's four messages, in any order among them, before round i + 1's
    count = len(BASES)
    rounds_seen = [sorted(order[i * count : (i + 1) * count]) for i in range(ROUNDS)]
    assert rounds_seen == [[base + i for base in BASES] for i in range(ROUNDS)]


def test_on_start_and_on_stop_run_in_the_actor_thread() -> None:
    events: list[tuple[str, int]] = []

    class Hooked(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            events.append(("start", threading.get_ident()))

        def on_stop(self) -> None:
            events.append(("stop", threading.get_ident()))

        def logic(self, slot_data: Any, msg: Any, ws: Any) -> None:
            events.append(("logic", threading.get_ident()))

    flow = Flow("hooks")
    flow.add_routine(Hooked(), "h")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        runtime.post("hooks", "h", "in", 1)[1].wait(10)
    assert [e[0] for e in events] == ["start", "logic", "stop"]
    assert len({e[1] for e in events}) == 1 and events[0][1] != threading.get_ident()


def test_routine_declaration_errors() -> None:
    routine = Routine()
    routine.add_slot("in")
    routine.add_event("out")
    with pytest.raises(ValueError, match="slot 'in' is already declared"):
        routine.add_slot("in")
    with pytest.raises(ValueError, match="event 'out' is already declared"):
        routine.add_event("out")
    with pytest.raises(TypeError):
        routine.add_slot(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        routine.add_slot("x", max_queue_length=0)
    with pytest.raises(TypeError):
        routine.set_logic("not callable")  # type: ignore[arg-type]
    routine.set_config(a=1)
    routine.set_config(b=2)
    assert routine.get_config("a") == 1 and routine.get_config("missing", 9) == 9


def test_flow_errors_name_what_is_unknown() -> None:
    a, b = Routine(), Routine()
    a.add_event("out")
    b.add_slot("in")
    flow = Flow("f")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    with pytest.raises(ValueError, match="'ghost'"):
        flow.connect("ghost", "out", "b", "in")
    with pytest.raises(ValueError, match="'nope'"):
        flow.connect("a", "nope", "b", "in")
    with pytest.raises(ValueError, match="'wrong'"):
        flow.connect("a", "out", "b", "wrong")
    with pytest.raises(ValueError, match="already has a routine 'a'"):
        flow.add_routine(Routine(), "a")
    with pytest.raises(ValueError, match="already 'a' in flow 'f'"):
        Flow("g").add_routine(a, "x")
    flow.connect("a", "out", "b", "in")
    with pytest.raises(ValueError, match="already connects"):
        flow.connect("a", "out", "b", "in")
    with pytest.raises(FlowValidationError, match="no logic"):
        flow.validate()
    a.set_logic(lambda sd, m, ws: None)
    b.set_logic(lambda sd, m, ws: None)
    flow.validate()
    FlowRegistry.get_instance().register(flow)
    assert FlowRegistry.get_instance().list() == ["f"]


def test_registry_api() -> None:
    registry = __import__(
        "actorflow.monitoring.flow_registry", fromlist=["FlowRegistry"]
    ).FlowRegistry
    reg = registry.get_instance()
    assert reg is FlowRegistry.get_instance()
    flow = Flow("x")
    reg.register_by_name("alias", flow)
    assert reg.get("alias") is flow and reg.get("x") is None
    assert reg.unregister("alias") is True and reg.unregister("alias") is False
    with pytest.raises(TypeError):
        reg.register("not a flow")  # type: ignore[arg-type]


def _chain(
    flow_id: str, *steps: tuple[str, Routine], links: tuple[tuple[str, str, str], ...]
) -> None:
    """Register ``flow_id`` with ``steps`` (routine id, routine) and ``links`` (source, event,
    target): every target's slot is "in"."""
    flow = Flow(flow_id)
    for routine_id, routine in steps:
        flow.add_routine(routine, routine_id)
    for source, event, target in links:
        flow.connect(source, event, target, "in")
    FlowRegistry.get_instance().register(flow)


def _routine(logic: Any, *events: str, slot: str = "in") -> Routine:
    routine = Routine()
    routine.add_slot(slot)
    for event in events:
        routine.add_event(event)
    routine.set_logic(logic)
    return routine


def test_probes_see_what_a_plain_routine_emits_on_the_fast_path() -> None:
    """Not strict, one message in and one out: a probe on the event still sees each emit,
    and an unprobed emit further down still flows."""
    done: list[Any] = []
    a: Routine = _routine(lambda sd, m, ws: a.emit("out", v=sd["in"][0]), "out")
    b: Routine = _routine(lambda sd, m, ws: b.emit("done", v=sd["in"][0]["v"] * 10), "done")
    c = _routine(lambda sd, m, ws: done.append(sd["in"][0]["v"]))
    _chain("probed", ("a", a), ("b", b), ("c", c), links=(("a", "out", "b"), ("b", "done", "c")))
    with Runtime(strict=False) as runtime:
        probe = runtime.probe("a", "out")
        jobs = [runtime.post("probed", "a", "in", n)[1] for n in (1, 2)]
        assert all(job.wait(10) for job in jobs)
    assert [job.status.value for job in jobs] == ["completed", "completed"]
    assert probe.messages == [{"v": 1}, {"v": 2}]
    assert done == [10, 20]


def test_the_timeline_keeps_at_most_max_steps_on_the_fast_path() -> None:
    """A job looping through one plain routine 300 times: the timeline keeps the first
    MAX_TIMELINE_STEPS steps and counts the others as dropped."""
    from actorflow.job import MAX_TIMELINE_STEPS

    loop: Routine = _routine(
        lambda sd, m, ws: loop.emit("again", n=sd["in"][0]["n"] - 1) if sd["in"][0]["n"] else None,
        "again",
    )
    _chain("looping", ("loop", loop), links=(("loop", "again", "loop"),))
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("looping", "loop", "in", {"n": 300})
        assert job.wait(10)
    assert job.status.value == "completed"
    assert len(job.timeline) == MAX_TIMELINE_STEPS
    assert job.timeline_dropped == 301 - MAX_TIMELINE_STEPS


def test_a_fast_path_hop_counts_one_hop_for_the_job_data_merge() -> None:
    """Two branches at the same depth write one key: the later write wins. The left branch
    takes the fast path (one message in, one out, job untouched), the right one does not;
    both still count one hop each."""
    left_wrote = threading.Event()

    def both(sd: Any, m: Any, ws: Any) -> None:  # two events: not the fast path
        top.emit("x", v=1)
        top.emit("y", v=1)

    top = _routine(both, "x", "y")
    left: Routine = _routine(lambda sd, m, ws: left.emit("z", v=1), "z")

    def right_logic(sd: Any, m: Any, ws: Any) -> None:
        assert get_current_job() is not None
        right.emit("w", v=1)

    right: Routine = _routine(right_logic, "w")

    def left_end(sd: Any, m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("k", "left")
        left_wrote.set()

    def right_end(sd: Any, m: Any, ws: Any) -> None:
        assert left_wrote.wait(10)
        job = get_current_job()
        assert job is not None
        job.set_data("k", "right")

    _chain(
        "diamond",
        ("top", top),
        ("left", left),
        ("right", right),
        ("left_end", _routine(left_end)),
        ("right_end", _routine(right_end)),
        links=(
            ("top", "x", "left"),
            ("top", "y", "right"),
            ("left", "z", "left_end"),
            ("right", "w", "right_end"),
        ),
    )
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("diamond", "top", "in", 0)
        assert job.wait(10)
    assert job.status.value == "completed", job.error
    assert job.data == {"k": "right"}


def test_emit_after_a_failed_run_is_refused_as_outside_the_logic() -> None:
    """Not strict: once a run of the logic raised, an emit from on_stop (no message being
    handled) raises RuntimeError saying it came outside the logic."""
    errors: list[str] = []

    class Stopper(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")
            self.add_event("out")

        def logic(self, slot_data: Any, msg: Any, ws: Any) -> None:
            raise ValueError("no")

        def on_stop(self) -> None:
            try:
                self.emit("out", v=1)
            except RuntimeError as exc:
                errors.append(str(exc))

    _chain(
        "stopper",
        ("s", Stopper()),
        ("sink", _routine(lambda sd, m, ws: None)),
        links=(("s", "out", "sink"),),
    )
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("stopper", "s", "in", 1)
        assert job.wait(10)
        assert job.status.value == "failed"
    assert len(errors) == 1
    assert re.search(r"^routine 's' emitted 'out' outside its logic", errors[0]), errors


def test_async_runs_of_a_failed_job_waiting_behind_its_task_are_dead_letters() -> None:
    """Async logic runs one task at a time per job: a job's second message waits behind
    its first task; when that task fails the job, the waiting run leaves as a dead letter
    and its place is freed (two later jobs run side by side again)."""
    from actorflow.testing import DeterministicRuntime

    ran: list[int] = []
    gate: dict[str, asyncio.Event] = {}

    async def work(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        n = sd["in"][0]["n"]
        ran.append(n)
        if n == 1:
            await asyncio.sleep(1)
            raise ValueError("first")
        event = gate.setdefault("open", asyncio.Event())
        if n == 10:  # waits for the task of job 11, which needs a second place
            await event.wait()
        else:
            event.set()

    def twice(sd: Any, m: Any, ws: Any) -> None:
        split.emit("out", n=1)
        split.emit("out", n=2)

    split = _routine(twice, "out")
    worker = _routine(work)
    worker.set_concurrency(2)
    _chain("lined", ("split", split), ("work", worker), links=(("split", "out", "work"),))
    with DeterministicRuntime() as runtime:
        _, job = runtime.post("lined", "split", "in", 0)
        assert job.wait(10)
        assert job.error == "ValueError: first"
        letters = [(d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()]
        assert letters == [("work", "in", "job failed")]
        later = [runtime.post("lined", "work", "in", {"n": n})[1] for n in (10, 11)]
        assert runtime.wait_until_all_jobs_finished(10)
    assert [j.status.value for j in later] == ["completed", "completed"]
    assert ran == [1, 10, 11]


def test_a_fault_plan_raise_in_async_logic_fails_only_that_job() -> None:
    """An exception a fault plan injects before async logic goes through the error strategy
    (the job fails with it, no actor restarts); the other jobs run normally."""
    from actorflow.faults import FaultPlan
    from actorflow.testing import DeterministicRuntime

    async def work(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        await asyncio.sleep(0)

    worker = _routine(work)
    worker.set_concurrency(2)
    _chain("faulted", ("work", worker), links=())
    plan = FaultPlan().raise_in("work", ValueError("injected"), on_message=2)
    with DeterministicRuntime(faults=plan) as runtime:
        jobs = [runtime.post("faulted", "work", "in", n)[1] for n in range(3)]
        assert runtime.wait_until_all_jobs_finished(10)
        restarts = [w["restarts"] for w in runtime.metrics()["workers"].values()]
    assert [job.status.value for job in jobs] == ["completed", "failed", "completed"]
    assert jobs[1].error == "ValueError: injected"
    assert restarts == [0]


def _span_of_one_run(flow_id: str, logic: Any) -> tuple[dict[str, Any], Any, str]:
    """Run one job through a one-routine flow with tracing on; the attributes of the one span
    of its run, the job and the worker id."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first to set it (once per process)
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _chain(flow_id, ("only", _routine(logic)), links=())
    with Runtime(tracing=True) as runtime:
        worker_id = runtime.exec(flow_id).worker_id
        _, job = runtime.post(flow_id, "only", "in", 1)
        assert job.wait(10)
    exporter.shutdown()
    spans = [span for span in exporter.get_finished_spans() if span.name == "routine only"]
    assert len(spans) == 1
    return dict(spans[0].attributes or {}), job, worker_id


def test_a_routine_span_names_its_flow() -> None:
    """Tracing on: the span of a run carries the flow, worker, routine and job ids."""
    attributes, job, worker_id = _span_of_one_run("spanned", lambda sd, m, ws: None)
    assert attributes == {
        "actorflow.job_id": job.job_id,
        "actorflow.worker_id": worker_id,
        "actorflow.flow_id": "spanned",
        "actorflow.routine_id": "only",
    }


def test_a_crashed_actor_whose_on_stop_raises_is_still_restarted() -> None:
    """on_stop of a crashed actor raising is logged (logging on); the supervisor still fails
    the job the actor worked for and restarts it, so the next job runs."""
    from loguru import logger

    from actorflow import ActorCrash
    from actorflow.logging import disable_logging, enable_logging

    class Fragile(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def logic(self, slot_data: Any, msg: Any, ws: Any) -> None:
            if slot_data["in"][0] == "crash":
                raise ActorCrash("boom")

        def on_stop(self) -> None:
            raise OSError("cannot close")

    _chain("fragile", ("f", Fragile()), links=())
    records: list[Any] = []
    sink = enable_logging("ERROR", records.append)
    assert sink is not None
    try:
        with Runtime() as runtime:
            _, crashed = runtime.post("fragile", "f", "in", "crash")
            assert crashed.wait(10)
            _, after = runtime.post("fragile", "f", "in", "ok")
            assert after.wait(10)
            restarts = [w["restarts"] for w in runtime.metrics()["workers"].values()]
    finally:
        logger.remove(sink)
        disable_logging()
    on_stop_errors = [r for r in records if (r.record["exception"] or (None,))[0] is OSError]
    assert len(on_stop_errors) == 1 and on_stop_errors[0].record["level"].name == "ERROR"
    assert crashed.status.value == "failed"
    assert after.status.value == "completed"
    assert restarts == [1]


def test_a_retry_runs_the_logic_again_with_the_policy_message() -> None:
    """A routine released by a policy with a message: the retry of a failed run gets the
    same message as the first try."""
    from actorflow import ErrorStrategy, batch_size_policy

    messages: list[Any] = []

    def logic(sd: Any, msg: Any, ws: Any) -> None:
        messages.append(msg)
        if len(messages) == 1:
            raise ConnectionError("the first try fails")

    routine = _routine(logic)
    routine.set_activation_policy(batch_size_policy(1, timeout=None))
    routine.set_error_handler(ErrorStrategy.RETRY(max_retries=1, delay=0))
    _chain("retried", ("only", routine), links=())
    with Runtime() as runtime:
        _, job = runtime.post("retried", "only", "in", 1)
        assert job.wait(10)
    assert job.status.value == "completed", job.error
    assert len(messages) == 2 and messages[0] is not None
    assert messages[1] == messages[0]


def test_an_async_routine_retried_after_a_fault_before_its_task_runs_still_has_its_job() -> None:
    """A fault plan makes the async logic raise before its task starts: the retry runs with
    the job, and what it writes lands in the job's data."""
    from actorflow import ErrorStrategy
    from actorflow.faults import FaultPlan

    seen: list[Any] = []

    async def logic(sd: Any, msg: Any, ws: Any) -> None:
        job = get_current_job()
        seen.append(job)
        if job is not None:
            job.set_data("ran", sd["in"][0])

    routine = _routine(logic)
    routine.set_error_handler(ErrorStrategy.RETRY(max_retries=1, delay=0))
    _chain("async_faulted", ("work", routine), links=())
    plan = FaultPlan().raise_in("work", ValueError("injected"), on_message=1)
    with Runtime(faults=plan) as runtime:
        _, job = runtime.post("async_faulted", "work", "in", 7)
        assert job.wait(10)
    assert job.status.value == "completed", job.error
    assert len(seen) == 1 and seen[0] is not None and seen[0].job_id == job.job_id
    assert job.get_data("ran") == 7


def test_an_async_routine_span_names_its_flow() -> None:
    """Tracing on: the span of an async routine's run carries the flow, worker, routine and
    job ids too."""

    async def logic(sd: Any, msg: Any, ws: Any) -> None:
        await asyncio.sleep(0)

    attributes, job, worker_id = _span_of_one_run("async_spanned", logic)
    assert attributes == {
        "actorflow.job_id": job.job_id,
        "actorflow.worker_id": worker_id,
        "actorflow.flow_id": "async_spanned",
        "actorflow.routine_id": "only",
    }


def test_on_the_fast_path_a_job_whose_first_routine_ran_is_running() -> None:
    """Not strict: while a later routine of the job is still busy, the job is RUNNING."""
    from actorflow import JobStatus

    entered = threading.Event()
    release = threading.Event()

    def hold(sd: Any, m: Any, ws: Any) -> None:
        entered.set()
        assert release.wait(10)

    first: Routine = _routine(lambda sd, m, ws: first.emit("out", v=sd["in"][0]), "out")
    _chain(
        "held", ("first", first), ("second", _routine(hold)), links=(("first", "out", "second"),)
    )
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("held", "first", "in", 1)
        try:
            assert entered.wait(10)
            status = job.status
        finally:
            release.set()
        assert job.wait(10)
    assert status == JobStatus.RUNNING
    assert job.status == JobStatus.COMPLETED


def test_on_the_fast_path_there_is_no_current_job_after_the_logic() -> None:
    """Not strict: after the logic ran, get_current_job() on the actor's thread (here in
    on_stop) is None."""
    outside: list[Any] = []

    class Quiet(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def logic(self, slot_data: Any, msg: Any, ws: Any) -> None:
            pass

        def on_stop(self) -> None:
            try:
                outside.append(get_current_job())
            except Exception as exc:  # a broken view must fail the test, not the stop
                outside.append(exc)

    _chain("quiet", ("q", Quiet()), links=())
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("quiet", "q", "in", 1)
        assert job.wait(10)
    assert job.status.value == "completed"
    assert outside == [None]
