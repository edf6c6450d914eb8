"""Bounded mailboxes and slot queues on every backend: ``max_queue_length`` and the overflow
policies (``raise``, ``block``, ``drop_oldest``) at post, at emit and in slot queues."""

from __future__ import annotations

from typing import Any

from conformance_kit import Backend, append, make_routine, register

from actorflow import JobStatus, QueueFullError, batch_size_policy


def _held_sink(backend: Backend, max_queue_length: int) -> Any:
    """A routine ``sink`` whose logic holds its first message at a gate; records rows."""
    gate = backend.gate()

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()
        append(state, "rows", slot_data["in"][0])

    register("ingest", {"sink": make_routine(logic, max_queue_length=max_queue_length)})
    return gate


def _post_while_held(runtime: Any, gate: Any, rows: range) -> None:
    """Post row 0, then ``rows`` while the sink holds row 0; the gate keeps what each post
    returned (its job) or raised."""
    runtime.post("ingest", "sink", "in", 0, worker_id="w")

    def post_rows() -> list[Any]:
        outcomes: list[Any] = []
        for row in rows:
            try:
                outcomes.append(runtime.post("ingest", "sink", "in", row, worker_id="w")[1])
            except QueueFullError as exc:
                outcomes.append(exc)
        return outcomes

    gate.during(post_rows)


def test_overflow_raise_refuses_the_post_at_once(backend: Backend) -> None:
    gate = _held_sink(backend, 2)
    with backend.runtime(overflow="raise") as runtime:
        state = runtime.exec("ingest", worker_id="w")
        _post_while_held(runtime, gate, range(1, 4))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        outcomes = gate.result()
        assert state.get_routine_state("rows") == [0, 1, 2]
    assert [job.status for job in outcomes[:2]] == [JobStatus.COMPLETED] * 2
    assert isinstance(outcomes[2], QueueFullError)
    assert str(outcomes[2]) == (
        "routine 'sink' of worker 'w' already has 2 messages waiting (max_queue_length=2; "
        "overflow policy 'raise')"
    )
    assert len(runtime.list_jobs()) == 3  # the refused post made no job


def test_overflow_block_waits_for_room_then_refuses(backend: Backend) -> None:
    gate = _held_sink(backend, 2)
    with backend.runtime(overflow="block", post_timeout=0.2) as runtime:
        state = runtime.exec("ingest", worker_id="w")
        _post_while_held(runtime, gate, range(1, 4))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        outcomes = gate.result()
        assert state.get_routine_state("rows") == [0, 1, 2]
    assert isinstance(outcomes[2], QueueFullError)
    assert str(outcomes[2]).endswith("(max_queue_length=2; overflow policy 'block', waited 0.2 s)")


def test_overflow_drop_oldest_drops_the_oldest_waiting_message(backend: Backend) -> None:
    gate = _held_sink(backend, 2)
    with backend.runtime(overflow="drop_oldest") as runtime:
        state = runtime.exec("ingest", worker_id="w")
        _post_while_held(runtime, gate, range(1, 4))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        outcomes = gate.result()
        assert state.get_routine_state("rows") == [0, 2, 3]
        dead = runtime.dead_letter_counts()
    assert [job.status for job in outcomes] == [
        JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED
    ]  # fmt: skip
    assert outcomes[0].error == (
        "QueueFullError: dropped: routine 'sink' had 2 messages waiting (overflow policy "
        "'drop_oldest')"
    )
    assert dead == {"dropped (mailbox full)": 1}


def test_emits_into_a_full_mailbox_are_refused_and_recorded(backend: Backend) -> None:
    gate = backend.gate()

    def source_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for n in range(3):
            source.emit("out", n=n)

    def sink_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        gate.block()

    source = make_routine(source_logic, events=("out",))
    register(
        "bounded_emits",
        {"source": source, "sink": make_routine(sink_logic, max_queue_length=2)},
        [("source", "out", "sink", "in")],
    )
    with backend.runtime() as runtime:
        runtime.exec("bounded_emits", worker_id="w")
        _, busy = runtime.post("bounded_emits", "sink", "in", {"n": "busy"})

        def emit_three() -> Any:
            _, job = runtime.post("bounded_emits", "source", "in", None)
            assert job.wait(backend.wait)  # the sink holds 'busy': its mailbox fills up
            return job

        gate.during(emit_three)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        job = gate.result()
        dead = runtime.dead_letter_counts()
    assert busy.status == JobStatus.COMPLETED
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "QueueFullError: routine 'source' emitted to sink.in, whose mailbox already holds 2 "
        "messages (max_queue_length=2)"
    )
    assert dead.get("refused (mailbox full)") == 1
    refused = [
        (d["job_id"], d["worker_id"], d["routine_id"], d["slot"])
        for d in runtime.dead_letters()
        if d["reason"] == "refused (mailbox full)"
    ]
    assert refused == [(job.job_id, "w", "sink", "in")]  # names the full routine's slot


def test_a_full_slot_queue_refuses_new_data(backend: Backend) -> None:
    """A routine cannot wait for room in a slot queue: ``block`` refuses there like ``raise``.

    With ``block``, a post that finds the mailbox full waits for the actor to take a message,
    so every row reaches the slot queue (on the deterministic backend, ``settle`` delivers
    each row before the next is posted) and meets the slot queue's bound."""
    register(
        "batches",
        {
            "batch": make_routine(
                lambda sd, m, ws: None,
                policy=batch_size_policy(10, timeout=None),
                max_queue_length=2,
            )
        },
    )
    with backend.runtime(overflow="block") as runtime:
        runtime.exec("batches", worker_id="w")
        jobs = []
        for row in range(3):
            jobs.append(runtime.post("batches", "batch", "in", row, worker_id="w")[1])
            backend.settle(runtime)
        assert jobs[2].wait(backend.wait)
        assert not jobs[0].done and not jobs[1].done
        assert runtime.metrics()["routines"]["w"]["batch"]["queued"] == 2
        assert runtime.shutdown(timeout=backend.wait) is True  # the flush runs rows 0 and 1
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED
    ]  # fmt: skip
    assert jobs[2].error == "QueueFullError: refused: slot batch.in holds 2 data points"
    assert runtime.dead_letter_counts() == {"refused (slot full)": 1}
