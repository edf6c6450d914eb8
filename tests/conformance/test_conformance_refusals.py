"""Features a backend refuses by design are refused with a named error; elsewhere they work."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, make_routine, register

from actorflow import ConfigurationError, JobStatus
from actorflow.faults import FaultPlan


def test_a_fault_plan_is_applied_or_refused(backend: Backend) -> None:
    register("charge", {"charge": make_routine(lambda sd, m, ws: None)})
    plan = FaultPlan(seed=1).raise_in("charge", ConnectionError("card network down"), on_message=1)
    if backend.refuses("faults"):
        with pytest.raises(ConfigurationError, match="fault plans need the thread backend"):
            backend.runtime(faults=plan)
        return
    with backend.runtime(faults=plan) as runtime:
        jobs = [runtime.post("charge", "charge", "in", n)[1] for n in range(2)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        log = runtime.fault_log()
    assert [(job.status, job.error) for job in jobs] == [
        (JobStatus.FAILED, "ConnectionError: card network down"),
        (JobStatus.COMPLETED, None),
    ]
    assert [(entry["fault"], entry["routine"]) for entry in log] == [("raise", "charge")]


def test_deterministic_mode_is_available_or_refused(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("r", "n")

    register("replay", {"r": make_routine(logic)})
    if backend.refuses("deterministic"):
        with pytest.raises(ConfigurationError, match="deterministic runs"):
            backend.runtime(deterministic=True, seed=3)
        return
    with backend.runtime(deterministic=True, seed=3) as runtime:
        assert runtime.deterministic
        state = runtime.exec("replay", worker_id="w")
        _, job = runtime.post("replay", "r", "in", 1)
        assert job.wait(60)
        assert state.get_routine_state("r") == {"n": 1}
        assert runtime.delivery_log() == [("w", "r", "in", job.job_id)]
