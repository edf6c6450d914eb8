"""Memory: RSS over 200,000 jobs with job retention bounded, and bytes per retained finished job.

Two measurements, each in a fresh subprocess per round so nothing else in the process (another
benchmark, an earlier round, the parent's imports) skews the figures; medians of the rounds.

* ``rss``: a 3-routine pipeline under ``Runtime(strict=False)`` with ``job_retention`` at its
  default (bounded). Jobs are posted in batches of ``--batch`` (each batch waited for, so the
  figure is what the runtime keeps, not a backlog in flight); after ``gc.collect()`` the RSS is
  read every ``--checkpoint`` jobs. Target: RSS after 200,000 jobs within 15 MB of RSS after
  20,000.
* ``retained``: with ``tracemalloc`` on, the bytes still allocated after 10,000 jobs of a
  3-routine pipeline whose first routine sets one small data key, under
  ``job_retention=10,000`` minus the same under ``job_retention=0``, divided by 10,000: what one
  retained finished job costs. Target: at most 1 KB.

Baselines of the same run: the RSS of a bare interpreter with actorflow imported and of the
runtime before its first job (each in its own subprocess, per round).

    python3 benchmarks/memory.py [--jobs 200000] [--checkpoint 20000] [--retain 10000]
                                 [--rounds 5] [--quick]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import emit, machine, rss_bytes, target  # noqa: E402

FLOW_ID = "bench_memory"
MB = 1024 * 1024
RSS_GROWTH_LIMIT_MB = 15.0
RETAINED_JOB_LIMIT_BYTES = 1024.0


def build() -> None:
    from actorflow import Flow, FlowRegistry, Routine, get_current_job  # noqa: PLC0415

    class Step(Routine):
        def __init__(self, sets_data: bool) -> None:
            super().__init__()
            self.sets_data = sets_data
            self.add_slot("in")
            self.add_event("out")

        def logic(
            self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
        ) -> None:
            value = slot_data["in"][0]
            if self.sets_data:
                job = get_current_job()
                assert job is not None
                job.set_data("n", 7)  # one small data key per job
            self.emit("out", value=value)

    flow = Flow(FLOW_ID)
    for i in range(3):
        flow.add_routine(Step(sets_data=i == 0), f"s{i}")
    for i in range(2):
        flow.connect(f"s{i}", "out", f"s{i + 1}", "in")
    FlowRegistry.get_instance().register(flow)


def run_jobs(runtime: Any, count: int, batch: int, start: int = 0) -> None:
    """Post ``count`` jobs in batches of ``batch`` (0: all at once), waiting for each batch."""
    step = batch or count
    done = 0
    while done < count:
        for i in range(start + done, start + min(count, done + step)):
            runtime.post(FLOW_ID, "s0", "in", i)
        runtime.wait_until_all_jobs_finished()
        done = min(count, done + step)


# -- the measurements, each run in a fresh interpreter -----------------------------------------
def child_bare() -> dict[str, Any]:
    import actorflow  # noqa: F401, PLC0415

    gc.collect()
    return {"rss_bytes": rss_bytes()}


def child_rss(jobs: int, checkpoint: int, batch: int) -> dict[str, Any]:
    from actorflow import Runtime  # noqa: PLC0415
    from actorflow.runtime import DEFAULT_JOB_RETENTION  # noqa: PLC0415

    build()
    points: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with Runtime(strict=False) as runtime:  # job_retention at its default (bounded)
        runtime.exec(FLOW_ID)
        gc.collect()
        idle_rss = rss_bytes()
        done = 0
        while done < jobs:
            chunk = min(checkpoint, jobs - done)
            run_jobs(runtime, chunk, batch, done)
            done += chunk
            gc.collect()
            points.append(
                {"jobs": done, "rss_bytes": rss_bytes(), "blocks": sys.getallocatedblocks()}
            )
        metrics = runtime.metrics()["jobs"]
        retained = len(runtime.list_jobs())
        retention = runtime.job_retention
    if metrics["completed"] != jobs:
        raise RuntimeError(f"{metrics['completed']} of {jobs} jobs completed")
    return {
        "job_retention": retention,
        "default_job_retention": DEFAULT_JOB_RETENTION,
        "retained_jobs_at_end": retained,
        "idle_rss_bytes": idle_rss,
        "points": points,
        "seconds": time.perf_counter() - t0,
    }


def child_retained(retention: int, jobs: int, batch: int) -> dict[str, Any]:
    import tracemalloc  # noqa: PLC0415

    from actorflow import Runtime  # noqa: PLC0415

    build()
    tracemalloc.start()
    with Runtime(strict=False, job_retention=retention) as runtime:
        runtime.exec(FLOW_ID)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        run_jobs(runtime, jobs, batch)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        retained = len(runtime.list_jobs())
        job = runtime.list_jobs()[-1] if retained else None
        sample_data = dict(job.data) if job is not None else None
    tracemalloc.stop()
    return {
        "job_retention": retention,
        "jobs": jobs,
        "retained_jobs": retained,
        "held_bytes": after - before,
        "sample_data": sample_data,
    }


def spawn(args: list[str]) -> dict[str, Any]:
    """Run this script as ``--child ...`` in a fresh interpreter; its one JSON line."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {args} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def point_at(points: list[dict[str, Any]], jobs: int) -> dict[str, Any]:
    for point in points:
        if point["jobs"] >= jobs:
            return point
    return points[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--checkpoint", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="0: post every chunk at once")
    parser.add_argument("--retain", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="40,000 jobs, 2,000 retained, 2 rounds"
    )
    parser.add_argument("--child", choices=("bare", "rss", "retained"), help=argparse.SUPPRESS)
    parser.add_argument("--retention", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "bare":
        print(json.dumps(child_bare()))
        return
    if args.child == "rss":
        print(json.dumps(child_rss(args.jobs, args.checkpoint, args.batch)))
        return
    if args.child == "retained":
        print(json.dumps(child_retained(args.retention, args.jobs, args.batch)))
        return

    if args.quick:
        args.jobs = min(args.jobs, 40_000)
        args.retain = min(args.retain, 2_000)
        args.rounds = min(args.rounds, 2)
    first = min(args.checkpoint, args.jobs)
    common = ["--batch", str(args.batch)]
    bare: list[float] = []
    idle: list[float] = []
    at_first: list[float] = []
    at_last: list[float] = []
    growth: list[float] = []
    blocks_growth: list[float] = []
    per_job: list[float] = []
    held_retained: list[float] = []
    held_none: list[float] = []
    run_seconds: list[float] = []
    retained_counts: list[int] = []
    rss_child: dict[str, Any] = {}
    for _ in range(args.rounds):  # rounds interleaved: every measurement once per round
        bare.append(spawn(["--child", "bare"])["rss_bytes"] / MB)
        rss_child = spawn(
            ["--child", "rss", "--jobs", str(args.jobs), "--checkpoint", str(first), *common]
        )
        points = rss_child["points"]
        p_first, p_last = point_at(points, first), points[-1]
        idle.append(rss_child["idle_rss_bytes"] / MB)
        at_first.append(p_first["rss_bytes"] / MB)
        at_last.append(p_last["rss_bytes"] / MB)
        growth.append((p_last["rss_bytes"] - p_first["rss_bytes"]) / MB)
        blocks_growth.append(p_last["blocks"] - p_first["blocks"])
        run_seconds.append(rss_child["seconds"])
        none = spawn(
            ["--child", "retained", "--retention", "0", "--jobs", str(args.retain), *common]
        )
        kept = spawn(
            [
                "--child",
                "retained",
                "--retention",
                str(args.retain),
                "--jobs",
                str(args.retain),
                *common,
            ]
        )
        held_none.append(none["held_bytes"])
        held_retained.append(kept["held_bytes"])
        retained_counts.append(kept["retained_jobs"])
        per_job.append((kept["held_bytes"] - none["held_bytes"]) / max(1, kept["retained_jobs"]))

    med = statistics.median
    rss_growth = med(growth)
    bytes_per_job = med(per_job)
    emit(
        {
            "benchmark": "memory",
            "quick": args.quick,
            "rounds": args.rounds,
            "jobs": args.jobs,
            "checkpoint_jobs": first,
            "batch": args.batch,
            "job_retention": rss_child.get("job_retention"),
            "retained_jobs_at_end": rss_child.get("retained_jobs_at_end"),
            "bare_interpreter_rss_mb": round(med(bare), 1),
            "runtime_idle_rss_mb": round(med(idle), 1),
            f"rss_after_{first}_jobs_mb": round(med(at_first), 1),
            f"rss_after_{args.jobs}_jobs_mb": round(med(at_last), 1),
            "rss_growth_mb": round(rss_growth, 2),
            "rss_growth_mb_per_round": [round(g, 2) for g in growth],
            "allocated_blocks_growth": round(med(blocks_growth)),
            "rss_curve_mb_last_round": [
                [p["jobs"], round(p["rss_bytes"] / MB, 1)] for p in rss_child.get("points", [])
            ],
            "jobs_per_s_during_rss_run": round(args.jobs / med(run_seconds)),
            "retain_jobs": args.retain,
            "retained_jobs_counted": min(retained_counts),
            "held_bytes_retention_0": round(med(held_none)),
            f"held_bytes_retention_{args.retain}": round(med(held_retained)),
            "bytes_per_retained_job": round(bytes_per_job, 1),
            "targets": {
                "rss_growth_mb": target(round(rss_growth, 2), "<=", RSS_GROWTH_LIMIT_MB),
                "bytes_per_retained_job": target(
                    round(bytes_per_job, 1), "<=", RETAINED_JOB_LIMIT_BYTES
                ),
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
