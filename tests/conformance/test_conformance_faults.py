"""Fault plans on every backend: each kind of fault, with its effect on the jobs asserted.

On threads the runtime applies the plan to every envelope; on Ray each routine actor applies
it to the messages it receives and to its activations, and the driver gathers the fault log.
A message rule's ``ordinal`` counts the messages to the routine; here each routine has one
actor, and ``a`` sends in post order, so the n-th message to ``b`` is the n-th job's.
"""

from __future__ import annotations

import os
from typing import Any

from conformance_kit import Backend, append, make_routine, register

from actorflow import JobStatus
from actorflow.faults import FaultPlan

LOST_AFTER = 0.5  # seconds a job waits for a message a fault lost, then fails


def _chain(flow_id: str, *, fan_out: bool = False) -> None:
    """``a`` passes each job's number to ``b`` (and, with ``fan_out``, to ``c``); ``b`` and
    ``c`` append the numbers they see, in the order they see them."""

    def a_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        a.emit("out", n=slot_data["in"][0])

    def b_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        append(state, "b", slot_data["in"][0]["n"])

    def c_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        append(state, "c", slot_data["in"][0]["n"])

    a = make_routine(a_logic, events=("out",))
    routines = {"a": a, "b": make_routine(b_logic)}
    connections = [("a", "out", "b", "in")]
    if fan_out:
        routines["c"] = make_routine(c_logic)
        connections.append(("a", "out", "c", "in"))
    register(flow_id, routines, connections)


def _run(backend: Backend, flow_id: str, plan: FaultPlan, jobs: int) -> tuple[Any, ...]:
    """Post ``jobs`` jobs (numbers 0, 1, ...) one after the other; every job must end."""
    with backend.runtime(faults=plan) as runtime:
        state = runtime.exec(flow_id, worker_id="w")
        posted = [runtime.post(flow_id, "a", "in", n, job_id=f"job-{n}")[1] for n in range(jobs)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        seen = state.get_routine_state("b"), state.get_routine_state("c")
        log = runtime.fault_log()
        letters = [(d["job_id"], d["routine_id"], d["reason"]) for d in runtime.dead_letters()]
    return posted, seen, log, letters


def test_a_drop_loses_exactly_the_dropped_messages_jobs(backend: Backend) -> None:
    _chain("drops")
    plan = FaultPlan(seed=3, lost_message_timeout=LOST_AFTER).drop(routine="b", ordinal={2, 4})
    jobs, (b_saw, _), log, letters = _run(backend, "drops", plan, 5)
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.FAILED,
        JobStatus.COMPLETED,
    ]  # fmt: skip
    assert "JobTimeoutError" in str(jobs[1].error)
    assert sorted(b_saw) == [0, 2, 4]
    assert letters == [("job-1", "b", "lost (drop)"), ("job-3", "b", "lost (drop)")]
    assert [(e["fault"], e["job_id"], e["routine"], e["ordinal"]) for e in log] == [
        ("drop", "job-1", "b", 2),
        ("drop", "job-3", "b", 4),
    ]


def test_a_delay_holds_the_message_and_later_ones_pass_it(backend: Backend) -> None:
    _chain("delays")
    plan = FaultPlan(seed=3).delay(2.0, routine="b", ordinal=1)
    jobs, (b_saw, _), log, _ = _run(backend, "delays", plan, 3)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    assert b_saw == [1, 2, 0]  # job-0's message waited two seconds
    assert [(e["fault"], e["job_id"], e["seconds"]) for e in log] == [("delay", "job-0", 2.0)]
    took = [(job.completed_at - job.created_at).total_seconds() for job in jobs]
    assert took[0] >= 2.0 > took[1]


def test_a_duplicate_is_handled_twice_and_its_job_counts_both(backend: Backend) -> None:
    _chain("duplicates")
    plan = FaultPlan(seed=3).duplicate(routine="b", ordinal=2)
    jobs, (b_saw, _), log, _ = _run(backend, "duplicates", plan, 3)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3
    assert sorted(b_saw) == [0, 1, 1, 2]
    duplicated = [e for e in jobs[1].trace_log if e["action"] == "duplicated"]
    assert [(e["routine_id"], e["details"]["source"]) for e in duplicated] == [("b", "a")]
    assert [(e["fault"], e["job_id"]) for e in log] == [("duplicate", "job-1")]


