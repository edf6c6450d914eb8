"""WorkerState: atomic increments from 4 routines and modify round trips, next to a locked dict.

Prints one JSON object (medians of interleaved rounds).

    python benchmarks/state.py [--jobs 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, interleave, machine, percentile

from actorflow import Flow, FlowRegistry, Routine, Runtime

ROUNDTRIPS: list[float] = []


def build() -> None:
    source = Routine()
    source.add_slot("in")
    source.add_event("out")
    source.set_logic(lambda sd, m, ws: source.emit("out", n=1))
    flow = Flow("bench_state")
    flow.add_routine(source, "source")
    for i in range(4):
        counter = Routine()
        counter.add_slot("in")
        counter.set_logic(lambda sd, m, ws: ws.increment("_shared", "count"))
        flow.add_routine(counter, f"c{i}")
        flow.connect("source", "out", f"c{i}", "in")
    FlowRegistry.get_instance().register(flow)

    timed = Routine()
    timed.add_slot("in")

    def modify(sd: Any, m: Any, ws: Any) -> None:
        t0 = time.perf_counter()
        ws.modify_routine_state("timed", lambda s: (s or 0) + 1)
        ROUNDTRIPS.append(time.perf_counter() - t0)

    timed.set_logic(modify)
    flow2 = Flow("bench_modify")
    flow2.add_routine(timed, "timed")
    FlowRegistry.get_instance().register(flow2)


def increments(jobs: int) -> dict[str, float]:
    with Runtime(strict=False) as runtime:
        state = runtime.exec("bench_state")
        t0 = time.perf_counter()
        for i in range(jobs):
            runtime.post("bench_state", "source", "in", i)
        runtime.wait_until_all_jobs_finished()
        wall = time.perf_counter() - t0
        assert state.get_routine_state("_shared") == {"count": 4 * jobs}
    return {"per_s": 4 * jobs / wall}


def modify_roundtrip(samples: int) -> dict[str, float]:
    ROUNDTRIPS.clear()
    with Runtime(strict=False) as runtime:
        runtime.exec("bench_modify")
        for i in range(samples):
            runtime.post("bench_modify", "timed", "in", i)[1].wait()
    return {"p50_us": percentile(ROUNDTRIPS, 50) * 1e6, "p99_us": percentile(ROUNDTRIPS, 99) * 1e6}


def locked_dict(updates: int) -> dict[str, float]:
    """The seeds' advice: a plain dict under a threading.Lock, 4 threads."""
    state: dict[str, int] = {"count": 0}
    lock = threading.Lock()

    def work() -> None:
        for _ in range(updates // 4):
            with lock:
                state["count"] = state["count"] + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"per_s": updates / (time.perf_counter() - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    build()
    figures = interleave(
        args.rounds,
        {
            "increments": lambda: increments(args.jobs),
            "modify": lambda: modify_roundtrip(args.samples),
            "locked_dict": lambda: locked_dict(4 * args.jobs),
        },
    )
    emit(
        {
            "benchmark": "state",
            "rounds": args.rounds,
            "actorflow_increments_per_s_4_routines": round(figures["increments"]["per_s"]),
            "modify_roundtrip_p50_us": round(figures["modify"]["p50_us"], 1),
            "modify_roundtrip_p99_us": round(figures["modify"]["p99_us"], 1),
            "locked_dict_updates_per_s": round(figures["locked_dict"]["per_s"]),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
