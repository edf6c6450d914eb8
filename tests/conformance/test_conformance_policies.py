"""Activation policies on every backend: what each releases, with which current job, and when."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, append, make_routine, register

from actorflow import (
    ErrorStrategy,
    JobStatus,
    batch_size_policy,
    custom_policy,
    get_current_job,
    time_interval_policy,
)
from actorflow.activation_policies import ActivationPolicy

NEWEST_IS_A_TIE = (
    "under virtual time every data point arrives at the same instant, so the 'newest' data "
    "point of a batch is a tie and the current job is the job of the oldest one"
)


def _recorder(policy: ActivationPolicy, slots: tuple[str, ...] = ("in",)) -> None:
    """A routine ``rec`` that appends (slot_data, policy_message, current job's name) to the
    worker state ``runs`` at every run of its logic."""

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        append(state, "runs", [slot_data, message, job.metadata.get("name")])

    register("policy", {"rec": make_routine(logic, slots=slots, policy=policy)})


def _post(runtime: Any, values: range, slot: str = "in") -> list[Any]:
    return [
        runtime.post("policy", "rec", slot, n, metadata={"name": f"job {n}"})[1] for n in values
    ]


def test_batch_size_releases_full_batches_with_the_newest_job_current(backend: Backend) -> None:
    _recorder(batch_size_policy(3, timeout=None))
    with backend.runtime() as runtime:
        state = runtime.exec("policy")
        jobs = _post(runtime, range(6))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        runs = state.get_routine_state("runs")
    message = {"reason": "batch", "slot": "in", "size": 3}
    assert runs == [
        [{"in": [0, 1, 2]}, message, "job 2"],
        [{"in": [3, 4, 5]}, message, "job 5"],
    ]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 6


def test_a_partial_batch_is_released_by_its_timeout(backend: Backend) -> None:
    _recorder(batch_size_policy(10, timeout=0.2))
    with backend.runtime() as runtime:
        state = runtime.exec("policy")
        jobs = _post(runtime, range(2))
        assert all(job.wait(backend.wait) for job in jobs)
        runs = state.get_routine_state("runs")
    assert [run[:2] for run in runs] == [
        [{"in": [0, 1]}, {"reason": "timeout", "sizes": {"in": 2}}]
    ]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2


def test_a_failing_batch_fails_every_job_whose_data_it_consumed(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        raise ValueError(f"cannot write {slot_data['in']}")

    register("policy", {"rec": make_routine(logic, policy=batch_size_policy(2, timeout=None))})
    with backend.runtime() as runtime:
        jobs = _post(runtime, range(2))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert [(job.status, job.error) for job in jobs] == [
        (JobStatus.FAILED, "ValueError: cannot write [0, 1]")
    ] * 2


def test_a_retried_batch_runs_again_with_the_same_data(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        append(state, "tries", slot_data["in"])
        if len(state.get_routine_state("tries")) == 1:
            raise ConnectionError("the first try fails")

    register(
        "policy",
        {
            "rec": make_routine(
                logic,
                policy=batch_size_policy(2, timeout=None),
                strategy=ErrorStrategy.RETRY(max_retries=2, delay=0.05),
            )
        },
    )
    with backend.runtime() as runtime:
        state = runtime.exec("policy")
        jobs = _post(runtime, range(2))
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("tries") == [[0, 1], [0, 1]]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2
    assert [[e["action"] for e in job.trace_log] for job in jobs] == [["retry"], ["retry"]]


def test_time_interval_runs_at_once_then_once_per_interval(backend: Backend) -> None:
    _recorder(time_interval_policy(1.0))
    with backend.runtime() as runtime:
        state = runtime.exec("policy")
        (first,) = _post(runtime, range(1))
        assert first.wait(backend.wait)
        later = _post(runtime, range(1, 4))  # within the interval: they wait for its end
        assert all(job.wait(backend.wait) for job in later)
        runs = state.get_routine_state("runs")
    assert [run[:2] for run in runs] == [
        [{"in": [0]}, {"reason": "interval", "sizes": {"in": 1}}],
        [{"in": [1, 2, 3]}, {"reason": "interval", "sizes": {"in": 3}}],
    ]
    assert [job.status for job in [first, *later]] == [JobStatus.COMPLETED] * 4


def test_a_custom_policy_decides_when_and_how_much(backend: Backend) -> None:
    def pairs(queued: Any) -> tuple[bool, dict[str, int], str]:
        return len(queued["in"]) >= 2, {"in": 2}, "pair"

    _recorder(custom_policy(pairs))
    with backend.runtime() as runtime:
        state = runtime.exec("policy")
        jobs = _post(runtime, range(4))
        assert all(job.wait(backend.wait) for job in jobs)
        runs = state.get_routine_state("runs")
    assert [run[:2] for run in runs] == [[{"in": [0, 1]}, "pair"], [{"in": [2, 3]}, "pair"]]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4


def test_queued_data_is_counted_until_released(backend: Backend) -> None:
    """A custom policy that runs on ``go`` alone and keeps ``rows`` queued: once the ``go``
    job (posted after the rows, to the same mailbox) completed, the rows are in the queue."""

    def on_go(queued: Any) -> tuple[bool, dict[str, int], None]:
        return bool(queued["go"]), {"go": len(queued["go"]), "rows": 0}, None

    _recorder(custom_policy(on_go), slots=("rows", "go"))
    with backend.runtime() as runtime:
        runtime.exec("policy", worker_id="w")
        rows = _post(runtime, range(3), slot="rows")
        (go,) = _post(runtime, range(1), slot="go")
        assert go.wait(backend.wait)
        assert go.status == JobStatus.COMPLETED
        metrics = runtime.metrics()["routines"]["w"]["rec"]
        assert not any(job.done for job in rows)
    assert (metrics["queued"], metrics["handled"]) == (3, 1)


def test_a_run_of_several_jobs_that_emits_one_message_completes_every_one(
    backend: Backend,
) -> None:
    """A custom policy runs once both slots hold data: data of two jobs, the newer in the
    first slot. The run emits one message downstream: it goes on for the run's current job
    (the newer), and the other job, whose data the run handled, completes too."""

    def both(queued: Any) -> tuple[bool, dict[str, int], None]:
        return bool(queued["a"] and queued["b"]), {"a": 1, "b": 1}, None

    def pair(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        pairer.emit("out", rows=[*slot_data["a"], *slot_data["b"]], by=job.metadata["name"])

    def sink(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        append(state, "rows", slot_data["in"][0])

    pairer = make_routine(
        pair, slots=("a", "b"), events=(("out", ["rows", "by"]),), policy=custom_policy(both)
    )
    register(
        "pair_then_sink",
        {"pair": pairer, "sink": make_routine(sink)},
        [("pair", "out", "sink", "in")],
    )
    with backend.runtime() as runtime:
        state = runtime.exec("pair_then_sink", worker_id="w")
        jobs = []
        for slot, row in (("b", "older"), ("a", "newer")):
            _, job = runtime.post("pair_then_sink", "pair", slot, row, metadata={"name": row})
            jobs.append(job)
            backend.settle(runtime)  # the older data is queued before the newer is posted
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        rows = state.get_routine_state("rows")
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2
    assert rows == [{"rows": ["newer", "older"], "by": "newer"}]


def test_a_batch_with_a_timeout_goes_on_once_its_queue_is_empty(backend: Backend) -> None:
    """Full batches empty the queue of a policy that has a timeout: nothing is then waiting
    for the timeout, and the actor goes on with the next batches (no crash, no restart)."""
    _recorder(batch_size_policy(2, timeout=60))
    with backend.runtime() as runtime:
        state = runtime.exec("policy", worker_id="w")
        jobs = _post(runtime, range(4))
        assert all(job.wait(backend.wait) for job in jobs)
        runs = state.get_routine_state("runs")
        metrics = runtime.metrics()
    assert [run[0] for run in runs] == [{"in": [0, 1]}, {"in": [2, 3]}]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4
    assert metrics["workers"]["w"]["restarts"] == 0
    assert metrics["routines"]["w"]["rec"]["queued"] == 0


def test_a_custom_policy_that_raises_fails_the_job_of_the_data(backend: Backend) -> None:
    def broken(queued: Any) -> bool:
        raise LookupError("the policy lost its table")

    _recorder(custom_policy(broken))
    with backend.runtime() as runtime:
        runtime.exec("policy", worker_id="w")
        (job,) = _post(runtime, range(1))
        assert job.wait(backend.wait)
        queued = runtime.metrics()["routines"]["w"]["rec"]["queued"]
    assert job.status == JobStatus.FAILED
    assert job.error == "LookupError: the policy lost its table"
    assert [(e["routine_id"], e["action"]) for e in job.trace_log] == [("rec", "policy failed")]
    assert queued == 0  # its data left the queue


@pytest.mark.parametrize(
    ("decision", "error"),
    [
        pytest.param(
            (True, {"in": 0.5}, None),
            "ValueError: custom_policy released 0.5 items from slot 'in', which holds 1",
            id="not-an-int",
        ),
        pytest.param(
            (True, {"in": 2}, None),
            "ValueError: custom_policy released 2 items from slot 'in', which holds 1",
            id="too-many",
        ),
        pytest.param(
            (True, None),
            "TypeError: custom_policy function must return a bool or "
            "(should_activate, counts_or_None, policy_message)",
            id="two-values",
        ),
    ],
)
def test_a_custom_policy_with_a_malformed_decision_fails_the_job(
    backend: Backend, decision: Any, error: str
) -> None:
    _recorder(custom_policy(lambda queued: decision))
    with backend.runtime() as runtime:
        runtime.exec("policy", worker_id="w")
        (job,) = _post(runtime, range(1))
        assert job.wait(backend.wait)
    assert (job.status, job.error) == (JobStatus.FAILED, error)
