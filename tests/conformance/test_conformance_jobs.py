"""Jobs on every backend: timeouts, cancellation, dead letters, and the merge order of job data."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, append, make_routine, register

from actorflow import JobStatus, batch_size_policy, get_current_job


def _waiting_flow(*, flow_timeout: float | None = None) -> None:
    """A routine whose data waits in a batch that never fills."""
    flow = register(
        "waits",
        {"batch": make_routine(lambda sd, m, ws: None, policy=batch_size_policy(10, timeout=None))},
    )
    if flow_timeout is not None:
        flow.set_job_timeout(flow_timeout)


def test_a_job_timeout_fails_the_job_and_its_data_becomes_a_dead_letter(
    backend: Backend,
) -> None:
    _waiting_flow()
    with backend.runtime() as runtime:
        _, job = runtime.post("waits", "batch", "in", 1, job_id="slow", timeout=0.2)
        _, other = runtime.post("waits", "batch", "in", 2, job_id="patient")
        assert job.wait(backend.wait)
        assert not other.done
        assert runtime.shutdown(timeout=backend.wait) is True  # the flush ends 'patient'
    assert job.status == JobStatus.FAILED
    assert job.error == "JobTimeoutError: job 'slow' timed out after 0.2 s"
    assert other.status == JobStatus.COMPLETED
    letters = [
        (d["job_id"], d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()
    ]
    assert letters == [("slow", "batch", "in", "job failed")]


def test_a_flow_job_timeout_applies_to_every_job_of_the_flow(backend: Backend) -> None:
    _waiting_flow(flow_timeout=0.2)
    with backend.runtime() as runtime:
        jobs = [runtime.post("waits", "batch", "in", n, job_id=f"j{n}")[1] for n in range(2)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert [job.error for job in jobs] == [
        "JobTimeoutError: job 'j0' timed out after 0.2 s",
        "JobTimeoutError: job 'j1' timed out after 0.2 s",
    ]


def test_cancelling_a_queued_job_ends_it_and_nothing_runs_for_it(backend: Backend) -> None:
    gate = backend.gate()

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()  # holds the first job while the second waits in the mailbox
        append(state, "ran", slot_data["in"][0])

    register("tasks", {"work": make_routine(logic)})
    with backend.runtime() as runtime:
        state = runtime.exec("tasks")
        _, first = runtime.post("tasks", "work", "in", "first")
        _, second = runtime.post("tasks", "work", "in", "second", job_id="task-2")
        gate.during(lambda: (runtime.cancel_job("task-2"), runtime.cancel_job("task-2")))
        assert first.wait(backend.wait)
        assert state.get_routine_state("ran") == ["first"]
        assert runtime.shutdown(timeout=backend.wait) is True
        assert gate.result() == (True, False)  # cancelled once; the second call finds it ended
    assert (first.status, second.status) == (JobStatus.COMPLETED, JobStatus.CANCELLED)
    assert second.error == "cancelled"
    assert runtime.cancel_job("no-such-job") is False
    letters = [
        (d["job_id"], d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()
    ]
    assert letters == [("task-2", "work", "in", "job cancelled")]  # it never ran


def test_cancelling_a_running_job_turns_its_emits_into_dead_letters(backend: Backend) -> None:
    _cancel_a_running_crawl(backend)


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["ray"], indirect=True)
def test_ray_cancel_job_returns_once_the_routine_actors_know(backend: Backend) -> None:
    """The ordered end notice the driver queues for the routine actors is held back here (as
    when its sender thread is slow): ``cancel_job`` itself must tell them before it returns,
    or ``fetch``'s emit reaches ``parse`` and runs instead of becoming a dead letter."""
    _cancel_a_running_crawl(backend, hold_back_end_notices=True)


def _cancel_a_running_crawl(backend: Backend, hold_back_end_notices: bool = False) -> None:
    gate = backend.gate()

    def fetch_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()  # a slow download; the job is cancelled meanwhile
        fetch.emit("page", html="<html></html>")

    fetch = make_routine(fetch_logic, events=("page",))
    register(
        "crawl",
        {"fetch": fetch, "parse": make_routine(lambda sd, m, ws: ws.increment("parse", "ran"))},
        [("fetch", "page", "parse", "in")],
    )
    with backend.runtime() as runtime:
        state = runtime.exec("crawl", worker_id="w")
        if hold_back_end_notices:
            runtime._backend.forget = lambda worker, job_id, status: None
        _, job = runtime.post("crawl", "fetch", "in", "https://example.invalid/", job_id="crawl-1")
        gate.during(lambda: runtime.cancel_job("crawl-1"))
        assert job.wait(backend.wait)
        assert runtime.shutdown(timeout=backend.wait) is True
        assert gate.result() is True
    assert job.status == JobStatus.CANCELLED
    assert state.status == "stopped"
    assert runtime.dead_letters() == [
        {
            "job_id": "crawl-1",
            "worker_id": "w",
            "routine_id": "parse",
            "slot": "in",
            "reason": "job cancelled",
        }
    ]
    assert runtime.dead_letter_counts() == {"job cancelled": 1}


class _Node:
    """Logic of a node of the merge-order flow: records what it saw, writes, passes on."""

    def __init__(self, name: str, writes: dict[str, str], events: tuple[str, ...]) -> None:
        self.name = name
        self.writes = writes
        self.events = events
        self.routine: Any = None

    def __call__(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data(f"{self.name}_saw", sorted(job.data))
        slot = "again" if slot_data.get("again") else "in"
        for key, value in self.writes.items():
            job.set_data(key, value.format(slot=slot))
        for event in self.events:
            self.routine.emit(event)


def test_job_data_merges_deeper_writes_over_shallower_whatever_their_order(
    backend: Backend,
) -> None:
    nodes = {
        "start": _Node("start", {"where": "start"}, ("out", "twice")),
        "side": _Node("side", {"where": "side (depth 2)"}, ()),
        "relay": _Node("relay", {}, ("out",)),
        "leaf": _Node("leaf", {"where": "leaf (depth 3)"}, ()),
        "tag": _Node("tag", {"tag": "tag via {slot}"}, ()),
    }
    routines = {}
    for name, node in nodes.items():
        node.routine = routines[name] = make_routine(
            node, slots=("in", "again") if name == "tag" else ("in",), events=node.events
        )
    register(
        "views",
        routines,
        [
            ("start", "out", "side", "in"),  # depth 2
            ("start", "out", "relay", "in"),
            ("relay", "out", "leaf", "in"),  # depth 3: wins whenever it is merged
            ("start", "out", "tag", "in"),  # tag runs twice at depth 2 ...
            ("start", "twice", "tag", "again"),  # ... 'again' is handled, and merged, last
        ],
    )
    with backend.runtime() as runtime:
        _, job = runtime.post("views", "start", "in", None)
        assert job.wait(backend.wait)
        assert job.status == JobStatus.COMPLETED, job.error
        assert job.get_data("where") == "leaf (depth 3)"
        assert job.get_data("tag") == "tag via again"
        assert job.get_data("leaf_saw") == ["relay_saw", "start_saw", "where"]  # upstream only
        assert job.get_data("side_saw") == ["start_saw", "where"]
        job.set_data("where", "set by the caller")  # the caller's writes win over every routine
        assert job.get_data("where") == "set by the caller"
        assert runtime.get_job(job.job_id).get_data("where") == "set by the caller"  # type: ignore[union-attr]
