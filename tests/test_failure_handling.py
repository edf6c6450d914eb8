"""Error strategies, supervision, back-pressure, timeouts: each rule enforced at run time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest
from _waiting import wait_until, waiting_inside

from actorflow import (
    ActorCrash,
    ConfigurationError,
    ErrorStrategy,
    Flow,
    FlowRegistry,
    InvalidDurationError,
    JobStatus,
    QueueFullError,
    Routine,
    Runtime,
    Supervision,
    WorkerFailedError,
)
from actorflow.supervision import RestartDecision, RestartIntensity
from actorflow.testing import DeterministicRuntime


def make(logic: Any, events: tuple[str, ...] = ()) -> Routine:
    routine = Routine()
    routine.add_slot("in")
    for event in events:
        routine.add_event(event)
    routine.set_logic(logic)
    return routine


def one(flow_id: str, routine: Routine) -> Flow:
    flow = Flow(flow_id)
    flow.add_routine(routine, "r")
    FlowRegistry.get_instance().register(flow)
    return flow


# -- error strategies -------------------------------------------------------------------


def fan_flow(
    strategy: ErrorStrategy | None, flow_default: ErrorStrategy | None = None
) -> list[str]:
    ran: list[str] = []
    source = make(lambda sd, m, ws: source.emit("out"), events=("out",))
    bad = make(lambda sd, m, ws: (_ for _ in ()).throw(ValueError("bad branch")))
    if strategy is not None:
        bad.set_error_handler(strategy)
    good = make(lambda sd, m, ws: ran.append("good"))
    flow = Flow("fan")
    flow.add_routine(source, "source")
    flow.add_routine(bad, "bad")
    flow.add_routine(good, "good")
    flow.connect("source", "out", "bad", "in")
    flow.connect("source", "out", "good", "in")
    if flow_default is not None:
        flow.set_error_handler(flow_default)
    FlowRegistry.get_instance().register(flow)
    return ran


def test_stop_is_the_default_and_fails_the_job(runtime: Runtime) -> None:
    fan_flow(None)
    _, job = runtime.post("fan", "source", "in", {})
    assert job.wait(10)
    assert job.status == JobStatus.FAILED and job.error == "ValueError: bad branch"


def test_continue_records_the_error_and_the_job_completes(runtime: Runtime) -> None:
    ran = fan_flow(ErrorStrategy.CONTINUE)
    _, job = runtime.post("fan", "source", "in", {})
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED and ran == ["good"]
    assert job.errors == [
        {"routine_id": "bad", "error": "ValueError: bad branch", "handled_as": "continue"}
    ]
    assert [e["action"] for e in job.trace_log] == ["continue"]


def test_skip_drops_the_message_records_it_and_the_job_goes_on(runtime: Runtime) -> None:
    ran = fan_flow(None, flow_default=ErrorStrategy.SKIP)  # flow-wide default
    _, job = runtime.post("fan", "source", "in", {})
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED and ran == ["good"]
    assert job.errors[0]["handled_as"] == "skip"
    assert runtime.dead_letter_counts() == {"skipped": 1}


def test_retry_reruns_with_the_same_input_and_backs_off(runtime: Runtime) -> None:
    calls: list[tuple[Any, float]] = []

    def flaky(sd: Any, m: Any, ws: Any) -> None:
        calls.append((sd["in"][0], time.monotonic()))
        if len(calls) < 4:
            raise ConnectionError(f"try {len(calls)}")

    routine = make(flaky)
    routine.set_error_handler(ErrorStrategy.RETRY(max_retries=3, delay=0.02, backoff=2.0))
    one("flaky", routine)
    _, job = runtime.post("flaky", "r", "in", {"order": 7})
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED
    assert [c[0] for c in calls] == [{"order": 7}] * 4
    retries = [e["details"] for e in job.trace_log if e["action"] == "retry"]
    assert [r["delay"] for r in retries] == [0.02, 0.04, 0.08]
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    gaps = [b[1] - a[1] for a, b in zip(calls, calls[1:], strict=False)]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, (0.02, 0.04, 0.08), strict=True))


RUNTIMES = {
    "threads-fast": lambda: Runtime(strict=False),
    "threads-strict": lambda: Runtime(strict=True),
    "deterministic-fast": lambda: DeterministicRuntime(seed=3, strict=False),
    "deterministic-strict": lambda: DeterministicRuntime(seed=3, strict=True),
}


@pytest.mark.parametrize("kind", list(RUNTIMES))
def test_a_failed_try_delivers_nothing_it_emitted(kind: str) -> None:
    """a emits, then raises on each message's first try (RETRY): only the try that returns
    delivers, so b gets every message once, from its second try, and each job completes after
    its retry."""
    tries: Counter[int] = Counter()
    received: list[tuple[int, int]] = []

    def first_try_fails(sd: Any, m: Any, ws: Any) -> None:
        value = sd["in"][0]
        tries[value] += 1
        a.emit("out", v=value, attempt=tries[value])
        if tries[value] == 1:
            raise ConnectionError(f"try 1 of {value} fails after its emit")

    a = make(first_try_fails, events=("out",))
    a.set_error_handler(ErrorStrategy.RETRY(max_retries=2, delay=0))
    b = make(lambda sd, m, ws: received.append((sd["in"][0]["v"], sd["in"][0]["attempt"])))
    flow = Flow("retried_emits")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    flow.connect("a", "out", "b", "in")
    FlowRegistry.get_instance().register(flow)
    with RUNTIMES[kind]() as runtime:
        jobs = [runtime.post("retried_emits", "a", "in", v)[1] for v in range(3)]
        assert runtime.wait_until_all_jobs_finished(10)
        dead = runtime.dead_letter_counts()
    assert sorted(received) == [(0, 2), (1, 2), (2, 2)]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3, [j.error for j in jobs]
    assert all([e["action"] for e in job.trace_log] == ["retry"] for job in jobs)
    assert dead == {}


def test_retry_gives_up_with_the_last_error_and_the_number_of_tries(runtime: Runtime) -> None:
    routine = make(lambda sd, m, ws: (_ for _ in ()).throw(ConnectionError("still down")))
    routine.set_error_handler("retry", max_retries=2, delay=0, backoff=1)
    one("down", routine)
    _, job = runtime.post("down", "r", "in", 1)
    assert job.wait(10)
    assert job.status == JobStatus.FAILED
    assert job.error == "ConnectionError: still down (after 3 tries)"


def test_retry_only_retries_the_listed_exceptions(runtime: Runtime) -> None:
    calls = Counter[str]()

    def logic(sd: Any, m: Any, ws: Any) -> None:
        calls["n"] += 1
        raise KeyError("not transient")

    routine = make(logic)
    routine.set_error_handler(ErrorStrategy.RETRY(max_retries=5, delay=0, retry_on=ConnectionError))
    one("strict", routine)
    _, job = runtime.post("strict", "r", "in", 1)
    assert job.wait(10)
    assert job.status == JobStatus.FAILED and calls["n"] == 1


def test_a_waiting_retry_does_not_block_other_messages(runtime: Runtime) -> None:
    def logic(sd: Any, m: Any, ws: Any) -> None:
        if sd["in"][0] == "slow" and not release.is_set():
            raise ConnectionError("later")

    release = threading.Event()
    routine = make(logic)
    routine.set_error_handler(ErrorStrategy.RETRY(max_retries=1, delay=5.0))
    one("nonblocking", routine)
    _, slow = runtime.post("nonblocking", "r", "in", "slow")
    _, fast = runtime.post("nonblocking", "r", "in", "fast")
    assert fast.wait(2)  # handled while the retry of "slow" waits 5 s
    assert fast.status == JobStatus.COMPLETED and not slow.done
    runtime.cancel_job(slow.job_id)


def test_error_strategy_arguments_are_checked_at_configuration_time() -> None:
    routine = Routine()
    with pytest.raises(ConfigurationError):
        routine.set_error_handler("explode")
    with pytest.raises(TypeError):
        routine.set_error_handler(42)
    with pytest.raises(ValueError):
        ErrorStrategy.RETRY(max_retries=0)
    with pytest.raises(TypeError):
        ErrorStrategy.RETRY(delay="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ErrorStrategy.RETRY(backoff=0.5)
    with pytest.raises(TypeError):
        ErrorStrategy.RETRY(retry_on=(int,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        routine.set_error_handler("stop", max_retries=2)
    with pytest.raises(ValueError):
        Supervision(strategy="one_for_some")
    with pytest.raises(ValueError):
        Supervision(max_restarts=-1)


# -- supervision ------------------------------------------------------------------------


class Counted(Routine):
    """Counts on_start calls per routine id; crashes on the values listed in ``crash_on``."""

    def __init__(self, name: str, starts: Counter[str], crash_on: set[Any], log: list[Any]) -> None:
        super().__init__()
        self.add_slot("in")
        self.add_event("out")
        self.name = name
        self.starts = starts
        self.crash_on = crash_on
        self.log = log

    def on_start(self) -> None:
        self.starts[self.name] += 1

    def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        value = sd["in"][0]
        if value in self.crash_on:
            raise ActorCrash(f"{self.name} crashes on {value}")
        self.log.append((self.name, value))
        self.emit("out", v=value) if False else None


def chain(
    strategy: str, crash_in: str, crash_on: set[Any], **supervision: Any
) -> tuple[Counter[str], list[Any]]:
    starts: Counter[str] = Counter()
    log: list[Any] = []
    flow = Flow("sup")
    for name in ("a", "b", "c"):
        flow.add_routine(Counted(name, starts, crash_on if name == crash_in else set(), log), name)
    flow.set_supervision(strategy, **supervision)
    FlowRegistry.get_instance().register(flow)
    return starts, log


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
def test_supervision_strategies_restart_the_right_actors(
    runtime: Runtime, strategy: str, restarted: set[str]
) -> None:
    starts, _ = chain(strategy, "b", {"boom"})
    runtime.exec("sup")
    _, crashed = runtime.post("sup", "b", "in", "boom")
    assert crashed.wait(10)
    assert crashed.status == JobStatus.FAILED and "actor crashed" in (crashed.error or "")
    expected = {name: 2 if name in restarted else 1 for name in "abc"}
    for name in "abc":  # every actor works afterwards
        assert runtime.post("sup", name, "in", f"after-{name}")[1].wait(10)
    assert dict(starts) == expected


def test_no_message_is_lost_when_an_actor_crashes_with_a_full_mailbox(runtime: Runtime) -> None:
    gate = threading.Event()
    starts: Counter[str] = Counter()
    handled: list[int] = []

    class Worker(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            starts["w"] += 1

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            value = sd["in"][0]
            if value == 0:
                assert gate.wait(10)  # hold the actor until all 1,000 messages are queued
            if value == 9:
                raise ActorCrash("crash on the 10th message")
            handled.append(value)

    one("handover", Worker())
    jobs = [runtime.post("handover", "r", "in", i)[1] for i in range(1000)]
    gate.set()
    assert runtime.wait_until_all_jobs_finished(timeout=30)
    statuses = Counter(job.status for job in jobs)
    assert statuses == {JobStatus.COMPLETED: 999, JobStatus.FAILED: 1}
    assert jobs[9].status == JobStatus.FAILED
    assert handled == [i for i in range(1000) if i != 9]  # in order, nothing lost
    assert starts["w"] == 2


def test_past_the_restart_limit_the_worker_fails_and_so_do_its_jobs(runtime: Runtime) -> None:
    gate = threading.Event()

    def logic(sd: Any, m: Any, ws: Any) -> None:
        if sd["in"][0] == "hold":
            assert gate.wait(10)
            return
        raise ActorCrash("always")

    crashy = make(logic)
    flow = Flow("fragile")
    flow.add_routine(crashy, "crashy")
    flow.add_routine(make(lambda sd, m, ws: gate.wait(10)), "other")
    flow.set_supervision("one_for_one", max_restarts=2, period=60)
    FlowRegistry.get_instance().register(flow)
    state = runtime.exec("fragile")
    _, waiting = runtime.post("fragile", "other", "in", "hold")
    crashed = [runtime.post("fragile", "crashy", "in", i)[1] for i in range(3)]
    assert all(job.wait(10) for job in crashed)
    assert waiting.wait(10)
    gate.set()
    assert state.status == "failed"
    assert waiting.status == JobStatus.FAILED
    assert "more than 2 restarts within 60 s" in (waiting.error or "")
    with pytest.raises(WorkerFailedError):
        runtime.post("fragile", "crashy", "in", 4)


def test_failing_on_start_is_a_crash_the_supervisor_handles(runtime: Runtime) -> None:
    attempts: list[int] = []

    class Fragile(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise OSError("resource not ready")

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            return None

    one("startup", Fragile())
    _, job = runtime.post("startup", "r", "in", 1)
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED and len(attempts) == 2


def test_restart_backoff_delays_the_successor(runtime: Runtime) -> None:
    started: list[float] = []

    class Slow(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            started.append(time.monotonic())

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            if sd["in"][0] == "crash":
                raise ActorCrash("crash")

    flow = one("backoff", Slow())
    flow.set_supervision(backoff_base=0.2, backoff_max=1.0)
    runtime.exec("backoff")
    runtime.post("backoff", "r", "in", "crash")[1].wait(10)
    _, after = runtime.post("backoff", "r", "in", "fine")
    assert after.wait(10) and after.status == JobStatus.COMPLETED
    assert started[1] - started[0] >= 0.19


# -- back-pressure, timeouts ------------------------------------------------------------


def blocked_flow(max_queue_length: int) -> tuple[threading.Event, threading.Event]:
    """One routine whose logic holds each message until ``gate`` is set; ``holding`` is set
    once the actor holds its first message (its mailbox is then empty)."""
    gate, holding = threading.Event(), threading.Event()

    def hold(sd: Any, m: Any, ws: Any) -> None:
        holding.set()
        gate.wait(10)

    routine = Routine()
    routine.add_slot("in", max_queue_length=max_queue_length)
    routine.set_logic(hold)
    one("bounded", routine)
    return gate, holding


def test_overflow_raise_refuses_at_once_and_posts_nothing() -> None:
    gate, holding = blocked_flow(2)
    with Runtime(overflow="raise") as runtime:
        runtime.post("bounded", "r", "in", 0)
        assert holding.wait(10)  # the actor holds the first message
        runtime.post("bounded", "r", "in", 1)
        runtime.post("bounded", "r", "in", 2)
        with pytest.raises(QueueFullError, match="max_queue_length=2"):
            runtime.post("bounded", "r", "in", 3)
        assert len(runtime.list_jobs()) == 3
        gate.set()


def test_overflow_block_waits_for_room_then_gives_up() -> None:
    gate, holding = blocked_flow(1)
    with Runtime(overflow="block", post_timeout=0.2) as runtime:
        runtime.post("bounded", "r", "in", 0)
        assert holding.wait(10)
        runtime.post("bounded", "r", "in", 1)
        t0 = time.monotonic()
        with pytest.raises(QueueFullError, match="waited 0.2 s"):
            runtime.post("bounded", "r", "in", 2)
        assert time.monotonic() - t0 >= 0.19
        gate.set()


def test_overflow_block_goes_on_once_the_actor_takes_a_message() -> None:
    gate, holding = blocked_flow(1)
    with Runtime(overflow="block", post_timeout=30) as runtime:
        runtime.exec("bounded", worker_id="w")
        runtime.post("bounded", "r", "in", 0)
        assert holding.wait(10)
        runtime.post("bounded", "r", "in", 1)  # the mailbox is full
        posted: list[Any] = []
        poster = threading.Thread(
            target=lambda: posted.append(runtime.post("bounded", "r", "in", 2)[1])
        )
        poster.start()
        worker = runtime._workers["w"]
        wait_until(lambda: worker.posters_waiting == 1, "the post to wait for room")
        assert not posted  # it waits...
        gate.set()  # ...until the actor takes message 1
        poster.join(10)
        assert posted and posted[0].wait(10) and posted[0].status == JobStatus.COMPLETED


def test_overflow_drop_oldest_fails_the_dropped_job() -> None:
    gate, holding = blocked_flow(2)
    with Runtime(overflow="drop_oldest") as runtime:
        runtime.post("bounded", "r", "in", 0)
        assert holding.wait(10)
        second = runtime.post("bounded", "r", "in", 1)[1]
        runtime.post("bounded", "r", "in", 2)
        runtime.post("bounded", "r", "in", 3)
        assert second.wait(5)
        assert second.status == JobStatus.FAILED and "drop_oldest" in (second.error or "")
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        assert runtime.dead_letter_counts() == {"dropped (mailbox full)": 1}


def downstream_flow(max_queue_length: int) -> tuple[threading.Event, threading.Event]:
    """``source`` -> ``sink``: ``sink`` (``max_queue_length`` bounded) holds each message until
    ``gate`` is set; ``holding`` is set once it holds its first (its mailbox is then empty)."""
    gate, holding = threading.Event(), threading.Event()
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: [source.emit("out", value=v) for v in sd["in"]])

    def hold(sd: Any, m: Any, ws: Any) -> None:
        holding.set()
        gate.wait(10)

    sink = Routine()
    sink.add_slot("in", max_queue_length=max_queue_length)
    sink.set_logic(hold)
    flow = Flow("downstream")
    flow.add_routine(source, "source")
    flow.add_routine(sink, "sink")
    flow.connect("source", "out", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    return gate, holding


def _fill_sink_to_half(runtime: Runtime, holding: threading.Event) -> None:
    """Post job 0 (the sink holds it), then jobs 1 to 4, each waited for in the sink's
    mailbox: 4 messages wait there, half its bound of 8."""
    runtime.exec("downstream", worker_id="w")
    runtime.post("downstream", "source", "in", 0, worker_id="w")
    assert holding.wait(10)
    for n in range(1, 5):
        runtime.post("downstream", "source", "in", n, worker_id="w")
        wait_until(
            lambda n=n: runtime.metrics()["routines"]["w"]["sink"]["mailbox_depth"] == n,
            f"message {n} to wait in the sink's mailbox",
        )


def test_a_post_is_refused_while_half_a_downstream_bound_waits_in_the_worker() -> None:
    """Back-pressure reaches the producer for every routine of the flow, not only the one
    posted to: a burst of posts is refused (``raise``) at ``post``, where nothing is posted,
    instead of failing its jobs at a full mailbox inside the flow."""
    gate, holding = downstream_flow(8)
    with Runtime(overflow="raise") as runtime:
        _fill_sink_to_half(runtime, holding)
        with pytest.raises(QueueFullError) as refused:
            runtime.post("downstream", "source", "in", 5, worker_id="w")
        assert str(refused.value) == (
            "the messages waiting in worker 'w' may put 4 into the mailbox of routine 'sink' "
            "(at least half its max_queue_length=8: the other half is kept for the jobs already "
            "posted; overflow policy 'raise')"
        )
        assert len(runtime.list_jobs()) == 5  # the refused post made no job
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        assert runtime.metrics()["jobs"]["completed"] == 5
        assert runtime.dead_letter_counts() == {}


def test_a_blocked_post_gives_up_while_half_a_downstream_bound_waits_in_the_worker() -> None:
    gate, holding = downstream_flow(8)
    with Runtime(overflow="block", post_timeout=0.2) as runtime:
        _fill_sink_to_half(runtime, holding)
        t0 = time.monotonic()
        with pytest.raises(
            QueueFullError,
            match=r"routine 'sink' \(at least half its max_queue_length=8.*waited 0.2 s",
        ):
            runtime.post("downstream", "source", "in", 5, worker_id="w")
        assert time.monotonic() - t0 >= 0.19
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        assert runtime.metrics()["jobs"]["completed"] == 5


def test_a_burst_of_posts_waits_for_the_flow_and_every_job_completes() -> None:
    """``block`` (the default): posts wait while half the bound of the routine downstream
    waits in the worker's mailboxes, and go on as they drain; no job fails at a full mailbox
    inside the flow."""
    gate, holding = downstream_flow(8)
    posted: list[Any] = []
    with Runtime(post_timeout=30) as runtime:
        runtime.exec("downstream", worker_id="w")

        def burst() -> None:
            for n in range(40):
                posted.append(runtime.post("downstream", "source", "in", n, worker_id="w")[1])

        poster = threading.Thread(target=burst)
        poster.start()
        assert holding.wait(10)
        wait_until(lambda: waiting_inside(poster, "admit"), "the burst to wait at post")
        assert len(posted) < 40
        assert runtime.metrics()["routines"]["w"]["sink"]["mailbox_depth"] < 8
        gate.set()
        poster.join(30)
        assert runtime.wait_until_all_jobs_finished(10)
        assert runtime.dead_letter_counts() == {}
    assert [job.status for job in posted] == [JobStatus.COMPLETED] * 40


def test_an_awaited_post_waits_for_the_backlog_while_the_loop_runs_on() -> None:
    gate, holding = downstream_flow(8)

    async def main() -> tuple[list[str], str, int]:
        events: list[str] = []
        async with Runtime(post_timeout=10) as runtime:
            await asyncio.to_thread(_fill_sink_to_half, runtime, holding)

            async def ticker() -> None:
                for _ in range(3):
                    await asyncio.sleep(0.01)
                    events.append("tick")
                events.append("release")
                gate.set()

            ticking = asyncio.create_task(ticker())
            _, fifth = await runtime.post_async("downstream", "source", "in", 5, worker_id="w")
            events.append("posted")
            await ticking
            await fifth
            assert await asyncio.to_thread(runtime.wait_until_all_jobs_finished, 10)
            return events, fifth.status.value, runtime.metrics()["jobs"]["completed"]

    events, status, completed = asyncio.run(main())
    assert events == ["tick", "tick", "tick", "release", "posted"]
    assert (status, completed) == ("completed", 6)


def test_post_yields_to_the_actors_once_post_pacing_messages_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import actorflow.runtime as runtime_module

    yields: list[int] = []
    monkeypatch.setattr(runtime_module, "_yield_interpreter", lambda: yields.append(1))
    started, gate = threading.Event(), threading.Event()

    def hold(sd: Any, m: Any, ws: Any) -> None:
        started.set()
        gate.wait(10)

    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(hold)
    one("paced", routine)
    with Runtime(post_pacing=3) as runtime:
        runtime.post("paced", "r", "in", 0)
        assert started.wait(10)  # the actor holds message 0: the mailbox is empty
        for i in range(1, 4):  # found 0, 1 and 2 messages waiting: no yield
            runtime.post("paced", "r", "in", i)
        assert yields == []
        runtime.post("paced", "r", "in", 4)  # found 3 waiting
        runtime.post("paced", "r", "in", 5)  # found 4 waiting
        assert yields == [1, 1]
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        assert runtime.metrics()["jobs"]["completed"] == 6
    with Runtime(post_pacing=None) as runtime:
        gate.clear()
        started.clear()
        runtime.post("paced", "r", "in", 0)
        assert started.wait(10)
        for i in range(1, 20):
            runtime.post("paced", "r", "in", i)
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
    assert yields == [1, 1]  # pacing off: never yields


@pytest.mark.parametrize("pacing", [0, -1, True, 2.5, "256"])
def test_bad_post_pacing_is_refused(pacing: Any) -> None:
    with pytest.raises(ConfigurationError, match="post_pacing"):
        Runtime(post_pacing=pacing)


def test_unknown_overflow_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Runtime(overflow="sometimes")


def test_job_timeout_fails_the_job_and_its_later_messages_become_dead_letters(
    runtime: Runtime,
) -> None:
    gate = threading.Event()
    first = make(lambda sd, m, ws: (gate.wait(10), first.emit("out")), events=("out",))
    later = make(lambda sd, m, ws: None)
    flow = Flow("timeout")
    flow.add_routine(first, "first")
    flow.add_routine(later, "later")
    flow.connect("first", "out", "later", "in")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("timeout", "first", "in", 1, timeout=0.1)
    assert job.wait(5)
    assert (
        job.status == JobStatus.FAILED
        and job.error == f"JobTimeoutError: job '{job.job_id}' timed out after 0.1 s"
    )
    gate.set()
    runtime.shutdown()
    assert {d["reason"] for d in runtime.dead_letters()} == {"job failed"}


def test_flow_default_job_timeout(runtime: Runtime) -> None:
    gate = threading.Event()
    flow = one("flowtimeout", make(lambda sd, m, ws: gate.wait(10)))
    flow.set_job_timeout(0.05)
    _, job = runtime.post("flowtimeout", "r", "in", 1)
    assert job.wait(5) and "timed out" in (job.error or "")
    gate.set()
    with pytest.raises(ValueError):
        runtime.post("flowtimeout", "r", "in", 1, timeout=-1)


def test_shutdown_stops_actors_in_reverse_order_and_runs_every_on_stop() -> None:
    stopped: list[str] = []

    class Tracked(Routine):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.add_slot("in")
            self.name = name

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            return None

        def on_stop(self) -> None:
            stopped.append(self.name)

    flow = Flow("ordered")
    for name in ("first", "second", "third"):
        flow.add_routine(Tracked(name), name)
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime()
    runtime.exec("ordered")
    jobs = [runtime.post("ordered", "first", "in", i)[1] for i in range(10)]
    runtime.shutdown()
    assert stopped == ["third", "second", "first"]
    assert all(job.status not in (JobStatus.PENDING, JobStatus.RUNNING) for job in jobs)


def test_emits_into_a_full_mailbox_are_refused_never_silently_dropped() -> None:
    gate = threading.Event()
    source = make(lambda sd, m, ws: [source.emit("out", n=i) for i in range(5)], events=("out",))
    sink = Routine()
    sink.add_slot("in", max_queue_length=2)
    sink.set_logic(lambda sd, m, ws: gate.wait(10))
    flow = Flow("bounded_emits")
    flow.add_routine(source, "source")
    flow.add_routine(sink, "sink")
    flow.connect("source", "out", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        _, job = runtime.post("bounded_emits", "source", "in", 1)
        assert job.wait(10)
        assert job.status == JobStatus.FAILED and "max_queue_length=2" in (job.error or "")
        assert runtime.dead_letter_counts() == {"refused (mailbox full)": 1}
        gate.set()


@pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_one_emit_per_message_into_a_full_mailbox_honours_its_max_queue_length(
    strict: bool, overflow: str
) -> None:
    """a -> b, b's slot holds 2 messages and b holds its first one: a's 4th and 5th emits find
    b's mailbox full. One message in, one out, is a plain routine's fast path; it honours the
    bound as every emit does: refused (the job fails) or, with drop_oldest, the oldest waiting
    message is dropped (its job fails).

    ``post`` keeps what waits in the worker under half of b's bound, so the messages for b are
    held in a's logic (a runs 4 actors), where no mailbox counts them, and let go one by one."""
    gate, holding = threading.Event(), threading.Event()
    handled: list[int] = []
    started = [threading.Event() for _ in range(5)]
    release = [threading.Event() for _ in range(5)]
    release[0].set()

    def forward(sd: Any, m: Any, ws: Any) -> None:
        v = sd["in"][0]
        started[v].set()
        release[v].wait(10)
        a.emit("out", v=v)

    def hold(sd: Any, m: Any, ws: Any) -> None:
        handled.append(sd["in"][0]["v"])
        holding.set()
        gate.wait(10)

    a = make(forward, events=("out",))
    a.set_concurrency(4)
    b = Routine()
    b.add_slot("in", max_queue_length=2)
    b.set_logic(hold)
    flow = Flow("bounded_hop")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    flow.connect("a", "out", "b", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=strict, overflow=overflow) as runtime:
        runtime.exec("bounded_hop", worker_id="w")
        jobs = [runtime.post("bounded_hop", "a", "in", 0, worker_id="w")[1]]
        assert holding.wait(10)  # b holds message 0: its mailbox is empty
        for v in (1, 2, 3, 4):
            jobs.append(runtime.post("bounded_hop", "a", "in", v, worker_id="w")[1])
            assert started[v].wait(10)  # an actor of a holds it
        for v in (1, 2):
            release[v].set()
            wait_until(
                lambda v=v: runtime.metrics()["routines"]["w"]["b"]["mailbox_depth"] == v,
                f"message {v} to wait in b's mailbox",
            )
        lost = (3, 4) if overflow == "block" else (1, 2)  # an actor never blocks: it refuses
        for v in (3, 4):
            release[v].set()
            assert jobs[lost[v - 3]].wait(10), "an emit went past max_queue_length=2"
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        dead = runtime.dead_letter_counts()
    for v, job in enumerate(jobs):
        if v in lost:
            assert job.status == JobStatus.FAILED and "QueueFullError" in (job.error or "")
        else:
            assert job.status == JobStatus.COMPLETED, job.error
    if overflow == "block":
        assert "max_queue_length=2" in (jobs[3].error or "")
        assert dead == {"refused (mailbox full)": 2} and handled == [0, 1, 2]
    else:
        assert "drop_oldest" in (jobs[1].error or "")
        assert dead == {"dropped (mailbox full)": 2} and handled == [0, 3, 4]


