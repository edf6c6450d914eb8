"""Joins keep jobs apart: a join fires only with data of one job, and never waits forever.

Regression tests for a join that paired the heads of its slot queues whatever job they
belonged to: with a RETRY on one branch, a branch of several actors, or a fault plan that
reorders messages, most joins paired two different jobs and every job still ended `completed`
with another job's data.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _waiting import wait_until

from actorflow import (
    ErrorStrategy,
    Flow,
    FlowRegistry,
    IncompleteJoinError,
    JobStatus,
    Routine,
    Runtime,
    all_slots_ready_policy,
    batch_size_policy,
    get_current_job,
)
from actorflow.faults import FaultPlan
from actorflow.testing import DeterministicRuntime

JOBS = 120


def _join_flow(
    flow_id: str = "join",
    *,
    retry_left: bool = False,
    left_actors: int = 1,
    policy: Any = None,
    skip_right_when: Any = None,
    right: Routine | None = None,
) -> None:
    """split -> left, right -> join. ``left`` fails its first try of every third job (RETRY);
    ``right`` emits nothing for tags where ``skip_right_when(tag)`` holds."""
    failed_once: set[str] = set()

    split = Routine()
    split.add_slot("in")
    split.add_event("left", ["tag"])
    split.add_event("right", ["tag"])

    def split_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for tag in slot_data["in"]:
            split.emit("left", tag=tag)
            split.emit("right", tag=tag)

    split.set_logic(split_logic)

    left = Routine()
    left.add_slot("in")
    left.add_event("out", ["tag"])
    left.set_concurrency(left_actors)

    def left_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for item in slot_data["in"]:
            # busy work that varies by job, so actors of a routine finish out of order
            sum(range((item["tag"] * 7919) % 3000))
            if retry_left and item["tag"] % 3 == 0 and job.job_id not in failed_once:
                failed_once.add(job.job_id)
                raise RuntimeError("first try fails")
            job.set_data("left", item["tag"])
            left.emit("out", tag=item["tag"])

    left.set_logic(left_logic)
    if retry_left:
        left.set_error_handler(ErrorStrategy.RETRY(max_retries=3, delay=0.01))

    if right is None:
        right = plain = Routine()
        plain.add_slot("in")
        plain.add_event("out", ["tag"])

        def right_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
            for item in slot_data["in"]:
                if skip_right_when is not None and skip_right_when(item["tag"]):
                    continue
                plain.emit("out", tag=item["tag"])

        plain.set_logic(right_logic)

    join = Routine()
    join.add_slot("left")
    join.add_slot("right")
    join.set_activation_policy(policy or all_slots_ready_policy())

    def join_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        pair = [[d["tag"] for d in slot_data["left"]], [d["tag"] for d in slot_data["right"]]]
        job.set_data("pair", pair)
        job.set_data("current", job.metadata["tag"])
        job.set_data("seen_left", job.data.get("left"))

    join.set_logic(join_logic)

    flow = Flow(flow_id)
    flow.add_routine(split, "split")
    flow.add_routine(left, "left")
    flow.add_routine(right, "right")
    flow.add_routine(join, "join")
    flow.connect("split", "left", "left", "in")
    flow.connect("split", "right", "right", "in")
    flow.connect("left", "out", "join", "left")
    flow.connect("right", "out", "join", "right")
    FlowRegistry.get_instance().register(flow)


def _post_all(runtime: Runtime, jobs: int = JOBS) -> list[Any]:
    return [
        runtime.post("join", "split", "in", tag, metadata={"tag": tag})[1] for tag in range(jobs)
    ]


def _assert_unmixed(jobs: list[Any]) -> None:
    mixed = []
    for tag, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, (tag, job.status, job.error)
        if (
            job.get_data("pair") != [[tag], [tag]]
            or job.get_data("current") != tag
            or job.get_data("seen_left") != tag
        ):
            mixed.append((tag, job.get_data("pair"), job.get_data("current")))
    assert not mixed, f"{len(mixed)} of {len(jobs)} joins mixed jobs, e.g. {mixed[:3]}"


RUNTIMES = {
    "threads": lambda: Runtime(strict=False),
    "threads-strict": lambda: Runtime(strict=True),
    "deterministic-1": lambda: DeterministicRuntime(seed=1),
    "deterministic-7": lambda: DeterministicRuntime(seed=7, strict=False),
}


@pytest.mark.parametrize("make", RUNTIMES.values(), ids=RUNTIMES.keys())
def test_a_join_with_a_retrying_branch_pairs_only_data_of_the_same_job(make: Any) -> None:
    _join_flow(retry_left=True)
    with make() as runtime:
        jobs = _post_all(runtime)
        assert runtime.wait_until_all_jobs_finished(30)
    _assert_unmixed(jobs)


@pytest.mark.parametrize("strict", [False, True], ids=["fast-path", "strict"])
def test_a_join_after_a_branch_of_several_actors_pairs_only_data_of_the_same_job(
    strict: bool,
) -> None:
    _join_flow(left_actors=4)
    with Runtime(strict=strict) as runtime:
        jobs = _post_all(runtime, 400)
        assert runtime.wait_until_all_jobs_finished(30)
    _assert_unmixed(jobs)


@pytest.mark.parametrize("deterministic", [False, True], ids=["threads", "deterministic"])
def test_a_join_behind_a_reordering_fault_pairs_only_data_of_the_same_job(
    deterministic: bool,
) -> None:
    _join_flow()
    plan = FaultPlan(seed=3).reorder(window=3, hold=0.01, routine="join", slot="left")
    make = (
        (lambda: DeterministicRuntime(seed=3, faults=plan))
        if deterministic
        else (lambda: Runtime(faults=plan))
    )
    with make() as runtime:
        jobs = _post_all(runtime, 60)
        assert runtime.wait_until_all_jobs_finished(30)
        assert any(entry["fault"] == "reorder" for entry in runtime.fault_log())
    _assert_unmixed(jobs)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_join_on_ray_pairs_only_data_of_the_same_job(local_ray: None) -> None:
    _join_flow(retry_left=True, left_actors=2)
    with Runtime(backend="ray") as runtime:
        jobs = _post_all(runtime, 60)
        assert runtime.wait_until_all_jobs_finished(120)
    _assert_unmixed(jobs)


# -- a join never waits forever ---------------------------------------------------------


@pytest.mark.parametrize("make", RUNTIMES.values(), ids=RUNTIMES.keys())
def test_a_join_whose_other_branch_emits_nothing_fails_its_job_at_once(make: Any) -> None:
    _join_flow(skip_right_when=lambda tag: tag % 2 == 1)
    with make() as runtime:
        jobs = _post_all(runtime, 20)
        assert runtime.wait_until_all_jobs_finished(30)
        metrics = runtime.metrics()
        dead = runtime.dead_letter_counts()
    for tag, job in enumerate(jobs):
        if tag % 2 == 0:
            assert job.status == JobStatus.COMPLETED
            assert job.get_data("pair") == [[tag], [tag]]
        else:
            assert job.status == JobStatus.FAILED
            assert job.error.startswith(f"{IncompleteJoinError.__name__}: ")
            assert "slot(s) right can no longer arrive" in job.error
    join = next(iter(metrics["routines"].values()))["join"]
    assert join["queued"] == 0
    assert join["incomplete_joins"] == 10
    assert dead.get("join incomplete") == 10


def test_a_join_whose_other_branch_is_skipped_fails_its_job() -> None:
    right = Routine()
    right.add_slot("in")
    right.add_event("out", ["tag"])

    def refuse_odd(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for item in slot_data["in"]:
            if item["tag"] % 2:
                raise ValueError("odd")
            right.emit("out", tag=item["tag"])

    right.set_logic(refuse_odd)
    right.set_error_handler(ErrorStrategy.SKIP)  # the job goes on without the branch
    _join_flow(right=right)
    with Runtime(strict=False) as runtime:
        jobs = _post_all(runtime, 10)
        assert runtime.wait_until_all_jobs_finished(30)
    assert [job.status.value for job in jobs] == ["completed", "failed"] * 5
    assert all("IncompleteJoinError" in job.error for job in jobs[1::2])


def test_incomplete_joins_can_run_with_what_arrived() -> None:
    _join_flow(
        skip_right_when=lambda tag: tag == 1, policy=all_slots_ready_policy(on_incomplete="run")
    )
    with Runtime(strict=False) as runtime:
        jobs = _post_all(runtime, 3)
        assert runtime.wait_until_all_jobs_finished(30)
    assert [job.status.value for job in jobs] == ["completed"] * 3
    assert jobs[1].get_data("pair") == [[1], []]
    assert jobs[0].get_data("pair") == [[0], [0]]


class _Gate(Routine):
    """A branch that holds its message until the test opens the gate."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.entered = threading.Event()
        self.add_slot("in")
        self.add_event("out")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        self.entered.set()
        self.gate.wait(30)
        for item in slot_data["in"]:
            self.emit("out", **item)


