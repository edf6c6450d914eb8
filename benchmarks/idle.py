"""Overhead with nothing to do: CPU of an idle runtime with 10 workers of a 3-routine flow.

Each round starts a ``Runtime(strict=False)``, execs 10 workers of a 3-routine pipeline, runs a
few jobs through every worker (so every actor thread has started and handled a message), lets
it settle, then sleeps through an idle interval and reads:

* the process CPU time over the interval (``time.process_time()`` before and after), as CPU
  seconds per second;
* per-thread CPU (psutil) and, on Linux, per-thread context switches from
  ``/proc/self/task/<tid>/status``: a polling thread shows up as wakeups even when its CPU is
  below the clock-tick resolution of per-thread times.

Baselines of the same run, rounds interleaved: the bare interpreter (actorflow imported, no
runtime) and 30 idle pykka actors (one per routine of the 10 workers). Target: about 0 CPU
seconds per second (judged as at most 0.001, i.e. 0.1% of one core) and no thread of the
runtime waking up while idle (judged as at most 0.5 context switches per second over all
threads but the measuring one; a thread polling even once a second per routine shows up as
dozens).

    python3 benchmarks/idle.py [--workers 10] [--interval 2.0] [--rounds 5] [--quick]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import pykka
from _common import emit, interleave, machine, target
from _flows import Step

from actorflow import Flow, FlowRegistry, Runtime

FLOW_ID = "bench_idle"
CPU_LIMIT = 0.001  # CPU seconds per second: "about 0"
WAKEUP_LIMIT = 0.5  # context switches per second over all threads but the measuring one
SETTLE_S = 0.3
LAST_DETAIL: dict[str, Any] = {}


def build() -> None:
    flow = Flow(FLOW_ID)
    for i in range(3):
        flow.add_routine(Step(), f"s{i}")
    for i in range(2):
        flow.connect(f"s{i}", "out", f"s{i + 1}", "in")
    FlowRegistry.get_instance().register(flow)


class _Idle(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> None:
        return None


def _switches(tid: int) -> int | None:
    """Voluntary + involuntary context switches of one thread (Linux), else None."""
    try:
        with open(f"/proc/self/task/{tid}/status", encoding="ascii") as status:
            total = 0
            for line in status:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split(":", 1)[1])
            return total
    except OSError:
        return None


def _threads() -> dict[int, tuple[float, int | None]]:
    return {
        t.id: (t.user_time + t.system_time, _switches(t.id)) for t in psutil.Process().threads()
    }


def measure_idle(interval: float) -> dict[str, Any]:
    """CPU and wakeups of this process while the calling thread sleeps ``interval`` seconds."""
    me = threading.get_native_id()
    before = _threads()
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(interval)
    cpu1, t1 = time.process_time(), time.perf_counter()
    after = _threads()
    wall = t1 - t0
    names = {t.native_id: t.name for t in threading.enumerate()}
    busy = []
    wakeups = 0
    for tid, (cpu, switches) in after.items():
        if tid == me:
            continue  # the measuring thread: one sleep, plus the reads outside the interval
        cpu_before, switches_before = before.get(tid, (0.0, 0))
        woke = None if switches is None or switches_before is None else switches - switches_before
        wakeups += woke or 0
        if cpu - cpu_before > 0 or woke:
            busy.append(
                {
                    "thread": names.get(tid, str(tid)),
                    "cpu_s": round(cpu - cpu_before, 3),
                    "wakeups": woke,
                }
            )
    return {
        "cpu_s_per_s": (cpu1 - cpu0) / wall,
        "wakeups_per_s": wakeups / wall,
        "threads": float(len(after)),
        "busy_threads": busy,
    }


def _flat(result: dict[str, Any], label: str) -> dict[str, float]:
    LAST_DETAIL[label] = result.pop("busy_threads")
    return result


def actorflow_idle(workers: int, interval: float) -> dict[str, float]:
    with Runtime(strict=False) as runtime:
        ids = [f"idle-{i}" for i in range(workers)]
        for worker_id in ids:
            runtime.exec(FLOW_ID, worker_id)
        for worker_id in ids:
            for i in range(5):
                runtime.post(FLOW_ID, "s0", "in", i, worker_id=worker_id)
        runtime.wait_until_all_jobs_finished()
        time.sleep(SETTLE_S)
        result = measure_idle(interval)
    return _flat(result, "actorflow")


def pykka_idle(actors: int, interval: float) -> dict[str, float]:
    refs = [_Idle.start() for _ in range(actors)]
    try:
        for ref in refs:
            ref.ask("warm")
        time.sleep(SETTLE_S)
        result = measure_idle(interval)
    finally:
        for ref in refs:
            ref.stop()
    return _flat(result, "pykka")


def bare_idle(interval: float) -> dict[str, float]:
    time.sleep(SETTLE_S)
    return _flat(measure_idle(interval), "bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="idle seconds per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="0.5 s intervals, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.interval, args.rounds = min(args.interval, 0.5), min(args.rounds, 2)
    build()
    figures = interleave(
        args.rounds,
        {
            "bare": lambda: bare_idle(args.interval),
            "pykka": lambda: pykka_idle(3 * args.workers, args.interval),
            "actorflow": lambda: actorflow_idle(args.workers, args.interval),
        },
    )
    af, pk, bare = figures["actorflow"], figures["pykka"], figures["bare"]
    cpu = af["cpu_s_per_s"]
    emit(
        {
            "benchmark": "idle",
            "quick": args.quick,
            "rounds": args.rounds,
            "workers": args.workers,
            "interval_s": args.interval,
            "actorflow_cpu_s_per_s": round(cpu, 6),
            "actorflow_wakeups_per_s": round(af["wakeups_per_s"], 2),
            "actorflow_threads": round(af["threads"]),
            "actorflow_busy_threads_last_round": LAST_DETAIL.get("actorflow", []),
            "pykka_actors": 3 * args.workers,
            "pykka_cpu_s_per_s": round(pk["cpu_s_per_s"], 6),
            "pykka_wakeups_per_s": round(pk["wakeups_per_s"], 2),
            "pykka_threads": round(pk["threads"]),
            "bare_cpu_s_per_s": round(bare["cpu_s_per_s"], 6),
            "bare_wakeups_per_s": round(bare["wakeups_per_s"], 2),
            "actorflow_minus_bare_cpu_s_per_s": round(cpu - bare["cpu_s_per_s"], 6),
            "per_thread_switches_available": _switches(threading.get_native_id()) is not None,
            "targets": {
                "idle_cpu_s_per_s": target(round(cpu, 6), "<=", CPU_LIMIT),
                "idle_wakeups_per_s": target(round(af["wakeups_per_s"], 2), "<=", WAKEUP_LIMIT),
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
