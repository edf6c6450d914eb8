"""Supervision on every backend: ActorCrash restarts the actor and loses no queued message;
one_for_one, one_for_all, rest_for_one; restart intensity; a failing on_start; backoff."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from conformance_kit import Backend, append, make_routine, register

from actorflow import (
    ActorCrash,
    JobStatus,
    Routine,
    WorkerFailedError,
    batch_size_policy,
    custom_policy,
)

CRASH_NOT_SUPERVISED = (
    "ActorCrash is not supervised on Ray: the crashed message's job and the jobs queued behind "
    "it never end"
)


class Stage(Routine):
    """Records, in its own state key, which incarnation of its actor handled each message
    (a new one per ``on_start``); crashes on the value ``"crash"``."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")
        self.incarnation = ""

    def on_start(self) -> None:
        self.incarnation = uuid.uuid4().hex

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if slot_data["in"][0] == "crash":
            raise ActorCrash(f"{self.routine_id} lost its connection")
        assert self.routine_id is not None
        append(state, self.routine_id, self.incarnation)


def test_an_actor_crash_fails_its_job_and_loses_no_queued_message(backend: Backend) -> None:
    gate = backend.gate()

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        page = slot_data["in"][0]
        gate.block()  # hold page 1 until every page is queued
        if page == 3:
            raise ActorCrash("paper jam")
        append(state, "printed", page)

    register("printing", {"printer": make_routine(logic)})
    with backend.runtime() as runtime:
        state = runtime.exec("printing", worker_id="w")
        _, first = runtime.post("printing", "printer", "in", 1)
        gate.during(lambda: [runtime.post("printing", "printer", "in", n)[1] for n in range(2, 7)])
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        jobs = [first, *gate.result()]
        assert state.get_routine_state("printed") == [1, 2, 4, 5, 6]  # in order, none lost
        assert runtime.metrics()["workers"]["w"]["restarts"] == 1
    assert [job.status.value for job in jobs] == [
        "completed", "completed", "failed", "completed", "completed", "completed"
    ]  # fmt: skip
    assert jobs[2].error == "ActorCrash: paper jam (routine actor crashed)"


def _crash_one_stage(backend: Backend, strategy: str) -> list[str]:
    """Three stages under ``strategy``; ``transform`` crashes between two rounds of messages.
    Returns the stages whose second message was handled by a new actor."""
    flow = register("stages", {name: Stage() for name in ("read", "transform", "write")})
    flow.set_supervision(strategy)
    names = ("read", "transform", "write")
    with backend.runtime() as runtime:
        state = runtime.exec("stages", worker_id="w")
        before = [runtime.post("stages", name, "in", "ok")[1] for name in names]
        assert all(job.wait(backend.wait) for job in before)
        _, crashed = runtime.post("stages", "transform", "in", "crash")
        assert crashed.wait(backend.wait)
        after = [runtime.post("stages", name, "in", "ok")[1] for name in names]
        assert all(job.wait(backend.wait) for job in after)
        incarnations = {name: state.get_routine_state(name) for name in names}
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
    assert crashed.status == JobStatus.FAILED
    assert crashed.error == "ActorCrash: transform lost its connection (routine actor crashed)"
    assert [job.status for job in after] == [JobStatus.COMPLETED] * 3
    assert all(len(seen) == 2 for seen in incarnations.values()), incarnations
    assert restarts == 1
    return sorted(name for name, seen in incarnations.items() if seen[0] != seen[1])


def test_one_for_one_restarts_the_crashed_actor_alone(backend: Backend) -> None:
    assert _crash_one_stage(backend, "one_for_one") == ["transform"]


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        pytest.param("one_for_all", ["read", "transform", "write"], id="one_for_all"),
        pytest.param("rest_for_one", ["transform", "write"], id="rest_for_one"),
    ],
)
def test_a_group_strategy_restarts_every_actor_it_names(
    backend: Backend, strategy: str, restarted: list[str]
) -> None:
    assert _crash_one_stage(backend, strategy) == restarted