def test_continue_puts_the_recorded_error_in_the_trace(runtime: Runtime) -> None:
    fan_flow(ErrorStrategy.CONTINUE)
    _, job = runtime.post("fan", "source", "in", {})
    assert job.wait(10)
    (entry,) = job.trace_log
    assert entry["routine_id"] == "bad" and entry["action"] == "continue"
    assert entry["details"] == {
        "routine_id": "bad",
        "error": "ValueError: bad branch",
        "handled_as": "continue",
    }


def test_retry_waits_a_tenth_of_a_second_before_the_first_retry_by_default(
    runtime: Runtime,
) -> None:
    tries: list[int] = []

    def fails_once(sd: Any, m: Any, ws: Any) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("once")

    routine = make(fails_once)
    routine.set_error_handler(ErrorStrategy.RETRY())
    one("default_delay", routine)
    _, job = runtime.post("default_delay", "r", "in", 1)
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED and len(tries) == 2
    retries = [e["details"] for e in job.trace_log if e["action"] == "retry"]
    assert [(r["attempt"], r["delay"]) for r in retries] == [(1, 0.1)]


@pytest.mark.parametrize("backoff", [True, "2"])
def test_retry_refuses_a_backoff_that_is_no_number(backoff: Any) -> None:
    with pytest.raises(TypeError, match=rf"^RETRY: backoff must be a number, got {backoff!r}$"):
        ErrorStrategy.RETRY(backoff=backoff)


