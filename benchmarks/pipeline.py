"""3-routine pipeline: throughput, CPU per job and one-job latency, next to raw pykka chains.

Prints one JSON object. Rounds are interleaved (actorflow, stock pykka, SimpleQueue pykka) and
medians reported, because this machine is shared and noisy.

    python benchmarks/pipeline.py [--jobs 20000] [--messages 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _baselines import pykka_chain, pykka_round_trips
from _common import emit, interleave, machine, percentile
from _flows import register_pipeline

from actorflow import Runtime


def build(flow_id: str = "bench_pipeline", length: int = 3) -> None:
    register_pipeline(flow_id, length)


def throughput(jobs: int) -> dict[str, float]:
    with Runtime(strict=False, job_retention=1000) as runtime:
        runtime.exec("bench_pipeline")
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(jobs):
            runtime.post("bench_pipeline", "s0", "in", i)
        runtime.wait_until_all_jobs_finished()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"per_s": jobs / wall, "seconds": wall, "cpu_us_per_job": cpu / jobs * 1e6}


def latency(samples: int) -> dict[str, float]:
    with Runtime(strict=False, job_retention=1000) as runtime:
        runtime.exec("bench_pipeline")
        for i in range(200):  # warm up
            runtime.post("bench_pipeline", "s0", "in", i)[1].wait()
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            runtime.post("bench_pipeline", "s0", "in", i)[1].wait()
            times.append(time.perf_counter() - t0)
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency-samples", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    build()
    figures = interleave(
        args.rounds,
        {
            "actorflow": lambda: throughput(args.jobs),
            "pykka_stock": lambda: pykka_chain(args.messages),
            "pykka_simplequeue": lambda: pykka_chain(args.messages, simple_queue=True),
            "latency": lambda: latency(args.latency_samples),
            "stock_latency": lambda: pykka_round_trips(args.latency_samples),
            "simplequeue_latency": lambda: pykka_round_trips(
                args.latency_samples, simple_queue=True
            ),
        },
    )
    af, stock, simple = figures["actorflow"], figures["pykka_stock"], figures["pykka_simplequeue"]
    emit(
        {
            "benchmark": "pipeline",
            "rounds": args.rounds,
            "jobs": args.jobs,
            "messages": args.messages,
            "actorflow_jobs_per_s": round(af["per_s"]),
            "actorflow_cpu_us_per_job": round(af["cpu_us_per_job"], 2),
            "pykka_simplequeue_cpu_us_per_msg": round(simple["cpu_us_per_msg"], 2),
            # a job is one message through the same 3 actors as one of the chain's messages
            "cpu_per_job_vs_simplequeue_msg": round(
                af["cpu_us_per_job"] / simple["cpu_us_per_msg"], 3
            ),
            "pykka_stock_msgs_per_s": round(stock["per_s"]),
            "pykka_simplequeue_msgs_per_s": round(simple["per_s"]),
            "ratio_vs_stock": round(af["per_s"] / stock["per_s"], 2),
            "ratio_vs_simplequeue": round(af["per_s"] / simple["per_s"], 2),
            "one_job_p50_ms": round(figures["latency"]["p50_ms"], 4),
            "one_job_p99_ms": round(figures["latency"]["p99_ms"], 4),
            # one message at a time through the same 3 actors, waited for: thread wake-ups
            "pykka_stock_one_msg_p50_ms": round(figures["stock_latency"]["p50_ms"], 4),
            "pykka_simplequeue_one_msg_p50_ms": round(figures["simplequeue_latency"]["p50_ms"], 4),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