def test_past_the_restart_intensity_the_worker_fails_and_so_do_its_jobs(
    backend: Backend,
) -> None:
    def crash(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        raise ActorCrash("always")

    flow = register(
        "fragile",
        {
            "crashy": make_routine(crash),
            "batch": make_routine(
                lambda sd, m, ws: None, policy=batch_size_policy(10, timeout=None)
            ),
        },
    )
    flow.set_supervision("one_for_one", max_restarts=2, period=60)
    with backend.runtime() as runtime:
        state = runtime.exec("fragile", worker_id="w")
        _, waiting = runtime.post("fragile", "batch", "in", "waits in a batch")
        crashes = [runtime.post("fragile", "crashy", "in", n)[1] for n in range(3)]
        assert all(job.wait(backend.wait) for job in [*crashes, waiting])
        assert state.status == "failed"
        with pytest.raises(WorkerFailedError):
            runtime.post("fragile", "crashy", "in", 4)
    failure = (
        "WorkerFailedError: worker 'w' failed: routine 'crashy' crashed (ActorCrash: always); "
        "more than 2 restarts within 60 s"
    )
    assert [job.error for job in crashes] == [
        "ActorCrash: always (routine actor crashed)",
        "ActorCrash: always (routine actor crashed)",
        failure,
    ]
    assert waiting.status == JobStatus.FAILED
    assert waiting.error == failure


class _FailsFirstStart(Routine):
    """Its first ``on_start`` (anywhere: the marker is a file) raises."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.add_slot("in")
        self.set_config(marker=str(marker))

    def on_start(self) -> None:
        marker = Path(self.get_config("marker"))
        if not marker.exists():
            marker.write_text("started once")
            raise OSError("the resource is not ready yet")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("r", "handled")


def test_an_on_start_that_raises_is_a_crash_the_supervisor_restarts(
    backend: Backend, tmp_path: Path
) -> None:
    register("startup", {"r": _FailsFirstStart(tmp_path / "marker")})
    with backend.runtime() as runtime:
        state = runtime.exec("startup", worker_id="w")
        _, job = runtime.post("startup", "r", "in", 1)
        assert job.wait(backend.wait)
        assert state.get_routine_state("r") == {"handled": 1}
        assert runtime.metrics()["workers"]["w"]["restarts"] == 1
    assert job.status == JobStatus.COMPLETED, job.error


def test_a_restart_waits_for_its_backoff(backend: Backend) -> None:
    flow = register("backoff", {"r": Stage()})
    flow.set_supervision(backoff_base=0.3, backoff_max=1.0)
    with backend.runtime() as runtime:
        runtime.exec("backoff")
        _, crashed = runtime.post("backoff", "r", "in", "crash")
        assert crashed.wait(backend.wait)
        _, after = runtime.post("backoff", "r", "in", "ok")  # waits for the successor
        assert after.wait(backend.wait)
    assert (crashed.status, after.status) == (JobStatus.FAILED, JobStatus.COMPLETED)
    assert after.completed_at is not None and crashed.completed_at is not None
    assert (after.completed_at - crashed.completed_at).total_seconds() >= 0.3 * 0.9


def test_a_restarted_actor_keeps_the_queued_data_and_counters_of_the_one_it_replaces(
    backend: Backend,
) -> None:
    """Rows wait in a slot queue (a custom policy runs on ``go``, and takes the rows only
    with ``go: "all"``); a ``go: "crash"`` crashes the actor. Its successor still holds the
    rows, runs them with the next ``go``, and counts on from the crashed actor's counters."""

    def on_go(queued: Any) -> tuple[bool, dict[str, int], None]:
        take_rows = bool(queued["go"]) and queued["go"][-1] == "all"
        return bool(queued["go"]), {"go": 1, "rows": len(queued["rows"]) if take_rows else 0}, None

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        go = slot_data["go"][0]
        if go == "crash":
            raise ActorCrash("lost the rows' table")
        if go == "fail":
            raise ValueError("a failed run")
        append(state, "rows", slot_data["rows"])

    register("keeps", {"r": make_routine(logic, slots=("rows", "go"), policy=custom_policy(on_go))})
    with backend.runtime() as runtime:
        state = runtime.exec("keeps", worker_id="w")
        rows = [runtime.post("keeps", "r", "rows", n)[1] for n in range(2)]
        _, failed = runtime.post("keeps", "r", "go", "fail")
        _, crashed = runtime.post("keeps", "r", "go", "crash")
        assert failed.wait(backend.wait) and crashed.wait(backend.wait)
        before = runtime.metrics()["routines"]["w"]["r"]
        _, go = runtime.post("keeps", "r", "go", "all")
        assert go.wait(backend.wait)
        assert all(job.wait(backend.wait) for job in rows)
        after = runtime.metrics()
        ran = state.get_routine_state("rows")
    assert crashed.error == "ActorCrash: lost the rows' table (routine actor crashed)"
    assert [(e["routine_id"], e["action"]) for e in crashed.trace_log] == [("r", "actor crashed")]
    assert after["workers"]["w"]["restarts"] == 1
    assert (before["queued"], before["failed"], before["handled"]) == (2, 1, 0)
    assert ran == [[0, 1]]
    assert [job.status for job in [*rows, go]] == [JobStatus.COMPLETED] * 3
    counters = after["routines"]["w"]["r"]
    assert (counters["queued"], counters["failed"], counters["handled"]) == (0, 1, 1)
    assert counters["handling_seconds"]["count"] == 2
