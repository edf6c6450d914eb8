"""Metrics on every backend: per routine handled, failed, retried; jobs by status; dead letters."""

from __future__ import annotations

import time
from typing import Any

from conformance_kit import Backend, make_routine, register

from actorflow import ErrorStrategy, JobStatus, batch_size_policy, get_current_job


def test_metrics_count_every_outcome_exactly(backend: Backend) -> None:
    def flaky(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        if state.increment("_tries", job.job_id) == 1:
            raise ConnectionError("the first try fails")

    def bad(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        raise ValueError("never works")

    def skipped(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        raise ValueError("skip me")

    register(
        "counted",
        {
            "flaky": make_routine(flaky, strategy=ErrorStrategy.RETRY(max_retries=1, delay=0.0)),
            "bad": make_routine(bad),
            "skipped": make_routine(skipped, strategy="skip"),
        },
    )
    with backend.runtime() as runtime:
        runtime.exec("counted", worker_id="w")
        jobs = [runtime.post("counted", "flaky", "in", n)[1] for n in range(3)]
        jobs += [runtime.post("counted", "bad", "in", n)[1] for n in range(2)]
        jobs += [runtime.post("counted", "skipped", "in", 0)[1]]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        metrics = runtime.metrics()
        dead = runtime.dead_letter_counts()
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3 + [JobStatus.FAILED] * 2 + [
        JobStatus.COMPLETED
    ]
    counters = {
        rid: {
            name: metrics["routines"]["w"][rid][name]
            for name in ("handled", "failed", "retried", "queued")
        }
        for rid in ("flaky", "bad", "skipped")
    }
    assert counters == {
        "flaky": {"handled": 3, "failed": 3, "retried": 3, "queued": 0},
        "bad": {"handled": 0, "failed": 2, "retried": 0, "queued": 0},
        "skipped": {"handled": 0, "failed": 1, "retried": 0, "queued": 0},
    }
    finished = {"completed": 4, "failed": 2, "cancelled": 0}
    assert metrics["jobs"] == {"active": 0, **finished}
    assert metrics["workers"]["w"]["jobs"] == {"active": 0, **finished}
    assert metrics["workers"]["w"]["status"] == "running"
    assert metrics["workers"]["w"]["flow_id"] == "counted"
    assert dead == {"skipped": 1}
    assert metrics["dead_letters"] == {"total": 1, "by_reason": {"skipped": 1}}


def test_metrics_count_cancelled_jobs(backend: Backend) -> None:
    never_full = batch_size_policy(10, timeout=None)  # the job cannot end by itself
    register("idle", {"r": make_routine(lambda sd, m, ws: None, policy=never_full)})
    with backend.runtime() as runtime:
        runtime.exec("idle", worker_id="w")
        _, job = runtime.post("idle", "r", "in", 1)
        assert runtime.cancel_job(job.job_id)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        metrics = runtime.metrics()
    assert job.status == JobStatus.CANCELLED
    assert metrics["jobs"] == {"active": 0, "completed": 0, "failed": 0, "cancelled": 1}
    assert metrics["workers"]["w"]["jobs"]["cancelled"] == 1


def test_the_handling_time_histogram_adds_up_every_run(backend: Backend) -> None:
    """A slow run (6 ms of work), two fast ones after it and a failing one: four runs in the
    histogram, whose sum holds the slow run, and none of them past the last bound."""

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        row = slot_data["in"][0]
        if row == "slow":
            until = time.perf_counter() + 0.006
            while time.perf_counter() < until:
                pass
        elif row == "bad":
            raise ValueError("bad row")

    register("timed", {"r": make_routine(logic)})
    with backend.runtime() as runtime:
        runtime.exec("timed", worker_id="w")
        jobs = [runtime.post("timed", "r", "in", row)[1] for row in ("slow", "fast", "fast", "bad")]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        metrics = runtime.metrics()["routines"]["w"]["r"]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3 + [JobStatus.FAILED]
    assert (metrics["handled"], metrics["failed"]) == (3, 1)
    histogram = metrics["handling_seconds"]
    buckets = histogram["buckets"]
    assert histogram["count"] == 4
    assert sum(buckets.values()) == 4
    assert buckets["+Inf"] == 0
    assert 0.006 <= histogram["sum"] < 5.0
    slow = sum(
        count for bound, count in buckets.items() if bound != "+Inf" and float(bound) > 0.005
    )
    assert slow >= 1  # the slow run, in the bucket of its 6 ms or a later one
