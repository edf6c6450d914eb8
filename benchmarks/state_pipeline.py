"""WorkerState calls on the 3-routine pipeline: none, one and two ``increment`` per routine.

The same flow as ``pipeline.py`` (s0 -> s1 -> s2), each routine also making 0, 1 or 2 atomic
increments of its own counter per job. Prints one JSON object: jobs/s and CPU microseconds per
job for each case (medians of interleaved rounds), and each case's throughput as a ratio of the
no-state case measured in the same run. Every run checks its counters are exact.

    python benchmarks/state_pipeline.py [--jobs 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, interleave, machine, ratio

from actorflow import Flow, FlowRegistry, Routine, Runtime

LENGTH = 3


class CountingStep(Routine):
    """Passes each data point on, after ``calls`` increments of its own counter."""

    def __init__(self, name: str, calls: int, last: bool) -> None:
        super().__init__()
        self.name = name
        self.calls = calls
        self.last = last
        self.add_slot("in")
        self.add_event("out")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        for _ in range(self.calls):
            worker_state.increment(self.name, "n")
        if not self.last:
            self.emit("out", value=slot_data["in"][0])


def register(calls: int) -> str:
    flow_id = f"bench_state_pipeline_{calls}"
    flow = Flow(flow_id)
    for i in range(LENGTH):
        flow.add_routine(CountingStep(f"s{i}", calls, i == LENGTH - 1), f"s{i}")
    for i in range(LENGTH - 1):
        flow.connect(f"s{i}", "out", f"s{i + 1}", "in")
    FlowRegistry.get_instance().register(flow)
    return flow_id


def run(flow_id: str, calls: int, jobs: int) -> dict[str, float]:
    with Runtime(strict=False) as runtime:
        state = runtime.exec(flow_id)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(jobs):
            runtime.post(flow_id, "s0", "in", i)
        runtime.wait_until_all_jobs_finished()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for i in range(LENGTH):
            counted = state.get_routine_state(f"s{i}")
            expected = None if calls == 0 else {"n": calls * jobs}
            assert counted == expected, (flow_id, i, counted, expected)
    return {"jobs_per_s": jobs / wall, "cpu_us_per_job": cpu / jobs * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    flows = {calls: register(calls) for calls in (0, 1, 2)}
    figures = interleave(
        args.rounds,
        {
            f"calls_{calls}": (lambda c=calls, f=flow_id: run(f, c, args.jobs))
            for calls, flow_id in flows.items()
        },
    )
    none = figures["calls_0"]["jobs_per_s"]
    emit(
        {
            "benchmark": "state_pipeline",
            "jobs": args.jobs,
            "rounds": args.rounds,
            "cases": {
                name: {
                    "increments_per_job": LENGTH * int(name.split("_")[1]),
                    "jobs_per_s": round(figure["jobs_per_s"]),
                    "cpu_us_per_job": round(figure["cpu_us_per_job"], 1),
                    "ratio_to_no_state": ratio(figure["jobs_per_s"], none),
                }
                for name, figure in figures.items()
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
