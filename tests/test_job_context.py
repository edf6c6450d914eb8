"""The JobContext travels in the envelope: propagation, isolation, fan-in, merge order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import cloudpickle
import pytest
from flows import pipeline

from actorflow import (
    Flow,
    FlowRegistry,
    IncompleteJoinError,
    InvalidDurationError,
    JobStatus,
    Routine,
    Runtime,
    all_slots_ready_policy,
    get_current_job,
)
from actorflow._clock import Clock
from actorflow.engine.envelope import new_envelope
from actorflow.job import JobContext, _detached_record, job_context, new_record, view_parts


def make(
    logic: Any, slots: tuple[str, ...] = ("in",), events: tuple[str, ...] = ("out",)
) -> Routine:
    routine = Routine()
    for slot in slots:
        routine.add_slot(slot)
    for event in events:
        routine.add_event(event)
    routine.set_logic(logic)
    return routine


def test_data_set_upstream_is_visible_downstream_and_jobs_never_mix(runtime: Runtime) -> None:
    seen: dict[str, Any] = {}
    lock = threading.Lock()
    auth = make(
        lambda sd, m, ws: (
            get_current_job().set_data("user", sd["in"][0]["user"]),
            auth.emit("out"),
        )
    )  # type: ignore[union-attr]

    def business(sd: Any, m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        with lock:
            seen[job.metadata["request"]] = job.get_data("user")

    flow = Flow("chain")
    flow.add_routine(auth, "auth")
    flow.add_routine(make(business), "business")
    flow.connect("auth", "out", "business", "in")
    FlowRegistry.get_instance().register(flow)
    for i in range(200):
        runtime.post("chain", "auth", "in", {"user": f"user-{i}"}, metadata={"request": i})
    assert runtime.wait_until_all_jobs_finished(10)
    assert seen == {i: f"user-{i}" for i in range(200)}


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_actors_of_one_routine_inside_their_logic_at_once_each_see_their_own_job(
    strict: bool,
) -> None:
    """Two actors of one routine hold two jobs at the same moment (a barrier lets neither
    go on before both are in their logic): each sees its own job, before and after, and
    writes into its own job only."""
    both_inside = threading.Barrier(2, timeout=10)
    seen: dict[int, tuple[Any, ...]] = {}

    def logic(sd: Any, m: Any, ws: Any) -> None:
        mine = sd["in"][0]
        before = get_current_job()
        both_inside.wait()
        after = get_current_job()
        assert before is not None and after is not None
        after.set_data("handled", mine)
        seen[mine] = (before.metadata["n"], after.metadata["n"], after.get_data("handled"))

    routine = make(logic, events=())
    routine.set_concurrency(2)
    flow = Flow("pair")
    flow.add_routine(routine, "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=strict) as runtime:
        jobs = [runtime.post("pair", "r", "in", n, metadata={"n": n})[1] for n in (0, 1)]
        assert runtime.wait_until_all_jobs_finished(10)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2, [j.error for j in jobs]
    assert seen == {0: (0, 0, 0), 1: (1, 1, 1)}
    assert [dict(job.data) for job in jobs] == [{"handled": 0}, {"handled": 1}]


def test_metadata_and_data_are_read_only(runtime: Runtime) -> None:
    pipeline("pipe", 1)
    _, job = runtime.post("pipe", "r0", "in", {"value": 1}, metadata={"user_id": 7})
    assert job.wait(10)
    assert job.metadata["user_id"] == 7
    with pytest.raises(TypeError):
        job.metadata["user_id"] = 8  # type: ignore[index]
    with pytest.raises(TypeError):
        job.data["path"] = []  # type: ignore[index]
    job.set_data("note", "from outside")
    assert job.get_data("note") == "from outside"


def test_fan_in_sees_the_context_of_the_message_it_handles(runtime: Runtime) -> None:
    """Branches write different values; the joining routine sees each branch's own view."""
    seen: list[tuple[str, Any]] = []
    lock = threading.Lock()
    source = make(lambda sd, m, ws: source.emit("out"))

    def branch(name: str) -> Routine:
        routine = make(
            lambda sd, m, ws: (get_current_job().set_data("branch", name), routine.emit("out"))
        )  # type: ignore[union-attr]
        return routine

    def join(sd: Any, m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        with lock:
            seen.append((job.get_data("branch"), job.get_data("root")))

    flow = Flow("fan")
    flow.add_routine(source, "source")
    flow.add_routine(branch("left"), "left")
    flow.add_routine(branch("right"), "right")
    flow.add_routine(make(join), "join")
    flow.connect("source", "out", "left", "in")
    flow.connect("source", "out", "right", "in")
    flow.connect("left", "out", "join", "in")
    flow.connect("right", "out", "join", "in")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("fan", "source", "in", {})
    assert job.wait(10)
    assert sorted(seen) == [("left", None), ("right", None)]
    assert job.get_data("branch") in ("left", "right")  # same depth: merged last wins


def test_downstream_write_wins_and_merge_order_survives_late_arrivals(runtime: Runtime) -> None:
    def upstream_logic(sd: Any, m: Any, ws: Any) -> None:
        get_current_job().set_data("k", "upstream")  # type: ignore[union-attr]
        upstream.emit("out")

    def downstream_logic(sd: Any, m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None and job.get_data("k") == "upstream"
        job.set_data("k", "downstream")

    upstream = make(upstream_logic)
    flow = Flow("order")
    flow.add_routine(upstream, "up")
    flow.add_routine(make(downstream_logic), "down")
    flow.connect("up", "out", "down", "in")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("order", "up", "in", {})
    assert job.wait(10)
    assert job.status == JobStatus.COMPLETED
    assert job.get_data("k") == "downstream"
    # changes that arrive out of order (as from another process) still merge causally
    record = new_record("j", "f", "w", None, Clock())
    record.merge("late", "deep", 3)
    record.merge("late", "shallow", 1)
    assert record.data["late"] == "deep"


def test_children_see_the_final_data_and_siblings_never_see_each_other(runtime: Runtime) -> None:
    """Copy-on-write: fan-out siblings share the parent's data until one of them writes."""
    seen: dict[str, Any] = {}
    lock = threading.Lock()

    def parent(sd: Any, m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("x", 1)
        first.emit("out")
        job.set_data("x", 2)  # emits are delivered when the logic returns: children see 2

    def child(name: str) -> Routine:
        def logic(sd: Any, m: Any, ws: Any) -> None:
            job = get_current_job()
            assert job is not None
            job.set_data(name, True)
            with lock:
                seen[name] = dict(job.data)

        return make(logic)

    first = make(parent)
    flow = Flow("cow")
    flow.add_routine(first, "parent")
    flow.add_routine(child("left"), "left")
    flow.add_routine(child("right"), "right")
    flow.connect("parent", "out", "left", "in")
    flow.connect("parent", "out", "right", "in")
    FlowRegistry.get_instance().register(flow)
    for strict in (False, True):
        seen.clear()
        with Runtime(strict=strict) as rt:
            _, job = rt.post("cow", "parent", "in", {})
            assert job.wait(10)
        assert seen == {"left": {"x": 2, "left": True}, "right": {"x": 2, "right": True}}
        assert dict(job.data) == {"x": 2, "left": True, "right": True}


def test_trace_entries_have_timestamp_routine_action_details(runtime: Runtime) -> None:
    routine = make(lambda sd, m, ws: get_current_job().trace("only", "seen", {"n": sd["in"][0]}))  # type: ignore[union-attr]
    flow = Flow("trace")
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("trace", "only", "in", 5)
    assert job.wait(10)
    (entry,) = job.trace_log
    assert (
        entry["routine_id"] == "only" and entry["action"] == "seen" and entry["details"] == {"n": 5}
    )
    assert "T" in entry["timestamp"] and entry["timestamp"].endswith("+00:00")


def test_envelope_round_trips_through_cloudpickle(runtime: Runtime) -> None:
    pipeline("pipe", 1)
    _, job = runtime.post("pipe", "r0", "in", {"value": 1}, metadata={"m": 1})
    assert job.wait(10)
    envelope = new_envelope("r0", "in", {"payload": (1, 2)}, job._rec, {"a": [1, 2]}, 2)
    copy = cloudpickle.loads(cloudpickle.dumps(envelope))
    assert (copy.target, copy.slot, copy.payload) == ("r0", "in", {"payload": (1, 2)})
    view = copy.job
    assert view is not None and view.job_id == job.job_id
    assert dict(view.metadata) == {"m": 1}
    assert view.get_data("a") == [1, 2]
    view.set_data("b", 3)  # a detached view keeps working on the far side
    assert view.get_data("b") == 3
    assert copy.job.get_data("b") is None  # ... in its own copy: the message is unchanged


def test_strict_mode_names_routine_event_and_slot_of_unpicklable_payload() -> None:
    sender = make(lambda sd, m, ws: sender.emit("out", lock=threading.Lock()))
    receiver = make(lambda sd, m, ws: None)
    flow = Flow("strict")
    flow.add_routine(sender, "sender")
    flow.add_routine(receiver, "receiver")
    flow.connect("sender", "out", "receiver", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=True) as runtime:
        _, job = runtime.post("strict", "sender", "in", {})
        assert job.wait(10)
        assert job.status == JobStatus.FAILED
        assert "'sender'" in job.error and "'out'" in job.error and "receiver.in" in job.error  # type: ignore[operator]
        from actorflow import SerializationError

        with pytest.raises(SerializationError, match="post"):
            runtime.post("strict", "sender", "in", {"bad": threading.Lock()})
        assert len(runtime.list_jobs()) == 1


def test_strict_mode_gives_each_routine_its_own_copy() -> None:
    seen_ids: list[int] = []
    shared = {"items": [1]}
    source = make(
        lambda sd, m, ws: (source.emit("out", obj=shared), source.emit("out", obj=shared))
    )

    def sink(sd: Any, m: Any, ws: Any) -> None:
        obj = sd["in"][0]["obj"]
        obj["items"].append(2)
        seen_ids.append(id(obj))

    flow = Flow("copies")
    flow.add_routine(source, "source")
    flow.add_routine(make(sink), "sink")
    flow.connect("source", "out", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=True) as runtime:
        _, job = runtime.post("copies", "source", "in", {})
        assert job.wait(10)
    assert shared == {"items": [1]}
    assert len(set(seen_ids)) == 2


class _Countdown(Routine):
    """Sends its input back to itself, one less each time, until it reaches 0."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")
        self.add_event("again")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        item = slot_data["in"][0]
        left = item if isinstance(item, int) else item["value"]
        if left > 0:
            self.emit("again", value=left - 1)


def test_the_timeline_keeps_the_first_steps_and_counts_the_rest() -> None:
    from actorflow.job import MAX_TIMELINE_STEPS

    flow = Flow("countdown")
    flow.add_routine(_Countdown(), "count")
    flow.connect("count", "again", "count", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        _, job = runtime.post("countdown", "count", "in", MAX_TIMELINE_STEPS + 43)
        assert job.wait(10)
    assert job.status == JobStatus.COMPLETED, job.error
    assert len(job.timeline) == MAX_TIMELINE_STEPS == 256
    assert job.timeline_dropped == 44
    assert {step["routine_id"] for step in job.timeline} == {"count"}


def test_a_job_context_made_by_its_constructor_copies_its_data_before_the_first_write() -> None:
    record = new_record("j", "f", "w", None, Clock())
    given = {"a": 1}
    view = JobContext(record, given, depth=1)
    view.set_data("b", 2)
    assert given == {"a": 1}
    assert dict(view.data) == {"a": 1, "b": 2}


def test_a_new_job_has_no_error_and_a_rebuilt_one_has_started() -> None:
    record = new_record("j", "f", "w", None, Clock())
    assert record.error is None
    assert job_context(record).error is None
    assert job_context(record).status == JobStatus.PENDING
    rebuilt = _detached_record("j", "f", "w", {}, 0.0)
    assert job_context(rebuilt).status == JobStatus.RUNNING


def test_a_message_sent_downstream_carries_its_branchs_data_one_level_deeper() -> None:
    """The child of a view carries the view's data, not the job's merged data, and writes
    one level deeper than the view: below a deeper write of another branch."""
    record = new_record("j", "f", "w", None, Clock())
    branch = JobContext._view(record, {"k": "mine"}, 1)
    record.merge("k", "other branch", 3)
    child = branch._child()
    assert child.get_data("k") == "mine"
    child.set_data("k", "child")  # at depth 2: the other branch's write at depth 3 stays
    assert record.data["k"] == "other branch"
    assert child.get_data("k") == "child"


def test_a_joins_view_writes_at_the_depth_of_its_deepest_branch() -> None:
    record = new_record("j", "f", "w", None, Clock())
    shallow = JobContext._view(record, {"a": 1}, 2)
    deep = JobContext._view(record, {"b": 2}, 5)
    record.merge("k", "a write at depth 4", 4)
    joined = JobContext._joined([deep, shallow])
    assert dict(joined.data) == {"a": 1, "b": 2}
    joined.set_data("k", "the join's")
    assert record.data["k"] == "the join's"


def test_a_job_context_made_owning_its_data_writes_into_it() -> None:
    record = new_record("j", "f", "w", None, Clock())
    given = {"a": 1}
    view = JobContext(record, given, own=True, depth=1)
    view.set_data("b", 2)
    assert given == {"a": 1, "b": 2}
    assert record.data == {"b": 2}


def test_a_view_copies_its_data_again_once_a_message_went_downstream() -> None:
    """Copy-on-write holds after a send too: a write the sender makes after its child was
    made (the sender's view kept by its logic) never reaches the child's data."""
    record = new_record("j", "f", "w", None, Clock())
    view = JobContext._view(record, {"a": 1}, 1)
    view.set_data("k", "sent")  # the view owns a copy now
    child = view._child()
    view.set_data("k", "after the send")
    assert child.get_data("k") == "sent"
    assert dict(child.data) == {"a": 1, "k": "sent"}
    assert view.get_data("k") == "after the send"


def test_a_join_of_three_branches_writes_at_the_depth_of_the_deepest() -> None:
    record = new_record("j", "f", "w", None, Clock())
    views = [
        JobContext._view(record, {"b": 2}, 3),
        JobContext._view(record, {"c": 3}, 5),
        JobContext._view(record, {"a": 1}, 2),
    ]
    record.merge("k", "a write at depth 4", 4)
    joined = JobContext._joined(views)
    assert dict(joined.data) == {"a": 1, "b": 2, "c": 3}
    joined.set_data("k", "the join's")  # at depth 5
    assert record.data["k"] == "the join's"


def test_a_write_at_depth_zero_lands_in_the_jobs_data() -> None:
    """A view made by the constructor with its default depth (0, the post itself) writes
    into the job's data when nothing else wrote the key."""
    record = new_record("j", "f", "w", None, Clock())
    view = JobContext(record, {})
    view.set_data("k", "v")
    assert job_context(record).get_data("k") == "v"
    record.merge("k", "deeper", 1)
    assert job_context(record).get_data("k") == "deeper"


def test_view_parts_gives_the_views_own_data_or_a_copy_of_the_jobs() -> None:
    """What a transport rebuilds an envelope from on the far side of a process boundary."""
    record = new_record("j", "f", "w", None, Clock())
    record.merge("merged", 1, 1)
    branch = JobContext._view(record, {"branch": 2}, 3)
    assert view_parts(branch) == (record, {"branch": 2}, 3)
    rec, data, depth = view_parts(job_context(record))
    assert rec is record and data == {"merged": 1} and depth == 0
    data["merged"] = 99  # a copy: the job's data is unchanged
    assert record.data == {"merged": 1}


class CountingLock:
    """A lock that counts the threads that asked for it (``with``), to know when they wait."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self._asked = threading.Semaphore(0)

    def __enter__(self) -> bool:
        self._asked.release()
        return self.inner.acquire()

    def __exit__(self, *exc: object) -> None:
        self.inner.release()

    def wait_asked(self, timeout: float) -> bool:
        return self._asked.acquire(timeout=timeout)


def test_of_two_racing_finishes_only_the_first_says_it_ended_the_job() -> None:
    """Both threads read the job's lock while it runs and then wait for it: the one that
    gets it second finds the job ended and returns False, as cancel_job racing a timeout."""
    record = new_record("j", "f", "w", None, Clock())
    lock = CountingLock()
    record._lock = lock  # type: ignore[assignment]
    results: list[bool] = []
    lock.inner.acquire()
    threads = [
        threading.Thread(target=lambda: results.append(record.finish(JobStatus.CANCELLED)))
        for _ in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        assert lock.wait_asked(10) and lock.wait_asked(10)
    finally:
        lock.inner.release()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False, True]
    assert job_context(record).status == JobStatus.CANCELLED


def test_wait_with_a_negative_timeout_names_job_context_wait() -> None:
    job = job_context(new_record("j", "f", "w", None, Clock()))
    with pytest.raises(InvalidDurationError, match=r"JobContext\.wait"):
        job.wait(-1)


def test_data_the_application_writes_through_the_posted_job_wins_over_a_routine_write(
    runtime: Runtime,
) -> None:
    """The application's write lands while the job runs, and a routine's later write of
    the same key does not replace it."""
    release = threading.Event()

    def writer(sd: Any, m: Any, ws: Any) -> None:
        assert release.wait(10)
        job = get_current_job()
        assert job is not None
        job.set_data("owner", "routine")
        job.set_data("routine_only", True)

    flow = Flow("app_writes")
    flow.add_routine(make(writer), "writer")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("app_writes", "writer", "in", 1)
    try:
        job.set_data("owner", "application")
        assert job.get_data("owner") == "application"
    finally:
        release.set()
    assert job.wait(10) and job.status == JobStatus.COMPLETED, job.error
    assert dict(job.data) == {"owner": "application", "routine_only": True}


class FinishingLock(CountingLock):
    """A lock that ends ``record`` the first time it is asked for, before it is taken: the
    job finishes between a caller reading the job's lock and taking it."""

    def __init__(self, record: Any) -> None:
        super().__init__()
        self.record = record
        self.first = True

    def __enter__(self) -> bool:
        if self.first:
            self.first = False
            self.record._lock = threading.Lock()  # finish() takes its own lock
            assert self.record.finish(JobStatus.COMPLETED)
        return super().__enter__()


def test_awaiting_a_job_that_finishes_as_the_await_starts_resolves() -> None:
    record = new_record("j", "f", "w", None, Clock())
    record._lock = FinishingLock(record)  # type: ignore[assignment]
    job = job_context(record)

    async def await_job() -> JobContext:
        return await asyncio.wait_for(job, 1)

    assert asyncio.run(await_job()) is job


def test_wait_that_races_the_job_finishing_returns_true() -> None:
    record = new_record("j", "f", "w", None, Clock())
    record._lock = FinishingLock(record)  # type: ignore[assignment]
    assert job_context(record).wait(0.5) is True


def test_a_job_whose_data_waits_in_two_joins_at_once_fails_as_an_incomplete_join(
    runtime: Runtime,
) -> None:
    """Each of two joins holds one branch of the job and nothing else is in flight: the
    job fails with IncompleteJoinError (it does not hang)."""

    def branch(sd: Any, m: Any, ws: Any) -> None:
        split.emit("a", v=1)
        split.emit("b", v=2)

    split = make(branch, events=("a", "b", "never"))
    flow = Flow("two_joins")
    flow.add_routine(split, "split")
    for name in ("join1", "join2"):
        join = make(lambda sd, m, ws: None, slots=("left", "right"), events=())
        join.set_activation_policy(all_slots_ready_policy())
        flow.add_routine(join, name)
        flow.connect("split", "never", name, "right")
    flow.connect("split", "a", "join1", "left")
    flow.connect("split", "b", "join2", "left")
    FlowRegistry.get_instance().register(flow)
    _, job = runtime.post("two_joins", "split", "in", 0)
    assert job.wait(5), "the job hangs: the two parked messages were not both counted"
    assert job.status == JobStatus.FAILED
    assert job.error is not None and job.error.startswith(IncompleteJoinError.__name__)
