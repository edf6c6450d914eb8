"""One ActorCrash among many jobs on Ray: how long until every job has ended, and what ended.

A 3-routine pipeline on a local Ray; the middle routine crashes its actor (``ActorCrash``) on
one job. The supervisor (the driver, applying the flow's supervision) restarts the actor; the
crashed message's job fails and every other job completes. Prints one JSON object: the jobs by
status, seconds from the first post until every job ended, the restarts, and how long
``shutdown(timeout=1)`` took afterwards.

    python benchmarks/ray_crash.py [--jobs 3000] [--crash-at 1500] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any

os.environ.pop("ACTORFLOW_STRICT", None)

from actorflow import ActorCrash, Flow, FlowRegistry, Routine, Runtime


def build(crash_at: int) -> None:
    first = Routine()
    first.add_slot("in")
    first.add_event("out")
    first.set_logic(lambda sd, m, ws: [first.emit("out", n=n) for n in sd["in"]])
    middle = Routine()
    middle.add_slot("in")
    middle.add_event("out")

    def middle_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        for item in sd["in"]:
            if item["n"] == crash_at:
                raise ActorCrash(f"crash at {crash_at}")
            middle.emit("out", **item)

    middle.set_logic(middle_logic)
    last = Routine()
    last.add_slot("in")
    last.set_logic(lambda sd, m, ws: None)
    flow = Flow("crash")
    flow.add_routine(first, "first")
    flow.add_routine(middle, "middle")
    flow.add_routine(last, "last")
    flow.connect("first", "out", "middle", "in")
    flow.connect("middle", "out", "last", "in")
    FlowRegistry.get_instance().register(flow)


def run(jobs: int, crash_at: int) -> dict[str, Any]:
    FlowRegistry.get_instance().clear()
    build(crash_at)
    runtime = Runtime(backend="ray", strict=False)
    runtime.exec("crash", worker_id="w")
    started = time.monotonic()
    posted = [runtime.post("crash", "first", "in", n, worker_id="w")[1] for n in range(jobs)]
    ended = runtime.wait_until_all_jobs_finished(timeout=300)
    took = time.monotonic() - started
    restarts = runtime.metrics()["workers"]["w"]["restarts"]
    stop_started = time.monotonic()
    runtime.shutdown(timeout=1)
    return {
        "jobs": jobs,
        "all_ended": ended,
        "seconds_until_all_ended": round(took, 2),
        "statuses": dict(Counter(job.status.value for job in posted)),
        "crashed_job_error": next((j.error for j in posted if j.status.value == "failed"), None),
        "restarts": restarts,
        "shutdown_seconds": round(time.monotonic() - stop_started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--crash-at", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    results = [run(args.jobs, args.crash_at) for _ in range(args.runs)]
    print(json.dumps({"benchmark": "ray_crash", "runs": results}))
    ok = all(
        r["all_ended"] and r["statuses"] == {"completed": args.jobs - 1, "failed": 1}
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
