"""Fault-injection experiments: run a workload under a fault plan and report what happened.

    report = run_experiment(
        flow,
        workload=[("order", "in", {"id": i}) for i in range(500)],
        faults=FaultPlan(seed=1).drop(p=0.1, routine="charge"),
        steady_state=lambda r: r["completed"] + r["failed"] == r["posted"],
        deterministic=True, seed=1,
    )
    print(report.to_json())

The experiment first runs the workload without faults and checks the steady state ("before"),
then runs it under the plan and checks again ("after"), in the manner of chaos engineering: a
steady state that does not hold before the faults says nothing about the faults.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from actorflow._durations import check_seconds
from actorflow.faults import FaultPlan
from actorflow.flow import Flow
from actorflow.job import JobContext
from actorflow.registry import FlowRegistry
from actorflow.runtime import Runtime

__all__ = ["ExperimentReport", "experiment_flow_id", "run_experiment"]

Workload = Iterable[tuple[str, str, Any] | tuple[str, str, Any, Mapping[str, Any]]]


class ExperimentReport(dict[str, Any]):
    """The outcome of an experiment: a JSON-ready dict (see :func:`run_experiment`)."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self, indent=indent, sort_keys=True)


def error_kind(error: str) -> str:
    """An error message without what varies per job (its id, the number of tries)."""
    return re.sub(r"'job-[^']*'", "<job>", error).split(" (after ")[0]


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _run(
    flow_id: str,
    workload: list[tuple[Any, ...]],
    faults: FaultPlan | None,
    options: Mapping[str, Any],
    job_timeout: float | None,
    wait: float | None,
) -> ExperimentReport:
    runtime = Runtime(faults=faults, **options)
    jobs: list[JobContext] = []
    with runtime:
        for item in workload:
            routine_id, slot, data, *rest = item
            metadata = rest[0] if rest else None
            jobs.append(
                runtime.post(flow_id, routine_id, slot, data, metadata, timeout=job_timeout)[1]
            )
        runtime.wait_until_all_jobs_finished(timeout=wait)
    statuses = Counter(job.status.value for job in jobs)
    latencies = [
        (job.completed_at - job.created_at).total_seconds() * 1000
        for job in jobs
        if job.completed_at is not None
    ]
    faults_by_rule = Counter(entry["rule"] for entry in runtime.fault_log())
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return ExperimentReport(
        posted=len(jobs),
        completed=statuses.get("completed", 0),
        failed=statuses.get("failed", 0),
        cancelled=statuses.get("cancelled", 0),
        unfinished=sum(1 for job in jobs if not job.done),
        dead_letters=dict(sorted(runtime.dead_letter_counts().items())),
        faults_injected=dict(sorted(faults_by_rule.items())),
        latency_ms={
            "p50": None if p50 is None else round(p50, 3),
            "p99": None if p99 is None else round(p99, 3),
            "mean": round(statistics.fmean(latencies), 3) if latencies else None,
        },
        errors=dict(Counter(error_kind(job.error) for job in jobs if job.error).most_common(10)),
    )


def experiment_flow_id(flow: Flow | str) -> str:
    """The id of an experiment's flow: a ``Flow`` is registered, an id must name a registered
    flow (``UnknownFlowError`` otherwise)."""
    if isinstance(flow, Flow):
        FlowRegistry.get_instance().register(flow)
        return flow.flow_id
    FlowRegistry.get_instance().require(flow)
    return flow


def run_experiment(
    flow: Flow | str,
    workload: Workload,
    faults: FaultPlan,
    steady_state: Callable[[Mapping[str, Any]], bool] | None = None,
    *,
    job_timeout: float | None = 5.0,
    wait: float | None = 60.0,
    deterministic: bool = False,
    seed: int | None = None,
    **runtime_options: Any,
) -> ExperimentReport:
    """Run ``workload`` on ``flow`` without faults, then under ``faults``; report both.

    ``workload`` yields ``(routine_id, slot, data)`` or ``(routine_id, slot, data, metadata)``.
    The report holds posted/completed/failed/cancelled/unfinished counts, dead letters by
    reason, faults injected by rule, latency p50/p99 in milliseconds, the most common errors,
    ``steady_state_before``/``steady_state_after`` (the check applied to the baseline and to the
    faulty run's reports) and ``baseline`` (the fault-free run's report).

    ``job_timeout`` (each job's timeout; None: none) is a finite number of seconds > 0 and
    ``wait`` (how long each run may take; None: no limit) one >= 0, both at most
    ``threading.TIMEOUT_MAX``; other values raise ``InvalidDurationError`` before anything runs.
    """
    if not isinstance(faults, FaultPlan):
        raise TypeError(f"faults must be a FaultPlan, got {type(faults).__name__}")
    job_timeout = check_seconds(
        "run_experiment", "job_timeout", job_timeout, allow_none=True, allow_zero=False
    )
    wait = check_seconds("run_experiment", "wait", wait, allow_none=True)
    flow_id = experiment_flow_id(flow)
    items = [tuple(item) for item in workload]
    options = dict(runtime_options)
    if deterministic:
        options.update(deterministic=True, seed=seed if seed is not None else faults.seed)
    baseline = _run(flow_id, items, None, options, job_timeout, wait)
    report = _run(flow_id, items, faults, options, job_timeout, wait)
    report["steady_state_before"] = None if steady_state is None else bool(steady_state(baseline))
    report["steady_state_after"] = None if steady_state is None else bool(steady_state(report))
    report["baseline"] = dict(baseline)
    report["flow"] = flow_id
    report["fault_plan"] = {"seed": faults.seed, "rules": [rule.name for rule in faults.rules]}
    return report
