"""runtime.metrics() after a known workload."""

from __future__ import annotations

import json
from typing import Any

from actorflow import ErrorStrategy, Flow, FlowRegistry, Routine, Runtime


def test_metrics_after_a_known_workload() -> None:
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: source.emit("out", n=sd["in"][0]))
    picky = Routine()
    picky.add_slot("in")
    attempts: dict[int, int] = {}

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        n = sd["in"][0]["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n % 5 == 0:
            raise ValueError("multiple of five")
        if n % 7 == 0 and attempts[n] == 1:
            raise ConnectionError("flaky once")

    picky.set_logic(logic)
    picky.set_error_handler(ErrorStrategy.RETRY(max_retries=1, delay=0, retry_on=ConnectionError))
    flow = Flow("measured")
    flow.add_routine(source, "source")
    flow.add_routine(picky, "picky")
    flow.connect("source", "out", "picky", "in")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        state = runtime.exec("measured", worker_id="w")
        for n in range(1, 36):  # 7 multiples of 5, 5 multiples of 7 (35 is both)
            runtime.post("measured", "source", "in", n)
        assert runtime.wait_until_all_jobs_finished(10)
        metrics = runtime.metrics()
        assert state.status == "running"
    assert json.loads(json.dumps(metrics)) == metrics
    assert metrics["jobs"] == {"active": 0, "completed": 28, "failed": 7, "cancelled": 0}
    assert metrics["workers"]["w"]["jobs"] == {
        "active": 0,
        "completed": 28,
        "failed": 7,
        "cancelled": 0,
    }
    assert metrics["workers"]["w"]["flow_id"] == "measured"
    src, pk = metrics["routines"]["w"]["source"], metrics["routines"]["w"]["picky"]
    assert (src["handled"], src["failed"], src["retried"]) == (35, 0, 0)
    # 35 messages: 28 handled at once or after a retry; 7 fail for good; 4 fail once, then retry
    assert (pk["handled"], pk["failed"], pk["retried"]) == (28, 7 + 4, 4)
    assert pk["handling_seconds"]["count"] == 39
    assert sum(pk["handling_seconds"]["buckets"].values()) == 39
    assert list(pk["handling_seconds"]["buckets"])[-1] == "+Inf"
    assert pk["mailbox_depth"] == 0
    assert metrics["dead_letters"] == {"total": 0, "by_reason": {}}


def test_completed_counts_stay_exact_when_many_threads_finish_jobs() -> None:
    sink = Routine()
    sink.add_slot("in")
    sink.set_concurrency(4)  # four actor threads finish jobs at the same time
    sink.set_logic(lambda sd, m, ws: None)
    flow = Flow("many_finishers")
    flow.add_routine(sink, "sink")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        runtime.exec("many_finishers", worker_id="a")
        runtime.exec("many_finishers", worker_id="b")
        for n in range(3000):
            runtime.post("many_finishers", "sink", "in", n, worker_id="a" if n % 3 else "b")
        assert runtime.wait_until_all_jobs_finished(30)
        metrics = runtime.metrics()
    assert metrics["jobs"]["completed"] == 3000
    assert metrics["workers"]["a"]["jobs"]["completed"] == 2000
    assert metrics["workers"]["b"]["jobs"]["completed"] == 1000
