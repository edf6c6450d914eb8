"""The Ray backend: pipeline throughput and a CPU-bound routine, next to the thread backend
and a plain Ray actor chain in the same run. Prints one JSON object.

    python benchmarks/ray_backend.py [--jobs 2000] [--cpu-jobs 16] [--rounds 3] [--quick]

Targets: actorflow on Ray at least 3x a plain Ray actor chain (one call per message), thanks to
batching; a CPU-bound routine with concurrency=2 finishes a batch at least 1.6x faster on Ray
than on the thread backend (2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray
from _common import emit, machine
from _flows import Step

from actorflow import Flow, FlowRegistry, Routine, Runtime


class Burn(Routine):
    """Pure-Python CPU work: holds the GIL for its whole run."""

    def __init__(self, loops: int) -> None:
        super().__init__()
        self.add_slot("in")
        self.loops = loops

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        total = 0
        for i in range(self.loops):
            total += i * i % 7


def build(loops: int) -> None:
    flow = Flow("ray_pipeline")
    for i in range(3):
        flow.add_routine(Step(), f"s{i}")
    for i in range(2):
        flow.connect(f"s{i}", "out", f"s{i + 1}", "in")
    FlowRegistry.get_instance().register(flow)
    cpu = Flow("ray_cpu")
    burn = Burn(loops)
    burn.set_concurrency(2)
    cpu.add_routine(burn, "burn")
    FlowRegistry.get_instance().register(cpu)


@ray.remote
class Forwarder:
    def __init__(self, nxt: Any) -> None:
        self.nxt = nxt
        self.count = 0

    def push(self, value: int) -> None:
        if self.nxt is not None:
            self.nxt.push.remote(value)
        else:
            self.count += 1

    def flush(self) -> int:
        return ray.get(self.nxt.flush.remote()) if self.nxt is not None else self.count


def plain_chain(messages: int) -> float:
    """A plain Ray actor chain of 3, one remote call per message per hop; messages/s."""
    last = Forwarder.remote(None)
    middle = Forwarder.remote(last)
    first = Forwarder.remote(middle)
    ray.get(first.flush.remote())
    t0 = time.perf_counter()
    for i in range(messages):
        first.push.remote(i)
    assert ray.get(first.flush.remote()) == messages
    wall = time.perf_counter() - t0
    for actor in (first, middle, last):
        ray.kill(actor)
    return messages / wall


def pipeline(backend: str, jobs: int) -> float:
    with Runtime(backend=backend, strict=False) as runtime:
        runtime.exec("ray_pipeline")
        runtime.post("ray_pipeline", "s0", "in", -1)[1].wait(120)  # warm up
        t0 = time.perf_counter()
        for i in range(jobs):
            runtime.post("ray_pipeline", "s0", "in", i)
        assert runtime.wait_until_all_jobs_finished(timeout=600)
        return jobs / (time.perf_counter() - t0)


def cpu_batch(backend: str, jobs: int) -> float:
    with Runtime(backend=backend, strict=False) as runtime:
        runtime.exec("ray_cpu")
        runtime.post("ray_cpu", "burn", "in", -1)[1].wait(120)  # warm up (imports, first call)
        t0 = time.perf_counter()
        for i in range(jobs):
            runtime.post("ray_cpu", "burn", "in", i)
        assert runtime.wait_until_all_jobs_finished(timeout=600)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--cpu-jobs", type=int, default=16)
    parser.add_argument("--loops", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.cpu_jobs, args.loops, args.rounds = 300, 8, 500_000, 1
    path = os.pathsep.join(p for p in sys.path if p)
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    build(args.loops)
    runs: dict[str, list[float]] = {
        k: [] for k in ("ray", "threads", "chain", "cpu_ray", "cpu_threads")
    }
    for _ in range(args.rounds):
        runs["ray"].append(pipeline("ray", args.jobs))
        runs["threads"].append(pipeline("threads", args.jobs * 5))
        runs["chain"].append(plain_chain(args.jobs))
        runs["cpu_ray"].append(cpu_batch("ray", args.cpu_jobs))
        runs["cpu_threads"].append(cpu_batch("threads", args.cpu_jobs))
    ray.shutdown()
    med = {k: statistics.median(v) for k, v in runs.items()}
    emit(
        {
            "benchmark": "ray_backend",
            "rounds": args.rounds,
            "jobs": args.jobs,
            "actorflow_ray_jobs_per_s": round(med["ray"]),
            "actorflow_threads_jobs_per_s": round(med["threads"]),
            "plain_ray_chain_msgs_per_s": round(med["chain"]),
            "ratio_ray_vs_plain_chain": round(med["ray"] / med["chain"], 2),
            "target_ray_vs_plain_chain": 3.0,
            "cpu_batch_seconds_ray": round(med["cpu_ray"], 3),
            "cpu_batch_seconds_threads": round(med["cpu_threads"], 3),
            "cpu_speedup_ray_vs_threads": round(med["cpu_threads"] / med["cpu_ray"], 2),
            "target_cpu_speedup": 1.6,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
