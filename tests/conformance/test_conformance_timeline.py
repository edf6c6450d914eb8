"""A job's timeline on every backend: which routine handled it, when, for how long."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conformance_kit import Backend, make_routine, register

from actorflow import ErrorStrategy, JobStatus, get_current_job


def test_the_timeline_lists_each_handling_in_order_with_its_outcome(backend: Backend) -> None:
    def first_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        first.emit("out", n=slot_data["in"][0])

    def flaky(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        if state.increment("_tries", job.job_id) == 1:
            raise ConnectionError("the first try fails")

    first = make_routine(first_logic, events=["out"])
    strategy = ErrorStrategy.RETRY(max_retries=2, delay=0.0)
    register(
        "timed",
        {"first": first, "second": make_routine(flaky, strategy=strategy)},
        [("first", "out", "second", "in")],
    )
    with backend.runtime() as runtime:
        _, job = runtime.post("timed", "first", "in", 1)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.COMPLETED, job.error
    steps = job.timeline
    assert [(s["routine_id"], s["outcome"]) for s in steps] == [
        ("first", "ok"),
        ("second", "raised"),
        ("second", "ok"),
    ]
    starts = [datetime.fromisoformat(s["started_at"]) for s in steps]
    assert starts == sorted(starts)
    assert job.completed_at is not None
    if not backend.is_deterministic:  # steps are timed in real time, not in virtual time
        assert job.created_at <= starts[0] <= starts[-1] <= job.completed_at
    assert all(0 <= s["duration_ms"] < 10_000 for s in steps)
    assert job.timeline_dropped == 0
