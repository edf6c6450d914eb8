"""Hypothesis strategies generate flows that run; experiments report what happened."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import Flow, FlowRegistry, JobStatus, Routine
from actorflow.experiments import run_experiment
from actorflow.faults import FaultPlan
from actorflow.testing import DeterministicRuntime
from actorflow.testing.strategies import fault_plans, flows, job_batches

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(flow=flows(failing=True), jobs=job_batches(), seed=st.integers(0, 1000))
def test_generated_flows_run_and_every_job_ends(
    flow: Flow, jobs: list[dict[str, Any]], seed: int
) -> None:
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=seed) as runtime:
        posted = [runtime.post(flow.flow_id, "r0", "in", job)[1] for job in jobs]
        assert runtime.wait_until_all_jobs_finished()
    assert all(job.status in (JobStatus.COMPLETED, JobStatus.FAILED) for job in posted)
    for job in posted:
        if job.status == JobStatus.COMPLETED:
            assert job.get_data("seen-r0") is True


@FAST
@given(flow=flows(), jobs=job_batches(max_size=10), plan=fault_plans())
def test_under_generated_fault_plans_every_job_is_accounted_for(
    flow: Flow, jobs: list[dict[str, Any]], plan: FaultPlan
) -> None:
    FlowRegistry.get_instance().register(flow)
    with DeterministicRuntime(seed=plan.seed, faults=plan) as runtime:
        posted = [runtime.post(flow.flow_id, "r0", "in", job)[1] for job in jobs]
        assert runtime.wait_until_all_jobs_finished()
    statuses = Counter(job.status for job in posted)
    assert statuses[JobStatus.COMPLETED] + statuses[JobStatus.FAILED] == len(jobs)


def test_shrinking_finds_the_smallest_failing_flow() -> None:
    """A property that fails for flows with fan-in shrinks to the smallest such flow."""
    from hypothesis import find

    def has_fan_in(flow: Flow) -> bool:
        targets = Counter(c.target for c in flow.connections)
        return any(count > 1 for count in targets.values())

    smallest = find(
        flows(), has_fan_in, settings=settings(max_examples=500, database=None, derandomize=True)
    )
    assert len(smallest.routines) == 3  # the fewest routines a fan-in needs
    assert len(smallest.connections) <= 3


def order_flow() -> Flow:
    checkout = Routine()
    checkout.add_slot("in")
    checkout.add_event("out")
    checkout.set_logic(lambda sd, m, ws: checkout.emit("out", order=sd["in"][0]))
    charge = Routine()
    charge.add_slot("in")
    charge.set_logic(lambda sd, m, ws: ws.increment("_totals", "charged"))
    flow = Flow("orders-experiment")
    flow.add_routine(checkout, "checkout")
    flow.add_routine(charge, "charge")
    flow.connect("checkout", "out", "charge", "in")
    return flow


def test_run_experiment_reports_counts_faults_and_steady_state() -> None:
    report = run_experiment(
        order_flow(),
        workload=[("checkout", "in", {"id": i}) for i in range(50)],
        faults=FaultPlan(seed=4, lost_message_timeout=1.0).drop(p=0.2, routine="charge"),
        steady_state=lambda r: r["failed"] == 0,
        deterministic=True,
    )
    assert report["posted"] == 50
    assert report["completed"] + report["failed"] + report["cancelled"] == 50
    assert report["unfinished"] == 0
    assert report["failed"] == report["faults_injected"]["0:drop"] > 0
    assert report["steady_state_before"] is True and report["steady_state_after"] is False
    assert report["baseline"]["completed"] == 50
    assert report["latency_ms"]["p50"] is not None
    assert '"posted": 50' in report.to_json()
