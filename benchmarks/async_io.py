"""Slow I/O in a routine: an async routine awaiting it against sync routines blocking on it.

1,000 jobs through one routine whose work is a 50 ms I/O call:

* ``async_100``: ``async def`` logic awaiting ``asyncio.sleep(0.05)``, ``set_concurrency(100)``
  (up to 100 calls in flight on the worker's event loop thread);
* ``sync_100``: plain logic calling ``time.sleep(0.05)``, ``set_concurrency(100)`` (100 actor
  threads);
* ``sync_8``: the same with ``set_concurrency(8)`` (8 actor threads);
* ``async_100_ray`` (with ``--ray``): the async routine on the Ray backend, where it is one Ray
  actor whose event loop runs the 100 calls (wall and driver CPU only: the logic runs in the
  actor's process).

For each: wall time from the first post until every job has finished, process CPU time over
the same span, the threads that ran the logic, and the threads the runtime added (the peak of
``threading.active_count()`` while the jobs ran, minus the count before the runtime started;
``psutil``'s ``num_threads`` for the process agrees). Rounds are interleaved and medians
reported. Targets (async only): wall time within 1.5x of the ideal (1,000 x 50 ms / 100 =
0.5 s), and at most 2 threads added for it (the event loop and the worker's supervisor).

    python3 benchmarks/async_io.py [--jobs 1000] [--io-ms 50] [--rounds 3] [--quick] [--ray]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from _common import emit, interleave, machine, target

from actorflow import Flow, FlowRegistry, Routine, Runtime

CONCURRENCY = 100
WALL_OVER_IDEAL = 1.5
MAX_THREADS = 2
_RAN_ON: set[int] = set()


def _register(flow_id: str, logic: Any, concurrency: int) -> None:
    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(logic)
    routine.set_concurrency(concurrency)
    flow = Flow(flow_id)
    flow.add_routine(routine, "io")
    FlowRegistry.get_instance().register(flow)


def build(io_seconds: float) -> None:
    async def awaiting(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        _RAN_ON.add(threading.get_ident())
        await asyncio.sleep(io_seconds)

    def blocking(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        _RAN_ON.add(threading.get_ident())
        time.sleep(io_seconds)

    _register("async_100", awaiting, CONCURRENCY)
    _register("sync_100", blocking, CONCURRENCY)
    _register("sync_8", blocking, 8)


def run(flow_id: str, jobs: int, backend: str = "threads") -> dict[str, float]:
    _RAN_ON.clear()
    process = psutil.Process()
    before, before_os = threading.active_count(), process.num_threads()
    with Runtime(strict=False, job_retention=0, backend=backend) as runtime:
        runtime.exec(flow_id)
        peak, peak_os = threading.active_count(), process.num_threads()
        cpu0, t0 = time.process_time(), time.perf_counter()
        for n in range(jobs):
            runtime.post(flow_id, "io", "in", n)
        while not runtime.wait_until_all_jobs_finished(0.01):
            peak = max(peak, threading.active_count())
            peak_os = max(peak_os, process.num_threads())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        peak = max(peak, threading.active_count())
        peak_os = max(peak_os, process.num_threads())
        completed = runtime.metrics()["routines"]
    handled = sum(r["io"]["handled"] for r in completed.values())
    if handled != jobs:
        raise RuntimeError(f"{flow_id}: {handled} of {jobs} jobs handled")
    if backend == "ray":  # the logic ran in the actor's process: threads here say nothing
        return {"wall_s": wall, "cpu_s": cpu}
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "threads_added": peak - before,
        "os_threads_added": peak_os - before_os,
        "logic_threads": len(_RAN_ON),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--io-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round")
    parser.add_argument("--ray", action="store_true", help="also the async routine on Ray")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    build(args.io_ms / 1000)
    cases = {
        name: (lambda name=name: run(name, args.jobs))
        for name in ("async_100", "sync_100", "sync_8")
    }
    if args.ray:
        cases["async_100_ray"] = lambda: run("async_100", args.jobs, backend="ray")
    figures = interleave(rounds, cases)
    ideal = args.jobs * args.io_ms / 1000 / CONCURRENCY
    result: dict[str, Any] = {
        "benchmark": "async_io",
        "rounds": rounds,
        "jobs": args.jobs,
        "io_ms": args.io_ms,
        "ideal_wall_s": round(ideal, 3),
    }
    for name, values in figures.items():
        for key, value in values.items():
            result[f"{name}_{key}"] = round(value, 3) if key.endswith("_s") else int(value)
    async_wall = figures["async_100"]["wall_s"]
    result["async_wall_over_ideal"] = round(async_wall / ideal, 3)
    result["targets"] = {
        "async_wall_over_ideal": target(round(async_wall / ideal, 3), "<=", WALL_OVER_IDEAL),
        "async_threads_added": target(figures["async_100"]["threads_added"], "<=", MAX_THREADS),
    }
    if args.ray:
        ray_wall = figures["async_100_ray"]["wall_s"]
        result["async_ray_wall_over_ideal"] = round(ray_wall / ideal, 3)
    result["machine"] = machine()
    emit(result)


if __name__ == "__main__":
    main()
