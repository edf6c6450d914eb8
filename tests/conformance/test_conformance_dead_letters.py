"""Dead letters on every backend: which job, worker, routine and slot each one names, and why.

Counting dead letters by reason says that something was not delivered; these tests check that
each dead letter says what: a message left behind by a failed worker, data waiting in a slot
queue when the runtime stops, data dropped or refused by a full slot queue, and the messages
a routine emitted for a job that ended while its logic ran.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _waiting import wait_until
from conformance_kit import Backend, make_routine, register

from actorflow import (
    ActorCrash,
    JobStatus,
    WorkerFailedError,
    batch_size_policy,
    custom_policy,
)
from actorflow.backends.ray._ledger import Ledger


def _letters(runtime: Any, reason: str) -> list[tuple[Any, ...]]:
    """The dead letters with ``reason``, as sorted (job, worker, routine, slot) tuples."""
    return sorted(
        (entry["job_id"], entry["worker_id"], entry["routine_id"], entry["slot"])
        for entry in runtime.dead_letters()
        if entry["reason"] == reason
    )


def test_a_failed_worker_stays_failed_and_its_leftover_messages_name_their_jobs(
    backend: Backend,
) -> None:
    """The first message crashes the actor past the restart intensity (no restart allowed)
    while two more wait in its mailbox: the worker fails, and so do their jobs; once stopped,
    the worker is still ``failed`` and each message left behind is a dead letter of its job."""
    gate = backend.gate()

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()  # hold the first message until the others are queued
        raise ActorCrash("the printer caught fire")

    flow = register("leftovers", {"printer": make_routine(logic)})
    flow.set_supervision("one_for_one", max_restarts=0, period=60)
    with backend.runtime() as runtime:
        state = runtime.exec("leftovers", worker_id="w")
        _, first = runtime.post("leftovers", "printer", "in", 0)
        gate.during(lambda: [runtime.post("leftovers", "printer", "in", n)[1] for n in (1, 2)])
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        queued = gate.result()
        backend.settle(runtime)
    assert state.status == "failed"
    assert first.status == JobStatus.FAILED
    assert [job.status for job in queued] == [JobStatus.FAILED] * 2
    assert all(job.error.startswith(WorkerFailedError.__name__) for job in queued)
    assert _letters(runtime, "worker failed") == sorted(
        (job.job_id, "w", "printer", "in") for job in queued
    )
    assert "worker stopped" not in runtime.dead_letter_counts()


def test_data_in_a_stopping_routines_slot_queue_is_dead_letters_of_its_jobs(
    backend: Backend,
) -> None:
    """Rows wait in a slot queue (a custom policy runs on ``go`` alone) when the runtime stops
    without draining: each row's job is cancelled, and its dead letter names it and the slot."""
    _stop_with_rows_queued(backend)