def _gated_join(gate: threading.Event, policy: Any = None) -> _Gate:
    slow = _Gate(gate)
    _join_flow(policy=policy, right=slow)
    return slow


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_data_waiting_in_a_join_leaves_it_when_its_job_ends(how: str) -> None:
    gate = threading.Event()
    slow = _gated_join(gate)
    with Runtime(strict=False) as runtime:
        if how == "cancel":
            _, job = runtime.post("join", "split", "in", 0, metadata={"tag": 0})
        else:
            _, job = runtime.post("join", "split", "in", 0, metadata={"tag": 0}, timeout=0.2)
        assert slow.entered.wait(10)
        worker_id = job.worker_id

        def queued() -> int:
            return int(runtime.metrics()["routines"][worker_id]["join"]["queued"])

        # the left branch's data reaches the join and waits there for the right branch
        wait_until(lambda: queued() == 1, "the left branch's data to wait in the join")
        if how == "cancel":
            assert runtime.cancel_job(job.job_id)
        assert job.wait(10)
        gate.set()
        assert runtime.wait_until_all_jobs_finished(10)
        wait_until(lambda: queued() == 0, "the join to let the ended job's data go")
        reasons = [entry["reason"] for entry in runtime.dead_letters()]
    assert job.status == (JobStatus.CANCELLED if how == "cancel" else JobStatus.FAILED)
    assert f"job {job.status.value}" in reasons


