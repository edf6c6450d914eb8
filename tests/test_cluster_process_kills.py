"""Process faults in a cluster experiment: the owner of a worker's state and a routine's actor
are killed with SIGKILL while jobs run on a local 3-node Ray cluster; with a state store every
job ends, each counted once, and the state is exact."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigurationError, Flow, JobContext, Routine, Runtime, get_current_job
from actorflow.cluster_experiments import run_cluster_experiment
from actorflow.store import create_store

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

STEPS = ("reserve", "charge", "ship")


def _orders() -> Flow:
    flow = Flow("orders_killed")
    for index, name in enumerate(STEPS):
        last = index == len(STEPS) - 1
        routine = Routine()
        routine.add_slot("in")
        if not last:
            routine.add_event("out")

        def logic(slot_data: Any, message: Any, state: Any, me: Routine = routine, name: str = name,
                  last: bool = last) -> None:  # fmt: skip
            job = get_current_job()
            assert job is not None
            state.modify_routine_state(name, lambda ran, job_id=job.job_id: [*(ran or []), job_id])
            if not last:
                me.emit("out", order=slot_data["in"][0])

        routine.set_logic(logic)
        flow.add_routine(routine, name)
    for source, target in itertools.pairwise(STEPS):
        flow.connect(source, "out", target, "in")
    return flow


def _state_is_exact(runtime: Runtime, jobs: list[JobContext]) -> Mapping[str, Any]:
    worker = runtime.get_worker(jobs[0].worker_id)
    assert worker is not None
    completed = {job.job_id for job in jobs if job.status.value == "completed"}
    exact = True
    for name in STEPS:
        recorded = worker.get_routine_state(name) or []
        exact = exact and len(recorded) == len(set(recorded)) and completed <= set(recorded)
    return {"state exact": exact, "all completed": len(completed) == len(jobs)}


def _experiment(store_path: str) -> dict[str, Any]:
    """The experiment, in a process of its own (a cluster needs a process that has joined no
    Ray yet): its report."""
    report = run_cluster_experiment(
        _orders(),
        [("reserve", "in", {"order": n}) for n in range(300)],
        nodes=3,
        kill_state_owner_at=1.0,
        kill_routine_at={"charge": 1.5},
        state_store=functools.partial(create_store, "sqlite", path=store_path),
        post_rate=150,
        check=_state_is_exact,
    )
    return {**report, "summary": report.summary()}


def test_killing_the_state_owner_and_a_routine_actor_loses_no_job_and_no_state(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "state.db")],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["steady_state_before"] and report["steady_state_after"], report["summary"]
    assert report["run"]["posted"] == 300
    assert report["checks"] == {"state exact": True, "all completed": True}
    kills = {fault["fault"]: fault for fault in report["faults"]}
    assert kills["state owner killed"]["where"] == "state owner of experiment"
    assert kills["routine actor killed"]["where"] == "charge[0]"
    assert kills["state owner killed"]["at"] >= 1.0 and kills["routine actor killed"]["at"] >= 1.5
    assert kills["routine actor killed"]["jobs_hit"] > 0
    assert kills["routine actor killed"]["outcomes"] == {
        "completed": kills["routine actor killed"]["jobs_hit"]
    }


def test_a_kill_of_a_routine_the_flow_lacks_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigurationError, match="has no 'pack'"):
        run_cluster_experiment(_orders(), [], kill_routine_at={"pack": 1.0})
    with pytest.raises(ConfigurationError, match="state_store must be a function"):
        run_cluster_experiment(_orders(), [], state_store="sqlite")  # type: ignore[arg-type]


if __name__ == "__main__":  # the experiment's process (see the test above)
    with contextlib.redirect_stdout(sys.stderr):  # what Ray prints about the dead processes
        found = _experiment(sys.argv[1])
    print(json.dumps(found))