class _SlowLedger(Ledger):
    """A ledger that takes a second to take in a report of dead letters (as a busy one
    would)."""

    async def report(self, reports: list[tuple[Any, ...]]) -> None:
        if any(entry[0] == "dead" for entry in reports):
            await asyncio.sleep(1.0)
        await super().report(reports)


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["ray"], indirect=True)
def test_ray_a_stopping_actor_returns_once_its_dead_letters_reached_the_ledger(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver kills a routine actor once its ``stop`` returns, then closes the ledger: the
    dead letters the stop reported must be in the ledger by then, however slowly it takes
    them in, or they are lost."""
    from actorflow.backends.ray import _driver

    made = _driver._remote_classes

    def with_a_slow_ledger(ray: Any) -> tuple[Any, Any, Any]:
        host, state, _ = made(ray)
        return host, state, ray.remote(num_cpus=0)(_SlowLedger)

    monkeypatch.setattr(_driver, "_remote_classes", with_a_slow_ledger)
    _stop_with_rows_queued(backend)


def _stop_with_rows_queued(backend: Backend) -> None:
    def on_go(queued: Any) -> tuple[bool, dict[str, int], None]:
        return bool(queued["go"]), {"go": len(queued["go"]), "rows": 0}, None

    register(
        "queued",
        {
            "r": make_routine(
                lambda sd, m, ws: None, slots=("rows", "go"), policy=custom_policy(on_go)
            )
        },
    )
    runtime = backend.runtime()
    runtime.exec("queued", worker_id="w")
    rows = [runtime.post("queued", "r", "rows", n)[1] for n in range(2)]
    _, go = runtime.post("queued", "r", "go", None)
    assert go.wait(backend.wait)
    assert go.status == JobStatus.COMPLETED  # it released 0 rows and ran
    assert runtime.shutdown(wait=False) is False
    assert [job.status for job in rows] == [JobStatus.CANCELLED] * 2
    assert _letters(runtime, "routine stopped") == sorted(
        (job.job_id, "w", "r", "rows") for job in rows
    )


def _batch_flow(max_queue_length: int) -> None:
    register(
        "batches",
        {
            "batch": make_routine(
                lambda sd, m, ws: None,
                policy=batch_size_policy(10, timeout=None),
                max_queue_length=max_queue_length,
            )
        },
    )


def _queue_rows(backend: Backend, runtime: Any, count: int) -> list[Any]:
    """Post ``count`` rows to the batch one by one, each once the previous one is queued (so
    the mailbox never holds two)."""
    jobs = []
    for row in range(count):
        jobs.append(runtime.post("batches", "batch", "in", row, worker_id="w")[1])
        backend.settle(runtime)
        wait_until(
            lambda n=row: runtime.metrics()["routines"]["w"]["batch"]["queued"] == n + 1,
            f"row {row} queued",
            backend.wait,
        )
    return jobs


def test_a_full_slot_queue_under_drop_oldest_drops_its_oldest_data(backend: Backend) -> None:
    _batch_flow(max_queue_length=2)
    with backend.runtime(overflow="drop_oldest") as runtime:
        runtime.exec("batches", worker_id="w")
        jobs = _queue_rows(backend, runtime, 2)
        _, third = runtime.post("batches", "batch", "in", 2, worker_id="w")
        backend.settle(runtime)
        assert jobs[0].wait(backend.wait)
        assert runtime.metrics()["routines"]["w"]["batch"]["queued"] == 2
        assert not jobs[1].done and not third.done
        assert runtime.shutdown(timeout=backend.wait) is True  # the flush runs rows 1 and 2
    assert [job.status for job in [*jobs, third]] == [
        JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED
    ]  # fmt: skip
    assert jobs[0].error == (
        "QueueFullError: dropped: slot batch.in holds 2 data points (drop_oldest)"
    )
    assert runtime.dead_letter_counts() == {"dropped (slot full)": 1}
    assert _letters(runtime, "dropped (slot full)") == [(jobs[0].job_id, "w", "batch", "in")]


def test_data_refused_by_a_full_slot_queue_is_a_dead_letter_of_its_job(backend: Backend) -> None:
    _batch_flow(max_queue_length=1)
    with backend.runtime(overflow="raise") as runtime:
        runtime.exec("batches", worker_id="w")
        (first,) = _queue_rows(backend, runtime, 1)
        _, refused = runtime.post("batches", "batch", "in", 1, worker_id="w")
        assert refused.wait(backend.wait)
        assert runtime.shutdown(timeout=backend.wait) is True
    assert (first.status, refused.status) == (JobStatus.COMPLETED, JobStatus.FAILED)
    assert refused.error == "QueueFullError: refused: slot batch.in holds 1 data points"
    assert runtime.dead_letter_counts() == {"refused (slot full)": 1}  # its data never queued
    assert _letters(runtime, "refused (slot full)") == [(refused.job_id, "w", "batch", "in")]


def test_what_a_routine_emits_for_a_job_that_ended_meanwhile_is_dead_letters(
    backend: Backend,
) -> None:
    """The job is cancelled while the logic runs; what the logic then emits (an event with
    one connection, one with two, one with none) is dead letters of the job, one per
    connected slot."""
    gate = backend.gate()

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()
        source.emit("one", n=1)
        source.emit("two", n=2)
        source.emit("none", n=3)

    source = make_routine(logic, events=("one", "two", "none"))
    sink = make_routine(lambda sd, m, ws: None, slots=("a", "b", "c"))
    register(
        "late",
        {"source": source, "sink": sink},
        [
            ("source", "one", "sink", "a"),
            ("source", "two", "sink", "b"),
            ("source", "two", "sink", "c"),
        ],
    )
    with backend.runtime() as runtime:
        runtime.exec("late", worker_id="w")
        _, job = runtime.post("late", "source", "in", None)
        gate.during(lambda: runtime.cancel_job(job.job_id))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        backend.settle(runtime)
        assert gate.result() is True
    letters = _letters(runtime, "job cancelled")  # the runtime stopped: the logic returned
    assert job.status == JobStatus.CANCELLED
    assert letters == [
        (job.job_id, "w", "sink", "a"),
        (job.job_id, "w", "sink", "b"),
        (job.job_id, "w", "sink", "c"),
    ]


def test_batched_data_of_a_job_that_ended_while_it_waited_is_a_dead_letter_of_that_job(
    backend: Backend,
) -> None:
    _batch_flow(max_queue_length=10)
    with backend.runtime() as runtime:
        runtime.exec("batches", worker_id="w")
        (cancelled,) = _queue_rows(backend, runtime, 1)
        assert runtime.cancel_job(cancelled.job_id)
        jobs = [runtime.post("batches", "batch", "in", n, worker_id="w")[1] for n in range(9)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 9
    assert _letters(runtime, "job cancelled") == [(cancelled.job_id, "w", "batch", "in")]
