"""Activation policies: what they release, and that no job waits forever."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actorflow import (
    ConfigurationError,
    ErrorStrategy,
    Flow,
    FlowRegistry,
    InvalidDurationError,
    JobStatus,
    Routine,
    Runtime,
    all_slots_ready_policy,
    batch_size_policy,
    custom_policy,
    get_current_job,
    time_interval_policy,
)
from actorflow.activation_policies import ActivationPolicy
from actorflow.supervision import Supervision


class Recorder(Routine):
    def __init__(self, policy: ActivationPolicy, slots: tuple[str, ...] = ("in",)) -> None:
        super().__init__()
        for slot in slots:
            self.add_slot(slot)
        self.set_activation_policy(policy)
        self.calls: list[tuple[dict[str, list[Any]], Any, str | None]] = []
        self.called = threading.Event()

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        self.calls.append((slot_data, policy_message, job.job_id if job else None))
        self.called.set()


def register(routine: Routine, flow_id: str = "policy") -> None:
    flow = Flow(flow_id)
    flow.add_routine(routine, "rec")
    FlowRegistry.get_instance().register(flow)


def routine_metric(runtime: Runtime, name: str, routine_id: str = "rec") -> int:
    """A counter of ``routine_id``'s metrics, summed over the workers."""
    routines = runtime.metrics()["routines"]
    return sum(int(by_id[routine_id][name]) for by_id in routines.values() if routine_id in by_id)


def test_batch_size_releases_full_batches_and_current_job_is_the_newest(runtime: Runtime) -> None:
    rec = Recorder(batch_size_policy(3, timeout=None))
    register(rec)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(6)]
    assert runtime.wait_until_all_jobs_finished(10)
    assert [c[0] for c in rec.calls] == [{"in": [0, 1, 2]}, {"in": [3, 4, 5]}]
    assert [c[2] for c in rec.calls] == [jobs[2].job_id, jobs[5].job_id]
    assert rec.calls[0][1] == {"reason": "batch", "slot": "in", "size": 3}
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


def test_half_filled_batch_is_released_by_its_timeout(runtime: Runtime) -> None:
    rec = Recorder(batch_size_policy(10, timeout=0.05))
    register(rec)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(3)]
    assert all(job.wait(10) for job in jobs)
    assert rec.calls[0][0] == {"in": [0, 1, 2]}
    assert rec.calls[0][1]["reason"] == "timeout"


def test_half_filled_batch_is_flushed_at_shutdown() -> None:
    rec = Recorder(batch_size_policy(10, timeout=None))
    register(rec)
    runtime = Runtime()
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(4)]
    assert runtime.shutdown(wait=True, timeout=10) is True
    assert rec.calls and rec.calls[0][1] == {"reason": "flush"}
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


def test_queued_data_is_cancelled_by_a_shutdown_without_wait() -> None:
    rec = Recorder(batch_size_policy(10, timeout=None))
    register(rec)
    runtime = Runtime()
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(4)]
    runtime.shutdown(wait=False)
    assert rec.calls == []
    assert all(job.status == JobStatus.CANCELLED for job in jobs)


def test_batch_failure_fails_every_job_whose_data_it_consumed(runtime: Runtime) -> None:
    routine = Routine()
    routine.add_slot("in")
    routine.set_activation_policy(batch_size_policy(2, timeout=None))
    routine.set_logic(lambda sd, m, ws: 1 / 0)
    register(routine)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(2)]
    assert all(job.wait(10) for job in jobs)
    assert [job.status for job in jobs] == [JobStatus.FAILED, JobStatus.FAILED]


def test_all_slots_ready_with_a_constant_key_pairs_the_oldest_of_each_slot(
    runtime: Runtime,
) -> None:
    rec = Recorder(all_slots_ready_policy(key=lambda data: None), slots=("a", "b"))
    register(rec)
    _, j1 = runtime.post("policy", "rec", "a", 1)
    _, j2 = runtime.post("policy", "rec", "a", 2)
    _, j3 = runtime.post("policy", "rec", "b", 3)
    assert j3.wait(10) and j1.wait(10)
    assert rec.calls[0][0] == {"a": [1], "b": [3]}
    assert rec.calls[0][2] == j3.job_id  # the data point that completed the join
    assert not j2.done
    _, j4 = runtime.post("policy", "rec", "b", 4)
    assert j4.wait(10) and j2.wait(10)
    assert rec.calls[1][0] == {"a": [2], "b": [4]}