def test_a_join_timeout_fails_the_job_with_the_missing_slot_named() -> None:
    gate = threading.Event()
    slow = _gated_join(gate, all_slots_ready_policy(timeout=0.05))
    with Runtime(strict=False) as runtime:
        _, job = runtime.post("join", "split", "in", 0, metadata={"tag": 0})
        assert job.wait(10)
        gate.set()
    assert slow.entered.is_set()
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "IncompleteJoinError: routine 'join' holds data of job "
        f"{job.job_id} in slot 'left', but slot(s) right did not arrive within 0.05 s"
    )


def test_a_join_in_deterministic_mode_times_out_on_virtual_time() -> None:
    _join_flow(policy=all_slots_ready_policy(timeout=30))
    plan = FaultPlan().delay(60, routine="join", slot="right")
    with DeterministicRuntime(seed=2, faults=plan) as runtime:
        _, job = runtime.post("join", "split", "in", 0, metadata={"tag": 0})
        runtime.advance(29.9)
        assert job.status == JobStatus.RUNNING
        runtime.advance(0.1)
        assert job.status == JobStatus.FAILED
        assert "did not arrive within 30 s" in job.error


# -- batches: every job of a batch ends --------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["fast-path", "strict"])
def test_a_batch_whose_current_job_ends_while_it_runs_still_ends_the_other_jobs(
    strict: bool,
) -> None:
    entered, release = threading.Event(), threading.Event()
    writer = Routine()
    writer.add_slot("rows")
    writer.add_event("written")
    writer.set_activation_policy(batch_size_policy(3, timeout=None))

    def write(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        entered.set()
        release.wait(30)
        writer.emit("written", rows=len(slot_data["rows"]))

    writer.set_logic(write)
    sink = Routine()
    sink.add_slot("in")
    sink.set_logic(lambda slot_data, message, state: None)
    flow = Flow("batch")
    flow.add_routine(writer, "writer")
    flow.add_routine(sink, "sink")
    flow.connect("writer", "written", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=strict) as runtime:
        jobs = [runtime.post("batch", "writer", "rows", n)[1] for n in range(3)]
        assert entered.wait(10)
        assert runtime.cancel_job(jobs[2].job_id)  # the batch's current job (the newest)
        release.set()
        assert all(job.wait(10) for job in jobs)
    assert [job.status.value for job in jobs] == ["completed", "completed", "cancelled"]


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_join_on_ray_whose_other_branch_emits_nothing_fails_its_job(local_ray: None) -> None:
    _join_flow(skip_right_when=lambda tag: tag % 2 == 1)
    with Runtime(backend="ray") as runtime:
        jobs = _post_all(runtime, 10)
        assert runtime.wait_until_all_jobs_finished(120)
        metrics = runtime.metrics()
        dead = runtime.dead_letter_counts()
    assert [job.status.value for job in jobs] == ["completed", "failed"] * 5
    assert all("slot(s) right can no longer arrive" in job.error for job in jobs[1::2])
    assert [job.get_data("pair") for job in jobs[::2]] == [[[t], [t]] for t in range(0, 10, 2)]
    join = next(iter(metrics["routines"].values()))["join"]
    assert (join["queued"], join["incomplete_joins"]) == (0, 5)
    assert dead.get("join incomplete") == 5