def test_a_reorder_shuffles_a_window_by_the_seed(backend: Backend) -> None:
    _chain("reorders")

    def run(seed: int) -> list[int]:
        plan = FaultPlan(seed=seed).reorder(window=4, hold=30.0, routine="b")
        jobs, (b_saw, _), log, _ = _run(backend, "reorders", plan, 4)
        assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4
        assert sorted(e["job_id"] for e in log) == [f"job-{n}" for n in range(4)]
        return list(b_saw)

    orders = [run(seed) for seed in (1, 2, 3, 4)]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert any(order != [0, 1, 2, 3] for order in orders), "no seed reordered anything"
    assert run(1) == orders[0]  # the same seed, the same order


def test_a_partition_blocks_exactly_the_named_routes(backend: Backend) -> None:
    _chain("partitioned", fan_out=True)
    plan = FaultPlan(seed=3, lost_message_timeout=LOST_AFTER).partition(
        {"a"}, {"b"}, between=(0.0, 3600.0)
    )
    jobs, (b_saw, c_saw), log, letters = _run(backend, "partitioned", plan, 3)
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 3  # b never hears of them
    assert b_saw is None
    assert sorted(c_saw) == [0, 1, 2]  # a -> c is not cut, nor are the posts to a
    assert sorted(letters) == [(f"job-{n}", "b", "lost (partition)") for n in range(3)]
    assert (
        sorted((e["fault"], e["source"], e["routine"]) for e in log)
        == [("partition", "a", "b")] * 3
    )


def test_raise_in_fails_the_activation_it_names(backend: Backend) -> None:
    register("charge", {"charge": make_routine(lambda sd, m, ws: None)})
    plan = FaultPlan(seed=1).raise_in("charge", ConnectionError("card network down"), on_message=1)
    with backend.runtime(faults=plan) as runtime:
        jobs = [runtime.post("charge", "charge", "in", n)[1] for n in range(2)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        log = runtime.fault_log()
    assert [(job.status, job.error) for job in jobs] == [
        (JobStatus.FAILED, "ConnectionError: card network down"),
        (JobStatus.COMPLETED, None),
    ]
    assert [(entry["fault"], entry["routine"]) for entry in log] == [("raise", "charge")]


def test_a_crash_restarts_the_routine_and_fails_only_the_crashed_job(backend: Backend) -> None:
    """On Ray the crash ends the routine actor's process for real: the jobs after it are
    handled by the process Ray started in its place, and none is lost or handled twice."""

    def a_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        a.emit("out", n=slot_data["in"][0])

    def b_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        append(state, "b", (slot_data["in"][0]["n"], os.getpid()))

    a = make_routine(a_logic, events=("out",))
    register("crashes", {"a": a, "b": make_routine(b_logic)}, [("a", "out", "b", "in")])
    plan = FaultPlan(seed=3).crash("b", on_message=2)
    with backend.runtime(faults=plan) as runtime:
        state = runtime.exec("crashes", worker_id="w")
        jobs = [runtime.post("crashes", "a", "in", n, job_id=f"job-{n}")[1] for n in range(4)]
        # on Ray a process ends and another starts: allow for a slow start on a busy machine
        assert runtime.wait_until_all_jobs_finished(backend.wait * (6 if backend.is_ray else 1))
        b_saw = state.get_routine_state("b")
        log = runtime.fault_log()
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED,
    ]  # fmt: skip
    assert "ActorCrash" in str(jobs[1].error)
    assert sorted(n for n, _ in b_saw) == [0, 2, 3]
    assert restarts == 1
    assert [(e["fault"], e["job_id"], e["ordinal"]) for e in log] == [("crash", "job-1", 2)]
    processes = dict(b_saw)
    if backend.is_ray:
        assert processes[0] != processes[2] == processes[3]
    else:
        assert processes[0] == processes[2] == processes[3] == os.getpid()
