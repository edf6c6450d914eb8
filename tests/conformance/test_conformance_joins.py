"""Joins on every backend: per-job pairing, incomplete joins, timeouts, ``key=`` correlation."""

from __future__ import annotations

from typing import Any

from conformance_kit import Backend, append, make_routine, register

from actorflow import (
    ErrorStrategy,
    IncompleteJoinError,
    JobStatus,
    all_slots_ready_policy,
    get_current_job,
)
from actorflow.activation_policies import ActivationPolicy


def _join_flow(
    *,
    retry_left: bool = False,
    skip_right: bool = False,
    retry_right_delay: float | None = None,
    policy: ActivationPolicy | None = None,
) -> None:
    """split -> left, right -> join (slots ``left`` and ``right``), tagged by the job's tag.

    ``retry_left``: left's first try of every even tag fails (RETRY); ``skip_right``: right
    emits nothing for odd tags; ``retry_right_delay``: right's first try fails and is retried
    after that many seconds.
    """

    def split_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for tag in slot_data["in"]:
            split.emit("left", tag=tag)
            split.emit("right", tag=tag)

    def left_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for item in slot_data["in"]:
            if retry_left and item["tag"] % 2 == 0 and state.increment("_left", job.job_id) == 1:
                raise ConnectionError("the first try of left fails")
            job.set_data("left", item["tag"])
            left.emit("out", tag=item["tag"])

    def right_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for item in slot_data["in"]:
            if retry_right_delay is not None and state.increment("_right", job.job_id) == 1:
                raise ConnectionError("the first try of right fails")
            if skip_right and item["tag"] % 2 == 1:
                continue
            right.emit("out", tag=item["tag"])

    def join_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data(
            "pair", [[d["tag"] for d in slot_data["left"]], [d["tag"] for d in slot_data["right"]]]
        )
        job.set_data("current", job.metadata["tag"])
        job.set_data("seen_left", job.get_data("left"))
        job.set_data("message", message)

    split = make_routine(split_logic, events=(("left", ("tag",)), ("right", ("tag",))))
    left = make_routine(
        left_logic,
        events=("out",),
        strategy=ErrorStrategy.RETRY(max_retries=2, delay=0.05) if retry_left else None,
    )
    right = make_routine(
        right_logic,
        events=("out",),
        strategy=None
        if retry_right_delay is None
        else ErrorStrategy.RETRY(max_retries=1, delay=retry_right_delay),
    )
    join = make_routine(
        join_logic, slots=("left", "right"), policy=policy or all_slots_ready_policy()
    )
    register(
        "join",
        {"split": split, "left": left, "right": right, "join": join},
        [
            ("split", "left", "left", "in"),
            ("split", "right", "right", "in"),
            ("left", "out", "join", "left"),
            ("right", "out", "join", "right"),
        ],
    )


def _post(runtime: Any, jobs: int, **options: Any) -> list[Any]:
    return [
        runtime.post("join", "split", "in", tag, metadata={"tag": tag}, **options)[1]
        for tag in range(jobs)
    ]


def test_a_join_pairs_only_data_of_the_same_job_though_a_branch_retries(
    backend: Backend,
) -> None:
    _join_flow(retry_left=True)
    with backend.runtime() as runtime:
        jobs = _post(runtime, 6)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    for tag, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, job.error
        assert job.get_data("pair") == [[tag], [tag]]
        assert job.get_data("current") == tag
        assert job.get_data("seen_left") == tag
        assert job.get_data("message") == {"reason": "all_slots_ready"}
        retries = [entry["routine_id"] for entry in job.trace_log if entry["action"] == "retry"]
        assert retries == (["left"] if tag % 2 == 0 else [])


def test_an_incomplete_join_fails_its_job_with_incomplete_join_error(backend: Backend) -> None:
    _join_flow(skip_right=True)
    with backend.runtime() as runtime:
        runtime.exec("join", worker_id="w")
        jobs = _post(runtime, 4)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        join = runtime.metrics()["routines"]["w"]["join"]
        dead = runtime.dead_letter_counts()
    assert [job.status for job in jobs] == [JobStatus.COMPLETED, JobStatus.FAILED] * 2
    for job in jobs[1::2]:
        assert job.error == (
            f"{IncompleteJoinError.__name__}: routine 'join' holds data of job {job.job_id} in "
            "slot 'left', but slot(s) right can no longer arrive (nothing else of the job is "
            "in flight)"
        )
    assert [job.get_data("pair") for job in jobs[::2]] == [[[0], [0]], [[2], [2]]]
    assert (join["queued"], join["incomplete_joins"], join["handled"]) == (0, 2, 2)
    assert dead == {"join incomplete": 2}


