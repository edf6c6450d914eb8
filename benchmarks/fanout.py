"""Fan-out 1 -> 10 routines: messages/s next to a raw pykka fan-out and a SimpleQueue chain.

One source routine emits every job to 10 sink routines, so 5,000 posted jobs make 55,000
messages (5,000 posts + 50,000 routine messages). The baselines run in the same process,
rounds interleaved, medians reported (the machine is shared and noisy):

* ``pykka_fanout``: a SimpleQueue-mailbox pykka actor telling 10 SimpleQueue-mailbox actors,
  counted the same way: 5,000 messages to the source + 50,000 deliveries = 55,000 messages
  (the target's baseline);
* ``pykka_simplequeue_chain``: 50,000 messages forwarded through 3 SimpleQueue-mailbox actors
  (for reference).

Target: actorflow messages/s (55,000 / wall) at least 0.25x the pykka fan-out's messages/s
(55,000 / wall).

    python3 benchmarks/fanout.py [--jobs 5000] [--sinks 10] [--rounds 5] [--quick]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _baselines import pykka_chain, pykka_fanout
from _common import emit, interleave, machine, ratio, target
from _flows import Sink
from _flows import Step as Source

from actorflow import Flow, FlowRegistry, Runtime

FLOW_ID = "bench_fanout"
TARGET_RATIO = 0.25


def build(sinks: int) -> None:
    flow = Flow(FLOW_ID)
    flow.add_routine(Source(), "source")
    for i in range(sinks):
        flow.add_routine(Sink(), f"sink{i}")
        flow.connect("source", "out", f"sink{i}", "in")
    FlowRegistry.get_instance().register(flow)


def actorflow_fanout(jobs: int, sinks: int) -> dict[str, float]:
    messages = jobs * (sinks + 1)
    with Runtime(strict=False, job_retention=1000) as runtime:
        runtime.exec(FLOW_ID)
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(jobs):
            runtime.post(FLOW_ID, "source", "in", i)
        runtime.wait_until_all_jobs_finished()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        completed = runtime.metrics()["jobs"]["completed"]
    if completed != jobs:
        raise RuntimeError(f"{completed} of {jobs} jobs completed")
    return {
        "per_s": messages / wall,
        "jobs_per_s": jobs / wall,
        "seconds": wall,
        "cpu_us_per_job": cpu / jobs * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--sinks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds = min(args.jobs, 1_000), min(args.rounds, 3)
    build(args.sinks)
    deliveries = args.jobs * args.sinks
    figures = interleave(
        args.rounds,
        {
            "actorflow": lambda: actorflow_fanout(args.jobs, args.sinks),
            "pykka_fanout": lambda: pykka_fanout(args.jobs, args.sinks),
            "pykka_simplequeue_chain": lambda: pykka_chain(deliveries, simple_queue=True),
        },
    )
    af, fan, chain = (
        figures["actorflow"],
        figures["pykka_fanout"],
        figures["pykka_simplequeue_chain"],
    )
    vs_fanout = ratio(af["per_s"], fan["per_s"])
    emit(
        {
            "benchmark": "fanout",
            "quick": args.quick,
            "rounds": args.rounds,
            "jobs": args.jobs,
            "sinks": args.sinks,
            "actorflow_messages": args.jobs * (args.sinks + 1),
            "actorflow_msgs_per_s": round(af["per_s"]),
            "actorflow_jobs_per_s": round(af["jobs_per_s"]),
            "actorflow_seconds": round(af["seconds"], 4),
            "actorflow_cpu_us_per_job": round(af["cpu_us_per_job"], 2),
            "pykka_fanout_messages": round(fan["messages"]),
            "pykka_fanout_msgs_per_s": round(fan["per_s"]),
            "pykka_fanout_seconds": round(fan["seconds"], 4),
            "pykka_simplequeue_chain_messages": deliveries,
            "pykka_simplequeue_chain_msgs_per_s": round(chain["per_s"]),
            "ratio_vs_pykka_fanout": vs_fanout,
            "ratio_vs_simplequeue_chain": ratio(af["per_s"], chain["per_s"]),
            "wall_ratio_pykka_fanout_over_actorflow": ratio(fan["seconds"], af["seconds"]),
            "targets": {
                "msgs_per_s_vs_pykka_fanout": target(vs_fanout or 0.0, ">=", TARGET_RATIO),
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
