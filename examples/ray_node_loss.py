"""A node-loss experiment: a Ray node with routine actors goes away while jobs run.

Three Ray nodes on this machine (actorflow.testing.ray_cluster.LocalRayCluster). Orders go
through reserve -> charge -> ship; each routine records in the worker's state, for each job,
that it ran. Two seconds into the run, the node running most routine actors is removed, with
its raylet and every process on it. The steady-state hypothesis: every job ends (completed,
failed or cancelled, each counted once), and the state is exact: a routine ran once for each
job it records, and every completed job is recorded by every routine (no acknowledged state
update is lost, none is applied twice).

Run it with:  python examples/ray_node_loss.py   (needs pip install 'actorflow[ray]')
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actorflow import Flow, JobContext, Routine, Runtime, get_current_job
from actorflow.cluster_experiments import run_cluster_experiment

JOBS = 500
KILL_NODE_AT = 2.0  # seconds after the first post of the run under the fault
STEPS = ("reserve", "charge", "ship")


def build_flow() -> Flow:
    flow = Flow("orders_on_a_cluster")
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
            # one atomic update per job: how many times it ran, and for which jobs
            state.modify_routine_state(
                name, lambda ran, job_id=job.job_id: {
                    "count": (ran or {}).get("count", 0) + 1,
                    "jobs": [*(ran or {}).get("jobs", []), job_id],
                },
            )  # fmt: skip
            if not last:
                me.emit("out", order=slot_data["in"][0])

        routine.set_logic(logic)
        if name == "charge":
            routine.set_concurrency(2)
        flow.add_routine(routine, name)
    for source, target in itertools.pairwise(STEPS):
        flow.connect(source, "out", target, "in")
    return flow


def state_is_exact(runtime: Runtime, jobs: list[JobContext]) -> Mapping[str, Any]:
    """Each routine ran once per job it records, and recorded every completed job."""
    worker = runtime.get_worker(jobs[0].worker_id)
    assert worker is not None
    completed = {job.job_id for job in jobs if job.status.value == "completed"}
    exact = True
    for name in STEPS:
        ran = worker.get_routine_state(name) or {"count": 0, "jobs": []}
        recorded = ran["jobs"]
        exact = exact and ran["count"] == len(recorded) == len(set(recorded))
        exact = exact and completed <= set(recorded)
    return {"state exact": exact}


def main() -> int:
    # Ray's driver prints what the lost node's raylet last logged on stdout: keep stdout for
    # the findings, and send Ray's messages to stderr
    with contextlib.redirect_stdout(sys.stderr):
        report = run_cluster_experiment(
            build_flow(),
            [("reserve", "in", {"order": n}) for n in range(JOBS)],
            nodes=3,
            kill_node_at=KILL_NODE_AT,
            post_rate=200,
            check=state_is_exact,
            hypothesis="every job ended, each counted once, and the state is exact",
        )
    if len(sys.argv) > 1:  # a path: keep the whole report there
        Path(sys.argv[1]).write_text(report.to_json(), encoding="utf-8")
    run, loss = report["run"], report["node_loss"]
    ended = run["completed"] + run["failed"] + run["cancelled"]
    print(f"posted {run['posted']} jobs on {report['nodes']} Ray nodes")
    print(f"a node running routine actors was removed {KILL_NODE_AT:g} s in")
    assert loss["at"] >= KILL_NODE_AT  # when it really went is in the report
    print(f"every job ended: {run['unfinished'] == 0}")
    print(f"completed + failed + cancelled == posted: {ended == run['posted']}")
    print(f"state exact: {report['checks']['state exact']}")
    print(f"steady-state hypothesis held without the fault: {report['steady_state_before']}")
    print(f"steady-state hypothesis held under the fault: {report['steady_state_after']}")
    print(json.dumps({"jobs in flight when the node went": loss["jobs_in_flight"] > 0}))
    return 0 if report["steady_state_after"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