def test_all_slots_ready_timeout_runs_partial_data_when_asked(runtime: Runtime) -> None:
    policy = all_slots_ready_policy(timeout=0.05, key=lambda data: None, on_incomplete="run")
    rec = Recorder(policy, slots=("a", "b"))
    register(rec)
    _, job = runtime.post("policy", "rec", "a", 1)
    assert job.wait(10)
    assert rec.calls[0][0] == {"a": [1], "b": []}
    assert rec.calls[0][1] == {"reason": "timeout", "missing": ["b"]}
    assert job.status == JobStatus.COMPLETED


def test_time_interval_runs_first_at_once_then_batches_the_rest(runtime: Runtime) -> None:
    rec = Recorder(time_interval_policy(0.2))
    register(rec)
    gate = threading.Event()
    _, first = runtime.post("policy", "rec", "in", 0)
    assert first.wait(10)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(1, 4)]
    gate.set()
    assert all(job.wait(10) for job in jobs)
    assert [c[0] for c in rec.calls] == [{"in": [0]}, {"in": [1, 2, 3]}]


def test_custom_policy_decides_and_slices(runtime: Runtime) -> None:
    def pairs(slots: dict[str, list[Any]]) -> tuple[bool, dict[str, int], Any]:
        ready = len(slots["in"]) >= 2
        return ready, {"in": 2}, "pair"

    rec = Recorder(custom_policy(pairs))
    register(rec)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(4)]
    assert all(job.wait(10) for job in jobs)
    assert [(c[0], c[1]) for c in rec.calls] == [({"in": [0, 1]}, "pair"), ({"in": [2, 3]}, "pair")]