def test_an_incomplete_join_runs_with_what_arrived_when_asked(backend: Backend) -> None:
    _join_flow(skip_right=True, policy=all_slots_ready_policy(on_incomplete="run"))
    with backend.runtime() as runtime:
        runtime.exec("join", worker_id="w")
        jobs = _post(runtime, 2, worker_id="w")
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        join = runtime.metrics()["routines"]["w"]["join"]
    assert (join["incomplete_joins"], join["handled"]) == (1, 2)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2
    assert jobs[0].get_data("pair") == [[0], [0]]
    assert jobs[1].get_data("pair") == [[1], []]
    assert jobs[1].get_data("message") == {"reason": "incomplete", "missing": ["right"]}


def test_a_join_timeout_fails_the_job_naming_the_missing_slot(backend: Backend) -> None:
    _join_flow(retry_right_delay=3.0, policy=all_slots_ready_policy(timeout=0.2))
    with backend.runtime() as runtime:
        (job,) = _post(runtime, 1)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "IncompleteJoinError: routine 'join' holds data of job "
        f"{job.job_id} in slot 'left', but slot(s) right did not arrive within 0.2 s"
    )


def test_data_waiting_in_a_join_leaves_it_when_its_job_ends(backend: Backend) -> None:
    _join_flow(retry_right_delay=30.0)
    with backend.runtime() as runtime:
        (job,) = _post(runtime, 1, timeout=1.0)  # the left branch's data waits in the join
        assert job.wait(backend.wait)
        assert runtime.shutdown(timeout=backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == f"JobTimeoutError: job '{job.job_id}' timed out after 1 s"
    letters = [
        (d["job_id"], d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()
    ]
    assert letters == [(job.job_id, "join", "left", "job failed")]


def test_a_join_with_a_key_pairs_data_of_different_jobs(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        append(state, "pairs", [slot_data["a"], slot_data["b"], job.metadata["name"]])

    join = make_routine(
        logic, slots=("a", "b"), policy=all_slots_ready_policy(key=lambda data: data["order"])
    )
    register("keyed", {"pairs": join})
    posts = [("a", 1, "a1"), ("a", 2, "a2"), ("b", 2, "b2"), ("b", 1, "b1")]
    with backend.runtime() as runtime:
        state = runtime.exec("keyed")
        jobs = [
            runtime.post("keyed", "pairs", slot, {"order": order}, metadata={"name": name})[1]
            for slot, order, name in posts
        ]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        pairs = state.get_routine_state("pairs")
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4
    assert pairs == [
        [[{"order": 2}], [{"order": 2}], "b2"],  # the data point that completed the join
        [[{"order": 1}], [{"order": 1}], "b1"],
    ]


def _keyed_join(**options: Any) -> None:
    """A join ``pairs`` of slots ``a`` and ``b`` keyed by the data's ``order``; its logic
    writes what it got to the current job."""

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("run", [slot_data["a"], slot_data["b"], message])

    policy = all_slots_ready_policy(key=lambda data: data["order"], **options)
    register("keyed", {"pairs": make_routine(logic, slots=("a", "b"), policy=policy)})


def test_a_graceful_shutdown_runs_an_incomplete_keyed_join_when_asked(backend: Backend) -> None:
    _keyed_join(on_incomplete="run")
    runtime = backend.runtime()
    runtime.exec("keyed", worker_id="w")
    _, job = runtime.post("keyed", "pairs", "a", {"order": 1})
    backend.settle(runtime)
    assert runtime.shutdown(timeout=backend.wait) is True
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.get_data("run") == [[{"order": 1}], [], {"reason": "flush", "missing": ["b"]}]
    assert runtime.dead_letter_counts() == {}


def test_a_graceful_shutdown_fails_an_incomplete_keyed_join(backend: Backend) -> None:
    _keyed_join()
    runtime = backend.runtime()
    runtime.exec("keyed", worker_id="w")
    _, job = runtime.post("keyed", "pairs", "b", {"order": 1})
    backend.settle(runtime)
    assert runtime.shutdown(timeout=backend.wait) is True
    assert job.status == JobStatus.FAILED
    assert job.error.startswith(f"{IncompleteJoinError.__name__}: routine 'pairs' holds data of ")
    assert [(d["job_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()] == [
        (job.job_id, "b", "join incomplete")
    ]


def test_a_join_key_function_that_raises_fails_the_job_of_the_data(backend: Backend) -> None:
    _keyed_join()
    with backend.runtime() as runtime:
        runtime.exec("keyed", worker_id="w")
        _, job = runtime.post("keyed", "pairs", "a", {"no order": 1})
        assert job.wait(backend.wait)
        queued = runtime.metrics()["routines"]["w"]["pairs"]["queued"]
    assert job.status == JobStatus.FAILED
    assert job.error == "KeyError: 'order'"
    assert [(e["routine_id"], e["action"]) for e in job.trace_log] == [("pairs", "policy failed")]
    assert queued == 0
