"""WorkerState as a cache that outlives jobs; JobContext for what belongs to one job.

Three jobs go through one ``processor`` routine: the first computes ``test`` (MISS), the second
finds it in the worker's state (HIT), the third computes ``other`` (MISS). Each job is waited on
before the next is posted, so there is no sleeping and no race between them.
"""

from __future__ import annotations

import time
from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job, immediate_policy


class DataProcessor(Routine):
    """Caches results in its own WorkerState key; records per-job facts in the JobContext."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("input")
        self.add_event("output", ["result"])

        def process(slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any):
            job = get_current_job()
            for item in slot_data["input"]:
                key = item["key"]
                cached = (worker_state.get_routine_state("processor") or {}).get("cache", {})

                hit = key in cached
                if hit:
                    print(f"[WorkerState] Cache HIT: {key}")
                    result = cached[key]
                else:
                    print(f"[WorkerState] Cache MISS: {key}")
                    time.sleep(0.05)  # the expensive part, done outside any state call
                    result = f"processed_{key}"

                def record(state: dict[str, Any] | None, key=key, result=result, hit=hit) -> Any:
                    # Runs inside the worker's supervisor, atomically: keep it short.
                    state = state or {"cache": {}, "cache_hits": 0, "cache_misses": 0}
                    state["cache"][key] = result
                    state["cache_hits" if hit else "cache_misses"] += 1
                    return state

                worker_state.modify_routine_state("processor", record)

                job.set_data("processed_key", key)
                job.set_data("result", result)
                job.trace("processor", "completed", {"key": key, "cache_hit": hit})
                self.emit("output", result=result)

        self.set_logic(process)
        self.set_activation_policy(immediate_policy())


def main() -> None:
    flow = Flow("state_demo")
    flow.add_routine(DataProcessor(), "processor")
    FlowRegistry.get_instance().register_by_name("state_demo", flow)

    with Runtime() as runtime:
        worker_state = runtime.exec("state_demo")
        jobs = []
        for key in ("test", "test", "other"):
            _, job = runtime.post("state_demo", "processor", "input", {"key": key})
            job.wait(timeout=10)
            jobs.append(job)

        print()
        for number, job in enumerate(jobs, start=1):
            details = job.trace_log[-1]["details"]
            print(f"job {number}: {job.status.value}, result={job.get_data('result')}, {details}")
        print(f"processor state: {worker_state.get_routine_state('processor')}")


if __name__ == "__main__":
    main()
