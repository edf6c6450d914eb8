"""Deterministic runs: same seed, same run; virtual time; probes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from actorflow import (
    ActorCrash,
    ErrorStrategy,
    Flow,
    FlowRegistry,
    JobStatus,
    Routine,
    Runtime,
    batch_size_policy,
    get_current_job,
    time_interval_policy,
)
from actorflow.testing import DeterministicRuntime


def routine(logic: Any, events: tuple[str, ...] = ("out",)) -> Routine:
    r = Routine()
    r.add_slot("in")
    for event in events:
        r.add_event(event)
    r.set_logic(logic)
    return r


def diamond() -> None:
    """source -> (left, right) -> join; every step traces and appends to shared state."""
    FlowRegistry.get_instance().clear()

    def step(name: str) -> Routine:
        def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            value = sd["in"][0]
            job = get_current_job()
            assert job is not None
            job.trace(name, "handled", {"value": value})
            job.set_data(name, value)
            label = f"{name}:{job.metadata['n']}"  # the job's place in posting order, no id
            ws.modify_routine_state("_order", lambda s: [*(s or []), label])
            me.emit("out", v=value)

        me = routine(logic)
        return me

    flow = Flow("diamond")
    for name in ("source", "left", "right", "join"):
        flow.add_routine(step(name), name)
    flow.connect("source", "out", "left", "in")
    flow.connect("source", "out", "right", "in")
    flow.connect("left", "out", "join", "in")
    flow.connect("right", "out", "join", "in")
    FlowRegistry.get_instance().register(flow)


def delivery_order(runtime: Runtime, jobs: list[Any]) -> list[tuple[str, str | None, int]]:
    """The delivery log as (routine, slot, the job's place in posting order).

    Job ids are built from the seed, so two runs with different seeds differ in their ids
    whatever the order; only this form says whether the order itself differs.
    """
    place = {job.job_id: n for n, job in enumerate(jobs)}
    return [(routine, slot, place[job_id]) for _, routine, slot, job_id in runtime.delivery_log()]


def run_diamond(seed: int, strict: bool = True) -> dict[str, Any]:
    """Everything observable about one run: ``raw`` with job ids, the rest without."""
    diamond()
    with DeterministicRuntime(seed=seed, strict=strict) as runtime:
        state = runtime.exec("diamond")
        jobs = [runtime.post("diamond", "source", "in", i, metadata={"n": i})[1] for i in range(8)]
        assert runtime.wait_until_all_jobs_finished()
        return {
            "raw": json.dumps(
                {"deliveries": runtime.delivery_log(), "ids": [job.job_id for job in jobs]}
            ),
            "order": delivery_order(runtime, jobs),
            "traces": json.dumps([job.trace_log for job in jobs], sort_keys=True),
            "data": [dict(job.data) for job in jobs],
            "state": state.snapshot(),
            "statuses": [job.status.value for job in jobs],
        }


def test_same_seed_gives_the_same_run_byte_for_byte_over_20_runs() -> None:
    first = run_diamond(seed=42)
    assert all(run_diamond(seed=42) == first for _ in range(19))


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_the_seed_decides_the_delivery_order_job_ids_aside(strict: bool) -> None:
    """Different seeds deliver the same messages in different orders (compared with job ids
    replaced by posting order: the ids alone would differ for any two seeds), and each seed
    replays its own order."""
    runs = {seed: run_diamond(seed, strict) for seed in range(5)}
    orders = {seed: run["order"] for seed, run in runs.items()}
    assert all(run_diamond(seed, strict)["order"] == orders[seed] for seed in (0, 3))
    assert len({tuple(order) for order in orders.values()}) == 5, orders
    # the same deliveries, only in another order; and the order is what the routines saw
    assert all(sorted(order) == sorted(orders[0]) for order in orders.values())
    seen = {seed: run["state"]["_order"] for seed, run in runs.items()}
    assert len({tuple(order) for order in seen.values()}) == 5
    # what does not depend on the order is the same for every seed
    assert all(run["data"] == runs[0]["data"] for run in runs.values())
    assert all(run["statuses"] == ["completed"] * 8 for run in runs.values())


def test_a_deterministic_runtime_starts_no_thread() -> None:
    diamond()
    before = threading.active_count()
    with DeterministicRuntime(seed=1) as runtime:
        runtime.post("diamond", "source", "in", 1)
        assert threading.active_count() == before
        assert runtime.wait_until_all_jobs_finished()
    assert threading.active_count() == before


def test_a_30_second_timeout_takes_milliseconds() -> None:
    release: list[bool] = []
    slow = routine(lambda sd, m, ws: None)
    slow.set_activation_policy(batch_size_policy(100, timeout=None))  # never full: waits
    flow = Flow("slow")
    flow.add_routine(slow, "slow")
    FlowRegistry.get_instance().register(flow)
    started = time.monotonic()
    with DeterministicRuntime(seed=3) as runtime:
        _, job = runtime.post("slow", "slow", "in", 1, timeout=30)
        runtime.advance(29.9)
        assert not job.done and not release
        runtime.advance(0.2)
        assert job.status == JobStatus.FAILED and "timed out after 30 s" in (job.error or "")
        assert runtime.now == pytest.approx(30.1)
    assert time.monotonic() - started < 1.0


def test_retry_backoff_runs_on_virtual_time() -> None:
    attempts: list[float] = []

    def flaky(sd: Any, m: Any, ws: Any) -> None:
        attempts.append(runtime.now)
        if len(attempts) < 4:
            raise ConnectionError("down")

    r = routine(flaky)
    r.set_error_handler(ErrorStrategy.RETRY(max_retries=3, delay=1.0, backoff=3.0))
    flow = Flow("retry")
    flow.add_routine(r, "r")
    FlowRegistry.get_instance().register(flow)
    runtime = DeterministicRuntime(seed=0)
    _, job = runtime.post("retry", "r", "in", 1)
    runtime.run_until_idle()
    assert attempts == [0.0] and not job.done
    assert job.wait()  # waiting moves virtual time through the backoff
    assert attempts == [0.0, 1.0, 4.0, 13.0]
    assert job.status == JobStatus.COMPLETED
    runtime.shutdown()


def test_time_interval_policy_on_virtual_time() -> None:
    batches: list[list[int]] = []
    r = routine(lambda sd, m, ws: batches.append(sd["in"]))
    r.set_activation_policy(time_interval_policy(10))
    flow = Flow("interval")
    flow.add_routine(r, "r")
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=0) as runtime:
        runtime.post("interval", "r", "in", 1)
        runtime.run_until_idle()
        for i in (2, 3, 4):
            runtime.post("interval", "r", "in", i)
        runtime.advance(9.99)
        assert batches == [[1]]
        runtime.advance(0.01)
        assert batches == [[1], [2, 3, 4]]


def test_supervision_in_deterministic_mode() -> None:
    starts: list[int] = []

    class Crashy(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            starts.append(1)

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            if sd["in"][0] == 2:
                raise ActorCrash("boom")

    flow = Flow("crashy")
    flow.add_routine(Crashy(), "c")
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=9) as runtime:
        jobs = [runtime.post("crashy", "c", "in", i)[1] for i in range(5)]
        assert runtime.wait_until_all_jobs_finished()
        assert [j.status.value for j in jobs] == [
            "completed",
            "completed",
            "failed",
            "completed",
            "completed",
        ]
    assert len(starts) == 2


def test_deterministic_mode_rejects_thread_only_options() -> None:
    with pytest.raises(Exception, match="seed"):
        Runtime(seed=3)
    with pytest.raises(RuntimeError, match="deterministic"):
        Runtime().advance(1)


# -- probes -----------------------------------------------------------------------------


def probe_flow() -> None:
    FlowRegistry.get_instance().clear()
    double = routine(lambda sd, m, ws: [double.emit("out", n=x * 2) for x in sd["in"]])
    flow = Flow("probed")
    flow.add_routine(double, "double")
    FlowRegistry.get_instance().register(flow)


@pytest.mark.parametrize("deterministic", [False, True])
def test_probe_expect_and_expect_no_message(deterministic: bool) -> None:
    probe_flow()
    runtime = Runtime(deterministic=True, seed=1) if deterministic else Runtime()
    with runtime:
        probe = runtime.probe("double", "out")
        runtime.post("probed", "double", "in", 2)
        assert probe.expect({"n": 4}, timeout=5) == {"n": 4}
        runtime.post("probed", "double", "in", 5)
        probe.expect(lambda data: data["n"] > 5, timeout=5)
        probe.expect_no_message(within=0.05)
        assert probe.messages == [{"n": 4}, {"n": 10}]
        runtime.post("probed", "double", "in", 1)
        with pytest.raises(AssertionError, match="expected 99"):
            probe.expect(99, timeout=5)
        with pytest.raises(AssertionError, match="no message within"):
            probe.expect(timeout=0.05)


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_probe_message_names_its_job_and_the_worker_that_ran_the_routine(
    deterministic: bool,
) -> None:
    probe_flow()
    runtime = Runtime(deterministic=True, seed=1) if deterministic else Runtime()
    with runtime:
        runtime.exec("probed", worker_id="w")
        probe = runtime.probe("double", "out")
        _, job = runtime.post("probed", "double", "in", 3, worker_id="w")
        assert job.wait(5)
        probe.expect({"n": 6}, timeout=5)
    (message,) = probe.received
    assert (message.job_id, message.worker_id) == (job.job_id, "w")


def test_an_unconnected_probed_emit_of_a_job_that_ended_meanwhile_goes_nowhere() -> None:
    """The logic cancels its own job, then emits on an event that only a probe watches: no
    dead letter (no connection), no crash, and the probe still sees the message."""
    FlowRegistry.get_instance().clear()

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        assert runtime.cancel_job(job.job_id)
        watched.emit("out", n=sd["in"][0])

    watched = routine(logic)
    flow = Flow("watched")
    flow.add_routine(watched, "watched")
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=1) as runtime:
        runtime.exec("watched", worker_id="w")
        probe = runtime.probe("watched", "out")
        _, job = runtime.post("watched", "watched", "in", 1, worker_id="w")
        assert job.wait(5)
        runtime.run_until_idle()
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
    assert job.status == JobStatus.CANCELLED
    assert probe.messages == [{"n": 1}]
    assert runtime.dead_letter_counts() == {}
    assert restarts == 0


def doomed_flow() -> None:
    """One routine ``c`` that crashes on every message; no restart allowed: the first crash
    fails the worker."""
    FlowRegistry.get_instance().clear()

    def crash(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        raise ActorCrash("boom")

    flow = Flow("doomed")
    flow.add_routine(routine(crash, events=()), "c")
    flow.set_supervision(max_restarts=0)
    FlowRegistry.get_instance().register(flow)


def test_messages_queued_for_a_failed_worker_become_dead_letters_at_once() -> None:
    """The first message crashes the routine past its restart intensity: the worker fails,
    and the scheduler delivers the messages still queued for it as dead letters at once (they
    are not kept in the mailbox until shutdown)."""
    doomed_flow()
    with DeterministicRuntime(seed=1) as runtime:
        state = runtime.exec("doomed", worker_id="w")
        jobs = [runtime.post("doomed", "c", "in", n, worker_id="w")[1] for n in range(3)]
        assert runtime.run_until_idle() == 3
        assert state.status == "failed"
        assert all(job.status == JobStatus.FAILED for job in jobs)
        letters = [(d["worker_id"], d["routine_id"], d["reason"]) for d in runtime.dead_letters()]
        assert letters == [("w", "c", "worker failed")] * 2


def test_a_dead_letter_for_a_failed_worker_names_its_job_in_strict_mode() -> None:
    doomed_flow()
    with DeterministicRuntime(seed=1, strict=True) as runtime:
        runtime.exec("doomed", worker_id="w")
        jobs = [runtime.post("doomed", "c", "in", n, worker_id="w")[1] for n in range(3)]
        runtime.run_until_idle()
        assert [d["job_id"] for d in runtime.dead_letters()] == [job.job_id for job in jobs[1:]]


def test_a_crash_before_the_logic_runs_fails_the_job_of_the_message_taken() -> None:
    """A custom activation policy crashes the actor while it takes a message (before any
    logic runs): the supervisor fails that message's job and restarts the actor."""
    from actorflow import custom_policy

    def take(slots: Any) -> bool:
        if slots["in"] and slots["in"][-1] == "crash":
            raise ActorCrash("the policy crashed")
        return True

    ran: list[Any] = []
    r = routine(lambda sd, m, ws: ran.append(sd["in"]), events=())
    r.set_activation_policy(custom_policy(take))
    flow = Flow("crash_in_policy")
    flow.add_routine(r, "c")
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=1, strict=False) as runtime:
        runtime.exec("crash_in_policy", worker_id="w")
        _, crashed = runtime.post("crash_in_policy", "c", "in", "crash", worker_id="w")
        assert crashed.wait(10)
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
    assert crashed.status == JobStatus.FAILED
    assert crashed.error is not None and "the policy crashed" in crashed.error
    assert restarts == 1
