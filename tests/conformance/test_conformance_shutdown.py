"""Shutdown on every backend: graceful flush, immediate cancel, the timeout, on_stop, and what
is left afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conformance_kit import Backend, actorflow_threads, make_routine, register

from actorflow import (
    ErrorStrategy,
    JobStatus,
    Routine,
    RuntimeClosedError,
    batch_size_policy,
    custom_policy,
    get_current_job,
)


def test_a_graceful_shutdown_flushes_partial_batches_and_their_jobs_complete(
    backend: Backend,
) -> None:
    """Three rows wait in a batch of ten; a job through another routine, posted after them
    and waited for, makes sure they left the driver before the shutdown begins."""

    def export(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("rows", slot_data["in"])
        job.set_data("reason", message["reason"])

    register(
        "export",
        {
            "export": make_routine(export, policy=batch_size_policy(10, timeout=60)),
            "marker": make_routine(lambda sd, m, ws: None),
        },
    )
    runtime = backend.runtime()
    jobs = [runtime.post("export", "export", "in", n)[1] for n in range(3)]
    assert runtime.post("export", "marker", "in", None)[1].wait(backend.wait)
    assert not any(job.done for job in jobs)
    assert runtime.shutdown() is True
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    written = [dict(job.data) for job in jobs if job.data]  # the batch's current job
    assert written == [{"rows": [0, 1, 2], "reason": "flush"}]
    assert runtime.dead_letter_counts() == {}


def test_an_immediate_shutdown_cancels_the_jobs_of_queued_data(backend: Backend) -> None:
    """Rows wait in a slot queue (a custom policy runs on ``go`` alone); once the ``go`` job,
    posted after them, completed, they are queued."""

    def on_go(queued: Any) -> tuple[bool, dict[str, int], None]:
        return bool(queued["go"]), {"go": len(queued["go"]), "rows": 0}, None

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if slot_data["rows"]:
            raise AssertionError("queued rows ran")

    register(
        "queued", {"r": make_routine(logic, slots=("rows", "go"), policy=custom_policy(on_go))}
    )
    runtime = backend.runtime()
    rows = [runtime.post("queued", "r", "rows", n)[1] for n in range(3)]
    _, go = runtime.post("queued", "r", "go", None)
    assert go.wait(backend.wait)
    assert runtime.shutdown(wait=False) is False
    assert [job.status for job in rows] == [JobStatus.CANCELLED] * 3
    assert {job.error for job in rows} == {"cancelled: runtime shut down"}
    assert runtime.dead_letter_counts() == {"routine stopped": 3}


def test_a_shutdown_cancels_the_jobs_unfinished_at_its_timeout(backend: Backend) -> None:
    def flaky(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        raise ConnectionError("down for a while")

    strategy = ErrorStrategy.RETRY(max_retries=1, delay=30.0)
    register("retrying", {"r": make_routine(flaky, strategy=strategy)})
    runtime = backend.runtime()
    _, job = runtime.post("retrying", "r", "in", 1)  # waits 30 s for its retry
    assert not job.wait(0.2)
    started = time.monotonic()
    assert runtime.shutdown(timeout=0.5) is False
    took = time.monotonic() - started
    assert job.status == JobStatus.CANCELLED
    assert job.error == "cancelled: runtime shut down"
    assert took < 5.0, f"shutdown(timeout=0.5) took {took:.1f} s"


class _Tracked(Routine):
    """Appends its id to a file when its actor stops (the file is seen by every process)."""

    def __init__(self, log: Path, last: bool) -> None:
        super().__init__()
        self.add_slot("in")
        if not last:
            self.add_event("out")
        self.set_config(log=str(log))

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if "out" in self.events:
            self.emit("out", n=slot_data["in"][0])

    def on_stop(self) -> None:
        with open(self.get_config("log"), "a") as log:
            log.write(f"{self.routine_id}\n")


def test_after_a_shutdown_actors_have_stopped_in_reverse_order_and_nothing_is_left(
    backend: Backend, tmp_path: Path
) -> None:
    log = tmp_path / "stopped.txt"
    names = ("first", "second", "third")
    register(
        "ordered",
        {name: _Tracked(log, name == "third") for name in names},
        [("first", "out", "second", "in"), ("second", "out", "third", "in")],
    )
    before = set(actorflow_threads())
    runtime = backend.runtime()
    jobs = [runtime.post("ordered", "first", "in", n)[1] for n in range(3)]
    assert runtime.shutdown() is True
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    assert log.read_text().split() == ["third", "second", "first"]
    with pytest.raises(RuntimeClosedError):
        runtime.post("ordered", "first", "in", 4)
    assert runtime.shutdown(wait=False) is True  # the result of the shutdown that was made
    assert runtime.closed
    assert [t.name for t in actorflow_threads() if t not in before] == []