@pytest.mark.parametrize("retry_on", [(), [ConnectionError]])
def test_retry_refuses_retry_on_that_is_no_exception_type_or_tuple(retry_on: Any) -> None:
    with pytest.raises(
        TypeError, match=r"^RETRY: retry_on must be an exception type or a tuple of them$"
    ):
        ErrorStrategy.RETRY(retry_on=retry_on)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": 0}, r"^Supervision: period must be a finite number of seconds > 0 "),
        ({"backoff_base": -1}, r"^Supervision: backoff_base must be a finite number .* >= 0 "),
        ({"backoff_max": "5"}, r"^Supervision: backoff_max must be a number of seconds, got '5'$"),
    ],
)
def test_supervision_durations_are_checked_naming_supervision_and_the_field(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises((InvalidDurationError, TypeError), match=message):
        Supervision(**options)


def test_past_the_intensity_the_decision_is_to_fail_at_once() -> None:
    """A crash past the restart intensity fails the worker: no routine restarts and no
    backoff delays it, whatever backoff the supervision has."""
    supervision = Supervision("one_for_all", max_restarts=1, period=10, backoff_base=0.5)
    intensity = RestartIntensity(supervision, ["a", "b"])
    first = intensity.crashed("w", "a", "ActorCrash: 1", now=100.0)
    assert first == RestartDecision(None, ("b",), 0.5)
    second = intensity.crashed("w", "a", "ActorCrash: 2", now=101.0)
    assert second == RestartDecision(
        "worker 'w' failed: routine 'a' crashed (ActorCrash: 2); more than 1 restarts within 10 s",
        (),
        0.0,
    )
    assert intensity.count == 1
