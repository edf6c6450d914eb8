"""Hypothesis strategies for property-testing flows: random flows, job batches, fault plans.

    from hypothesis import given
    from actorflow.testing import DeterministicRuntime
    from actorflow.testing.strategies import flows, job_batches

    @given(flow=flows(), jobs=job_batches())
    def test_every_job_ends(flow, jobs):
        FlowRegistry.get_instance().register(flow)
        with DeterministicRuntime(seed=1) as runtime:
            posted = [runtime.post(flow.flow_id, "r0", "in", job)[1] for job in jobs]
            assert runtime.wait_until_all_jobs_finished()

Everything is drawn from plain integers and lists, so Hypothesis shrinks a failing case to a
small flow, a short batch and a short plan.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from actorflow.faults import FaultPlan
from actorflow.flow import Flow
from actorflow.job import get_current_job
from actorflow.routine import Routine

__all__ = ["RelayRoutine", "fault_plans", "flows", "job_batches"]

_flow_ids = itertools.count(1)


class RelayRoutine(Routine):
    """Passes each data point on as ``out``, adding its routine id to ``data["path"]``.

    It also writes ``seen-<routine id>`` into the job, so a test can check that data set
    upstream is visible downstream. With ``fail_on`` it raises ``ValueError`` for values
    divisible by it.
    """

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.add_slot("in")
        self.add_event("out")
        self.fail_on = fail_on

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        me = self.routine_id
        job = get_current_job()
        for item in slot_data["in"]:
            value = item.get("value", 0) if isinstance(item, dict) else item
            if self.fail_on and value % self.fail_on == 0:
                raise ValueError(f"{me} refuses {value}")
            if job is not None:
                job.set_data(f"seen-{me}", True)
            path = [*item.get("path", []), me] if isinstance(item, dict) else [me]
            self.emit("out", value=value, path=path)


@st.composite
def flows(
    draw: st.DrawFn, max_routines: int = 6, failing: bool = False, flow_id: str | None = None
) -> Flow:
    """A random DAG flow of :class:`RelayRoutine` s named ``r0``..``rN`` (``r0`` is the entry),
    with fan-out and fan-in. With ``failing=True`` some routines raise on some values."""
    size = draw(st.integers(1, max_routines))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    edges = sorted(draw(st.lists(st.sampled_from(pairs), unique=True))) if pairs else []
    fail_on = {}
    if failing:
        fail_on = draw(st.dictionaries(st.integers(0, size - 1), st.integers(2, 7), max_size=2))
    flow = Flow(flow_id or f"generated-{next(_flow_ids)}")
    for i in range(size):
        flow.add_routine(RelayRoutine(fail_on.get(i)), f"r{i}")
    for i, j in edges:
        flow.connect(f"r{i}", "out", f"r{j}", "in")
    return flow


def job_batches(min_size: int = 1, max_size: int = 20) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of job payloads ``{"value": n}`` for :class:`RelayRoutine` flows."""
    return st.lists(
        st.builds(lambda v: {"value": v}, st.integers(0, 100)), min_size=min_size, max_size=max_size
    )


@st.composite
def fault_plans(
    draw: st.DrawFn, routines: list[str] | None = None, max_rules: int = 3
) -> FaultPlan:
    """Fault plans of up to ``max_rules`` message faults (drop, delay, duplicate, reorder) on
    the given routines (default ``r0``..``r5``), with a short lost-message timeout."""
    targets = routines or [f"r{i}" for i in range(6)]
    plan = FaultPlan(seed=draw(st.integers(0, 2**16)), lost_message_timeout=1.0)
    for _ in range(draw(st.integers(0, max_rules))):
        kind = draw(st.sampled_from(["drop", "delay", "duplicate", "reorder"]))
        target = draw(st.sampled_from(targets))
        p = draw(st.sampled_from([0.1, 0.3, 0.5, 1.0]))
        if kind == "drop":
            plan.drop(p=p, routine=target)
        elif kind == "delay":
            plan.delay(draw(st.sampled_from([0.01, 0.1, 0.5])), p=p, routine=target)
        elif kind == "duplicate":
            plan.duplicate(p=p, routine=target)
        else:
            plan.reorder(window=draw(st.integers(2, 4)), routine=target)
    return plan
