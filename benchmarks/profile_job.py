"""Where one job's time goes in the 3-routine pipeline: per stage, and per thread.

Prints one JSON object with two breakdowns, medians of interleaved rounds:

* ``one_thread_us``: the Python work of each stage per job, with the routine actors driven on
  this thread (no thread switches): ``post``, then each routine's mailbox handled in one run
  (``s2`` also completes the job). Uses the worker's internal seam where actors are started.
* ``threads_us``: CPU per job of each thread in a normal threaded run (Linux:
  ``/proc/self/task/<tid>/schedstat``), and the process's CPU per job;
* ``threads_one_core_us``: the same run with every thread of the process pinned to one CPU
  (what moving objects between the two cores' caches costs shows as the difference).

    python benchmarks/profile_job.py [--jobs 1000] [--rounds 40] [--threaded-jobs 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, medians
from _flows import register_pipeline

import actorflow.engine.worker_core as worker_module
from actorflow import Runtime
from actorflow.job import CURRENT_ACTIVATION

STAGES = ("s0", "s1", "s2")


class _ParkedHost:
    """Stands in for an actor thread: the cell is driven by hand (see one_thread)."""

    restart_requested = False
    thread = None

    def __init__(self, cell: Any) -> None:
        self.cell = cell


def one_thread(jobs: int) -> dict[str, float]:
    """Post ``jobs`` jobs, then run each routine's whole mailbox on this thread."""
    cells: dict[str, tuple[Any, Any]] = {}
    start_actor = worker_module.WorkerCore._start_actor

    def park(self: Any, routine_id: str, previous: Any = None) -> _ParkedHost:
        cell = self._new_cell(routine_id, previous)
        cells[routine_id] = (cell, self.mailboxes[routine_id])
        return _ParkedHost(cell)

    worker_module.WorkerCore._start_actor = park  # type: ignore[method-assign]
    try:
        figures = {}
        with Runtime(strict=False, job_retention=1000, post_pacing=None) as runtime:
            runtime.exec("bench_pipeline")
            gc.collect()
            post = runtime.post
            started = time.perf_counter()
            for i in range(jobs):
                post("bench_pipeline", "s0", "in", i)
            figures["post"] = time.perf_counter() - started
            for routine_id in STAGES:
                cell, mailbox = cells[routine_id]
                CURRENT_ACTIVATION.set(cell)
                started = time.perf_counter()
                cell.run_plain(mailbox.get_nowait(), mailbox, _ParkedHost(cell))
                figures[routine_id] = time.perf_counter() - started
            runtime.wait_until_all_jobs_finished(timeout=10)
    finally:
        worker_module.WorkerCore._start_actor = start_actor  # type: ignore[method-assign]
        CURRENT_ACTIVATION.set(None)
    result = {stage: seconds / jobs * 1e6 for stage, seconds in figures.items()}
    result["total"] = sum(result.values())
    return result


def _thread_cpu_ns(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/schedstat", encoding="ascii") as stat:
        return int(stat.read().split()[0])


def _pin(cpus: set[int]) -> None:
    for thread in threading.enumerate():
        if thread.native_id is not None:
            os.sched_setaffinity(thread.native_id, cpus)


def threaded(jobs: int, one_core: bool = False) -> dict[str, float]:
    """A normal run: CPU per job of the posting thread and of each routine's thread."""
    all_cpus = os.sched_getaffinity(0)
    with Runtime(strict=False, job_retention=1000) as runtime:
        runtime.exec("bench_pipeline")
        gc.collect()
        if one_core:
            _pin({min(all_cpus)})
        threads = {
            routine_id: t.native_id
            for t in threading.enumerate()
            for routine_id in STAGES
            if t.name.startswith("actorflow-") and f"-{routine_id}-" in t.name
        }
        threads["post"] = threading.get_native_id()
        before = {name: _thread_cpu_ns(tid) for name, tid in threads.items()}  # type: ignore[arg-type]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(jobs):
            runtime.post("bench_pipeline", "s0", "in", i)
        runtime.wait_until_all_jobs_finished()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        after = {name: _thread_cpu_ns(tid) for name, tid in threads.items()}  # type: ignore[arg-type]
    if one_core:
        _pin(all_cpus)
    result = {name: (after[name] - before[name]) / jobs / 1e3 for name in threads}
    result["process"] = cpu / jobs * 1e6
    result["jobs_per_s"] = jobs / wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per one-thread round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threaded-jobs", type=int, default=20_000)
    parser.add_argument("--threaded-rounds", type=int, default=5)
    args = parser.parse_args()
    register_pipeline("bench_pipeline")
    samples: dict[str, list[dict[str, float]]] = {"one": [], "threads": [], "one_core": []}
    for i in range(max(args.rounds, args.threaded_rounds)):
        if i < args.rounds:
            samples["one"].append(one_thread(args.jobs))
        if i < args.threaded_rounds and sys.platform.startswith("linux"):
            samples["threads"].append(threaded(args.threaded_jobs))
            samples["one_core"].append(threaded(args.threaded_jobs, one_core=True))

    emit(
        {
            "benchmark": "profile_job",
            "jobs": args.jobs,
            "rounds": args.rounds,
            "one_thread_us": medians(samples["one"], 2),
            "threads_us": medians(samples["threads"], 2),
            "threads_one_core_us": medians(samples["one_core"], 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
