"""Soak: many jobs, raising and crashing routines, every job accounted for; graceful signals."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from actorflow import ActorCrash, ErrorStrategy, Flow, FlowRegistry, Routine, Runtime

ROOT = Path(__file__).resolve().parent.parent
SOAK_JOBS = int(os.environ.get("ACTORFLOW_SOAK_JOBS", "20000"))


def soak_flow() -> None:
    seen = Counter[str]()
    lock = threading.Lock()

    def stage(name: str, nxt: bool, crashes: bool = False) -> Routine:
        routine = Routine()
        routine.add_slot("in")
        routine.add_event("out")

        def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            value = sd["in"][0]["v"]
            with lock:
                seen[name] += 1
                count = seen[name]
            if crashes and count % 1000 == 0:
                raise ActorCrash("crash every 1,000 messages")
            if (value * 31 + len(name)) % 20 == 0:  # 5% of messages raise
                raise ValueError("bad message")
            if nxt:
                routine.emit("out", v=value)

        routine.set_logic(logic)
        return routine

    flow = Flow("soak")
    names = ["ingest", "parse", "enrich", "store"]
    for i, name in enumerate(names):
        flow.add_routine(stage(name, i < 3, crashes=name == "enrich"), name)
    for a, b in zip(names, names[1:], strict=False):
        flow.connect(a, "out", b, "in")
    flow.get_routine("parse").set_error_handler(ErrorStrategy.SKIP)
    flow.set_supervision("one_for_one", max_restarts=1000, period=1.0)
    FlowRegistry.get_instance().register(flow)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_every_job_accounted_for_no_thread_leak_flat_memory() -> None:
    soak_flow()
    threads_before = threading.active_count()
    process = psutil.Process()

    def run(jobs: int) -> Counter[str]:
        with Runtime(strict=False, job_retention=1000) as runtime:
            handles = []
            for i in range(jobs):
                handles.append(runtime.post("soak", "ingest", "in", {"v": i})[1])
            assert runtime.wait_until_all_jobs_finished(timeout=240)
            statuses = Counter(job.status.value for job in handles)
        return statuses

    first = run(SOAK_JOBS // 5)
    gc.collect()
    rss_after_warmup = process.memory_info().rss
    statuses = run(SOAK_JOBS)
    gc.collect()
    rss_after = process.memory_info().rss
    assert sum(statuses.values()) == SOAK_JOBS
    assert set(statuses) <= {"completed", "failed", "cancelled"}
    assert statuses["failed"] > 0 and statuses["completed"] > 0
    assert sum(first.values()) == SOAK_JOBS // 5
    assert threading.active_count() == threads_before
    assert rss_after - rss_after_warmup < 40 * 1024 * 1024


SIGNAL_CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from actorflow import Flow, FlowRegistry, Routine, Runtime

    class Tracked(Routine):
        def __init__(self):
            super().__init__()
            self.add_slot("in")
        def logic(self, sd, m, ws):
            print("handled", sd["in"][0], flush=True)
        def on_stop(self):
            print("on_stop ran", flush=True)

    flow = Flow("svc")
    flow.add_routine(Tracked(), "r")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime()
    runtime.install_signal_handlers(timeout=5)
    _, job = runtime.post("svc", "r", "in", 1)
    job.wait(5)
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    # the script ends here; the interpreter waits for the shutdown, then SIGTERM ends it
    """
)


def test_sigterm_shuts_down_gracefully_then_ends_the_process() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_CHILD], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert result.stdout.splitlines() == ["handled 1", "ready", "on_stop ran"]
