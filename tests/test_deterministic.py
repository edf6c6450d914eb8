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
            ws.modify_routine_state("_order", lambda s: [*(s or []), f"{name}:{job.job_id}"])
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


def run_diamond(seed: int) -> str:
    diamond()
    with DeterministicRuntime(seed=seed) as runtime:
        state = runtime.exec("diamond")
        jobs = [runtime.post("diamond", "source", "in", i)[1] for i in range(8)]
        assert runtime.wait_until_all_jobs_finished()
        return json.dumps(
            {
                "deliveries": runtime.delivery_log(),
                "traces": [job.trace_log for job in jobs],
                "data": [dict(job.data) for job in jobs],
                "state": state.snapshot(),
                "statuses": [job.status.value for job in jobs],
            },
            sort_keys=True,
        )


def test_same_seed_gives_the_same_run_byte_for_byte_over_20_runs() -> None:
    first = run_diamond(seed=42)
    assert all(run_diamond(seed=42) == first for _ in range(19))


def test_different_seeds_explore_different_interleavings() -> None:
    runs = {run_diamond(seed) for seed in range(5)}
    assert len(runs) > 1


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
