"""Recording and replay on every backend: a job recorded with ``Runtime(record=True)`` on any
backend holds what each routine's logic read and did, and replays on the deterministic runtime
to the same steps and the same failure, with the values its WorkerState calls returned then."""

from __future__ import annotations

import asyncio
import json
import traceback
from typing import Any

from conformance_kit import Backend, make_routine, register

from actorflow import ErrorStrategy, Flow, JobStatus, get_current_job
from actorflow.testing import replay


def _limits_flow() -> Flow:
    """parse -> check: parse counts the jobs in a shared key and emits a tuple; check reads a
    limit from the state and fails a job whose value is above it."""

    def parse_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        seen = state.increment("_seen", "n")
        job = get_current_job()
        assert job is not None
        job.set_data("seen", seen)
        parse.emit("out", value=slot_data["in"][0] * seen, pair=(seen, "x"))

    parse = make_routine(parse_logic, events=("out",))

    def check_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        limit = state.get_routine_state("_limit")["max"]
        item = slot_data["in"][0]
        if item["value"] > limit:
            raise ValueError(f"value {item['value']} is above the limit {limit}")

    check = make_routine(check_logic)
    return register("limits", {"parse": parse, "check": check}, [("parse", "out", "check", "in")])


def test_a_failed_job_replays_to_the_same_failure_with_the_state_it_read(
    backend: Backend,
) -> None:
    flow = _limits_flow()
    with backend.runtime(record=True) as runtime:
        state = runtime.exec("limits", worker_id="w")
        state.update_routine_state("_limit", {"max": 10})
        jobs = [runtime.post("limits", "parse", "in", 4, worker_id="w")[1] for _ in range(3)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        by_seen = {job.data["seen"]: job for job in jobs}
        failed = by_seen[3]  # 4 * 3 = 12 > 10; the first two (4, 8) passed
        assert [by_seen[n].status for n in (1, 2, 3)] == [
            JobStatus.COMPLETED,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
        ]
        recording = json.loads(json.dumps(runtime.recording(failed.job_id), allow_nan=False))

    assert recording["status"] == "failed"
    assert [step["routine"] for step in recording["steps"]] == ["parse", "check"]
    parse_step, check_step = recording["steps"]
    assert parse_step["slot_data"] == {"in": [4]}
    assert parse_step["state_calls"] == [
        {"op": "increment", "key": "_seen", "arg": "n", "extra": 1, "result": 3}
    ]
    assert parse_step["job_writes"] == {"seen": 3}
    pair = {"__actorflow__": "tuple", "value": [3, "x"]}
    assert parse_step["emits"] == [{"event": "out", "data": {"value": 12, "pair": pair}}]
    assert check_step["job_data"] == {"seen": 3}
    assert check_step["state_calls"] == [{"op": "get", "key": "_limit", "result": {"max": 10}}]
    assert check_step["error"]["type"] == "ValueError"
    assert "in check_logic" in check_step["error"]["traceback"]

    # the replay's own state is empty: it runs as recorded only with the recorded answers
    report = replay(recording, flow)
    assert report.reproduced, report.summary()
    assert report.status == "failed"
    assert report.error == "ValueError: value 12 is above the limit 10"
    assert isinstance(report.exception, ValueError)
    frames = [frame.name for frame in traceback.extract_tb(report.exception.__traceback__)]
    assert frames[-1] == "check_logic"


def test_retries_of_async_logic_are_steps_and_replay_in_order(backend: Backend) -> None:
    async def call_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        await asyncio.sleep(0)
        tries = await state.aio.increment("_tries", "n")
        if tries < 3:
            raise ConnectionError(f"try {tries}: down")
        job = get_current_job()
        assert job is not None
        job.set_data("tries", tries)

    strategy = ErrorStrategy.RETRY(max_retries=3, delay=0.01)
    flow = register("calls", {"call": make_routine(call_logic, strategy=strategy)})
    with backend.runtime(record=True) as runtime:
        _, job = runtime.post("calls", "call", "in", "x")
        assert job.wait(backend.wait)
        assert job.status == JobStatus.COMPLETED
        recording = runtime.recording(job.job_id)

    steps = recording["steps"]
    assert [step["attempt"] for step in steps] == [1, 2, 3]
    assert [step["error"] and step["error"]["message"] for step in steps] == [
        "try 1: down",
        "try 2: down",
        None,
    ]
    assert [step["state_calls"][0]["result"] for step in steps] == [1, 2, 3]
    report = replay(recording, flow)
    assert report.reproduced, report.summary()
    assert report.steps_replayed == 3