def test_policy_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        batch_size_policy(0)
    with pytest.raises(TypeError):
        batch_size_policy("3")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        time_interval_policy(0)
    with pytest.raises(TypeError):
        custom_policy(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Routine().set_activation_policy("immediate")  # type: ignore[arg-type]


def test_bad_policy_durations_name_the_policy_and_the_parameter() -> None:
    bound = "a finite number of seconds >= 0 and at most"
    with pytest.raises(
        InvalidDurationError, match=rf"^all_slots_ready_policy: timeout must be {bound}"
    ):
        all_slots_ready_policy(timeout=-1)
    with pytest.raises(InvalidDurationError, match=rf"^batch_size_policy: timeout must be {bound}"):
        batch_size_policy(2, timeout=-1)
    with pytest.raises(
        InvalidDurationError,
        match=r"^time_interval_policy: seconds must be a finite number of seconds > 0",
    ):
        time_interval_policy(0)


def test_policies_with_functions_show_the_functions_name() -> None:
    def by_order(data: Any) -> Any:
        return data

    assert repr(all_slots_ready_policy(key=by_order)) == (
        "all_slots_ready_policy(timeout=None, key='by_order', on_incomplete='fail')"
    )
    assert repr(custom_policy(by_order)) == "custom_policy('by_order')"

    class EveryTime:
        def __call__(self, queued: Any) -> bool:
            return True

        def __repr__(self) -> str:
            return "EveryTime()"

    assert repr(custom_policy(EveryTime())) == "custom_policy(EveryTime())"  # no __name__


def test_retry_options_next_to_a_strategy_are_refused() -> None:
    routine = Routine()
    with pytest.raises(
        TypeError,
        match=r"^retry options go to ErrorStrategy\.RETRY\(\.\.\.\), not next to a strategy$",
    ):
        routine.set_error_handler(ErrorStrategy.STOP, max_retries=2)


@pytest.mark.parametrize("max_restarts", [2.5, "3", True])
def test_a_supervision_whose_max_restarts_is_not_an_int_is_refused(max_restarts: Any) -> None:
    with pytest.raises(TypeError, match=r"^max_restarts must be an int$"):
        Supervision(max_restarts=max_restarts)


def test_timed_out_joins_each_run_once_and_are_counted() -> None:
    """Two keys wait in a join and time out together: each runs with its partial data, and
    the metrics count two incomplete joins."""
    from actorflow.testing import DeterministicRuntime

    policy = all_slots_ready_policy(timeout=0.05, key=lambda data: data, on_incomplete="run")
    rec = Recorder(policy, slots=("a", "b"))
    register(rec)
    with DeterministicRuntime() as runtime:
        jobs = [runtime.post("policy", "rec", "a", i)[1] for i in (1, 2)]
        runtime.advance(0.1)
        assert [job.status for job in jobs] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
        assert [c[0] for c in rec.calls] == [{"a": [1], "b": []}, {"a": [2], "b": []}]
        assert [c[1]["reason"] for c in rec.calls] == ["timeout", "timeout"]
        assert routine_metric(runtime, "incomplete_joins") == 2


def test_a_keyed_join_flushes_every_waiting_key_at_shutdown() -> None:
    """Shutdown releases the waiting data of each key in turn (oldest first), not only the
    first: every job runs its partial data and completes."""
    policy = all_slots_ready_policy(key=lambda data: data, on_incomplete="run")
    rec = Recorder(policy, slots=("a", "b"))
    register(rec)
    runtime = Runtime()
    jobs = [runtime.post("policy", "rec", "a", i)[1] for i in (1, 2, 3)]
    assert runtime.shutdown(wait=True, timeout=10) is True
    assert [c[0] for c in rec.calls] == [{"a": [i], "b": []} for i in (1, 2, 3)]
    assert all(c[1] == {"reason": "flush", "missing": ["b"]} for c in rec.calls)
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


def test_data_refused_by_a_full_slot_queue_fails_its_job_in_that_routine(
    runtime: Runtime,
) -> None:
    """A queued slot already holding ``max_queue_length`` data points refuses the next one:
    its job fails with QueueFullError, its trace names the routine and the refusal."""
    routine = Routine()
    routine.add_slot("in", max_queue_length=2)
    routine.set_activation_policy(batch_size_policy(10, timeout=None))
    routine.set_logic(lambda sd, m, ws: None)
    register(routine)
    jobs = [runtime.post("policy", "rec", "in", i)[1] for i in range(3)]
    assert jobs[2].wait(10)
    assert jobs[2].status == JobStatus.FAILED
    assert jobs[2].error == "QueueFullError: refused: slot rec.in holds 2 data points"
    last = jobs[2].trace_log[-1]
    assert (last["routine_id"], last["action"]) == ("rec", "refused")
    letters = [(d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()]
    assert letters == [("rec", "in", "refused (slot full)")]
    assert not jobs[0].done and not jobs[1].done


def test_data_of_a_job_that_ends_as_it_enters_its_join_is_a_dead_letter() -> None:
    """One job sends two data points to a join slot that holds one; drop_oldest fails the job
    with the first, so the second, arriving for an ended job, leaves as a dead letter too."""
    from actorflow.testing import DeterministicRuntime

    split = Routine()
    split.add_slot("in")
    split.add_event("out")

    def twice(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        split.emit("out", n=1)
        split.emit("out", n=2)

    split.set_logic(twice)
    join = Routine()
    join.add_slot("a", max_queue_length=1)
    join.add_slot("b")
    join.set_activation_policy(all_slots_ready_policy())
    join.set_logic(lambda sd, m, ws: None)
    flow = Flow("policy")
    flow.add_routine(split, "split")
    flow.add_routine(join, "join")
    flow.connect("split", "out", "join", "a")
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(overflow="drop_oldest") as runtime:
        _, job = runtime.post("policy", "split", "in", 0)
        runtime.run_until_idle()
        assert job.status == JobStatus.FAILED
        assert job.error is not None and job.error.startswith("QueueFullError: dropped")
        letters = [(d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()]
    assert letters == [("join", "a", "dropped (slot full)"), ("join", "a", "job failed")]
