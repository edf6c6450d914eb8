"""Property: random DAG flows and random job batches always end, exactly as routed."""

from __future__ import annotations

import threading
from collections import Counter
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import Flow, FlowRegistry, JobStatus, Routine, Runtime, get_current_job


@st.composite
def dag_flows(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], set[int]]:
    size = draw(st.integers(1, 6))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    failing = draw(st.sets(st.integers(0, size - 1), max_size=2))
    return size, sorted(edges), failing


def fails(routine: int, value: int, failing: set[int]) -> bool:
    return routine in failing and value % (routine + 2) == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_spec=dag_flows(), values=st.lists(st.integers(0, 50), min_size=1, max_size=25))
def test_random_dags_every_job_ends_as_routed(
    flow_spec: tuple[int, list[tuple[int, int]], set[int]], values: list[int]
) -> None:
    size, edges, failing = flow_spec
    handled: Counter[tuple[str, int]] = Counter()
    violations: list[str] = []
    lock = threading.Lock()

    def make(index: int) -> Routine:
        routine = Routine()
        routine.add_slot("in")
        routine.add_event("out")

        def logic(slot_data: dict[str, list[Any]], msg: Any, ws: Any) -> None:
            job = get_current_job()
            assert job is not None
            payload = slot_data["in"][0]
            with lock:
                handled[(job.job_id, index)] += 1
            for upstream in payload["path"]:
                if job.get_data(f"seen-{upstream}") is not True:
                    with lock:
                        violations.append(f"r{index} cannot see r{upstream} in {job.job_id}")
            if fails(index, payload["value"], failing):
                raise ValueError(f"r{index} refuses {payload['value']}")
            job.set_data(f"seen-{index}", True)
            routine.emit("out", value=payload["value"], path=[*payload["path"], index])

        routine.set_logic(logic)
        return routine

    flow = Flow("dag")
    for i in range(size):
        flow.add_routine(make(i), f"r{i}")
    for i, j in edges:
        flow.connect(f"r{i}", "out", f"r{j}", "in")
    FlowRegistry.get_instance().register(flow)

    @cache
    def paths_to(node: int) -> int:
        if node == 0:
            return 1
        return sum(paths_to(i) for i, j in edges if j == node)

    reachable = {n for n in range(size) if paths_to(n) > 0}
    with Runtime() as runtime:
        jobs = [(v, runtime.post("dag", "r0", "in", {"value": v, "path": []})[1]) for v in values]
        assert runtime.wait_until_all_jobs_finished(timeout=20)
    assert violations == []
    for value, job in jobs:
        should_fail = any(fails(n, value, failing) for n in reachable)
        if should_fail:
            assert job.status == JobStatus.FAILED, (value, job.error)
            assert job.error is not None and "refuses" in job.error
            for n in range(size):
                assert handled[(job.job_id, n)] <= paths_to(n)
        else:
            assert job.status == JobStatus.COMPLETED, (value, job.error)
            for n in range(size):
                assert handled[(job.job_id, n)] == paths_to(n), (n, edges)
