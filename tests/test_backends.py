"""The core semantics on both backends: threads and Ray actors."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flows import pipeline

from actorflow import (
    ErrorStrategy,
    Flow,
    FlowRegistry,
    JobStatus,
    Routine,
    Runtime,
    get_current_job,
)


def test_jobs_complete_and_data_flows_downstream(backend: str) -> None:
    pipeline("pipe", 3)
    with Runtime(backend=backend) as runtime:
        jobs = [
            runtime.post("pipe", "r0", "in", {"value": i}, metadata={"n": i})[1] for i in range(60)
        ]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
    for job in jobs:
        assert job.status == JobStatus.COMPLETED
        assert job.data["path"] == ["r0", "r1", "r2"]


def test_get_current_job_inside_the_routine_sees_its_own_job(backend: str) -> None:
    tag = Routine()
    tag.add_slot("in")
    tag.add_event("out")

    def tag_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("user", job.metadata["user"])
        job.trace("tag", "tagged", {"user": job.metadata["user"]})
        tag.emit("out", echo=sd["in"][0])

    check = Routine()
    check.add_slot("in")

    def check_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        if job.get_data("user") != job.metadata["user"]:
            raise AssertionError("data of another job")
        job.set_data("checked", sd["in"][0]["echo"])

    tag.set_logic(tag_logic)
    check.set_logic(check_logic)
    flow = Flow("ctx")
    flow.add_routine(tag, "tag")
    flow.add_routine(check, "check")
    flow.connect("tag", "out", "check", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend=backend) as runtime:
        jobs = [
            runtime.post("ctx", "tag", "in", i, metadata={"user": f"u{i}"})[1] for i in range(30)
        ]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
    for i, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, job.error
        assert dict(job.data) == {"user": f"u{i}", "checked": i}
        assert [e["action"] for e in job.trace_log] == ["tagged"]


def test_state_isolation_and_atomic_updates(backend: str) -> None:
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: source.emit("out", n=1))
    flow = Flow("atomic")
    flow.add_routine(source, "source")
    for name in ("a", "b"):
        counter = Routine()
        counter.add_slot("in")
        counter.set_logic(lambda sd, m, ws: ws.increment("_shared", "count"))
        flow.add_routine(counter, name)
        flow.connect("source", "out", name, "in")
    snoop = Routine()
    snoop.add_slot("in")
    snoop.set_logic(lambda sd, m, ws: ws.get_routine_state("a"))
    flow.add_routine(snoop, "snoop")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend=backend) as runtime:
        state = runtime.exec("atomic")
        for i in range(50):
            runtime.post("atomic", "source", "in", i)
        _, snooping = runtime.post("atomic", "snoop", "in", 1)
        assert runtime.wait_until_all_jobs_finished(timeout=60)
        assert state.get_routine_state("_shared") == {"count": 100}
    assert snooping.status == JobStatus.FAILED
    assert "StateAccessError" in (snooping.error or "") and "'snoop'" in (snooping.error or "")


@pytest.mark.parametrize("strategy", ["stop", "continue", "retry"])
def test_error_strategies(backend: str, strategy: str) -> None:
    tries: Counter[str] = Counter()

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        attempts = ws.increment("_tries", str(sd["in"][0]))
        if attempts == 1:
            raise ConnectionError("first try fails")
        tries["ok"] += 1

    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(logic)
    if strategy == "retry":
        routine.set_error_handler(ErrorStrategy.RETRY(max_retries=2, delay=0.01))
    else:
        routine.set_error_handler(strategy)
    flow = Flow("strategies")
    flow.add_routine(routine, "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend=backend) as runtime:
        jobs = [runtime.post("strategies", "r", "in", i)[1] for i in range(5)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
    statuses = {job.status for job in jobs}
    if strategy == "stop":
        assert statuses == {JobStatus.FAILED}
        assert all(job.error == "ConnectionError: first try fails" for job in jobs)
    elif strategy == "continue":
        assert statuses == {JobStatus.COMPLETED}
        assert all(job.errors[0]["handled_as"] == "continue" for job in jobs)
    else:
        assert statuses == {JobStatus.COMPLETED}
        assert all([e["action"] for e in job.trace_log] == ["retry"] for job in jobs)


@pytest.mark.ray
def test_a_killed_routine_actor_is_restarted_and_every_job_is_accounted_for(
    local_ray: None,
) -> None:
    import ray

    pipeline("pipe", 3)
    with Runtime(backend="ray") as runtime:
        runtime.exec("pipe", worker_id="w")
        jobs = [runtime.post("pipe", "r0", "in", {"value": i})[1] for i in range(150)]
        victim = runtime._workers["w"].actors["r1"][0]
        ray.kill(victim, no_restart=False)  # the process dies; Ray restarts it
        jobs += [runtime.post("pipe", "r0", "in", {"value": i})[1] for i in range(150)]
        assert runtime.wait_until_all_jobs_finished(timeout=120)
    assert Counter(job.status for job in jobs) == {JobStatus.COMPLETED: 300}
    assert Counter(tuple(job.data.get("path", ())) for job in jobs) == {("r0", "r1", "r2"): 300}


def test_ray_backend_refuses_what_it_cannot_run(local_ray: None) -> None:
    from actorflow import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown backend"):
        Runtime(backend="processes")
    with pytest.raises(ConfigurationError, match="deterministic runs need the thread backend"):
        Runtime(backend="ray", deterministic=True)


def test_retry_of_a_batch(backend: str) -> None:
    from actorflow import batch_size_policy

    batcher = Routine()
    batcher.add_slot("in")

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        if ws.increment("_tries", "n") == 1:
            raise ConnectionError("first try fails")
        ws.update_routine_state("batcher", sd["in"])

    batcher.set_logic(logic)
    batcher.set_activation_policy(batch_size_policy(2, timeout=None))
    batcher.set_error_handler(ErrorStrategy.RETRY(max_retries=2, delay=0.01))
    flow = Flow("retried_batches")
    flow.add_routine(batcher, "batcher")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend=backend) as runtime:
        state = runtime.exec("retried_batches")
        jobs = [runtime.post("retried_batches", "batcher", "in", i)[1] for i in range(2)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
        assert state.get_routine_state("batcher") == [0, 1]
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}
    assert all([e["action"] for e in job.trace_log] == ["retry"] for job in jobs)


def test_batch_policy_with_timeout_and_flush(backend: str) -> None:
    from actorflow import batch_size_policy

    sizes: list[int] = []
    batcher = Routine()
    batcher.add_slot("in")
    batcher.add_event("out")

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        ws.modify_routine_state("batcher", lambda old: [*(old or []), len(sd["in"])])
        batcher.emit("out", n=len(sd["in"]))

    batcher.set_logic(logic)
    batcher.set_activation_policy(batch_size_policy(3, timeout=None))
    sink = Routine()
    sink.add_slot("in")
    sink.set_logic(lambda sd, m, ws: None)
    flow = Flow("batches")
    flow.add_routine(batcher, "batcher")
    flow.add_routine(sink, "sink")
    flow.connect("batcher", "out", "sink", "in")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(backend=backend)
    state = runtime.exec("batches")
    jobs = [runtime.post("batches", "batcher", "in", i)[1] for i in range(7)]
    assert jobs[5].wait(60)  # two full batches of 3 ran
    assert not jobs[6].done  # the 7th waits for a full batch...
    sizes = state.get_routine_state("batcher")
    assert runtime.shutdown(wait=True, timeout=60) is True  # ...until the flush at shutdown
    assert sizes == [3, 3]
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}


def test_ray_backend_refuses_settings_it_cannot_honour(local_ray: None) -> None:
    from actorflow import ConfigurationError
    from actorflow.store import create_store

    pipeline("pipe", 2)
    with Runtime(backend="ray", state_store=create_store("memory")) as runtime:
        with pytest.raises(ConfigurationError, match="state_store"):
            runtime.exec("pipe")


@pytest.mark.ray
def test_state_limits_hold_on_ray(local_ray: None) -> None:
    from actorflow import StateLimitError, StateLimits

    pipeline("pipe", 2)
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("pipe", state_limits=StateLimits(max_key_bytes=10))
        with pytest.raises(StateLimitError, match="limit per key is 10"):
            state.update_routine_state("_x", "a" * 100)
        state.update_routine_state("_x", "a")
        assert state.get_routine_state("_x") == "a"


@pytest.mark.ray
def test_ray_supervisor_state_survives_its_process_dying(local_ray: None, tmp_path: Any) -> None:
    import functools

    import ray

    from actorflow.store import create_store

    pipeline("pipe", 1)
    factory = functools.partial(create_store, "sqlite", path=str(tmp_path / "state.sqlite3"))
    with Runtime(backend="ray", state_store=factory) as runtime:
        state = runtime.exec("pipe", worker_id="durable")
        for _ in range(5):
            state.increment("_totals", "n")
        supervisor = runtime._workers["durable"].supervisor
        ray.kill(supervisor, no_restart=False)  # the process dies; Ray restarts the actor
        assert state.get_routine_state("_totals") == {"n": 5}  # read back from SQLite
        state.increment("_totals", "n")
    with Runtime(backend="ray", state_store=factory) as runtime:
        restored = runtime.exec("pipe", worker_id="durable", restore=True)
        assert restored.get_routine_state("_totals") == {"n": 6}


@pytest.mark.ray
def test_ray_records_dead_letters(local_ray: None) -> None:
    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(lambda sd, m, ws: (_ for _ in ()).throw(ValueError("bad")))
    routine.set_error_handler("skip")
    flow = Flow("skippy")
    flow.add_routine(routine, "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend="ray") as runtime:
        jobs = [runtime.post("skippy", "r", "in", i)[1] for i in range(3)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
        assert {job.status for job in jobs} == {JobStatus.COMPLETED}
        assert runtime.dead_letter_counts() == {"skipped": 3}


def test_a_half_filled_batch_is_released_by_its_timeout(backend: str) -> None:
    from actorflow import batch_size_policy

    batcher = Routine()
    batcher.add_slot("in")
    batcher.set_logic(
        lambda sd, m, ws: ws.modify_routine_state("r", lambda old: [*(old or []), sd["in"]])
    )
    batcher.set_activation_policy(batch_size_policy(10, timeout=0.2))
    flow = Flow("timed_batches")
    flow.add_routine(batcher, "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend=backend) as runtime:
        state = runtime.exec("timed_batches")
        jobs = [runtime.post("timed_batches", "r", "in", i)[1] for i in range(2)]
        assert all(job.wait(60) for job in jobs)
        assert state.get_routine_state("r") == [[0, 1]]


def traced_chain(flow_id: str, before_b: Any = None) -> None:
    """a -> b; each traces what it handles and writes it into the job's data under its name
    (b first calls ``before_b(value)``, if given)."""

    def step(name: str, emits: bool) -> Routine:
        routine = Routine()
        routine.add_slot("in")
        if emits:
            routine.add_event("out")

        def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            job = get_current_job()
            assert job is not None
            value = sd["in"][0] if emits else sd["in"][0]["v"]
            if not emits and before_b is not None:
                before_b(value)
            job.trace(name, "handled", {"v": value})
            job.set_data(name, value)
            if emits:
                routine.emit("out", v=value)

        routine.set_logic(logic)
        return routine

    flow = Flow(flow_id)
    flow.add_routine(step("a", True), "a")
    flow.add_routine(step("b", False), "b")
    flow.connect("a", "out", "b", "in")
    FlowRegistry.get_instance().register(flow)


def deliver_reports_twice(runtime: Runtime, after_the_end: bool) -> None:
    """Make the Ray driver take every report of a routine twice, as after a redelivery: at
    once while its job runs, and (``after_the_end``) also once the job has ended."""
    backend = runtime._backend
    apply = backend._apply

    def twice(report: tuple[Any, ...]) -> None:
        apply(report)
        job = runtime.get_job(report[1])  # a report names its job second
        if after_the_end or (job is not None and not job.done):
            apply(report)

    backend._apply = twice


def assert_each_step_counted_once(jobs: list[Any]) -> None:
    for v, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, job.error
        assert dict(job.data) == {"a": v, "b": v}
        assert [(e["routine_id"], e["action"]) for e in job.trace_log] == [
            ("a", "handled"),
            ("b", "handled"),
        ]


@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_ray_a_report_delivered_twice_is_applied_once(local_ray: None, strict: bool) -> None:
    """Every report reaches the driver twice before its job ends: its weight, writes and
    trace count once, so no job completes before b has run, and b's step is in every job."""
    traced_chain("twice")
    with Runtime(backend="ray", strict=strict) as runtime:
        deliver_reports_twice(runtime, after_the_end=False)
        jobs = [runtime.post("twice", "a", "in", v)[1] for v in range(20)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
    assert_each_step_counted_once(jobs)


@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_ray_a_batch_redelivered_after_its_actor_died_is_counted_once(
    local_ray: None, tmp_path: Any, strict: bool
) -> None:
    """b's process dies (os._exit) while it handles a message; Ray restarts the actor and
    delivers that call's messages again. Every job completes with each step's data and
    trace once."""
    import os

    died = tmp_path / "died"

    def die_once(value: int) -> None:
        if value == 3 and not died.exists():
            died.touch()
            os._exit(1)

    traced_chain("redelivered", before_b=die_once)
    with Runtime(backend="ray", strict=strict) as runtime:
        jobs = [runtime.post("redelivered", "a", "in", v)[1] for v in range(10)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
    assert died.exists()
    assert_each_step_counted_once(jobs)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ray_a_report_delivered_again_after_its_job_ended_changes_nothing(
    local_ray: None,
) -> None:
    traced_chain("late_twice")
    with Runtime(backend="ray") as runtime:
        deliver_reports_twice(runtime, after_the_end=True)
        jobs = [runtime.post("late_twice", "a", "in", v)[1] for v in range(5)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
        runtime.shutdown()  # every report has been taken when the shutdown returns
    assert_each_step_counted_once(jobs)
