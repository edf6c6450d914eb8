"""Run every benchmark as a subprocess; one JSON line each, then a one-line summary of targets.

    python3 benchmarks/run_all.py [--quick] [--markdown] [--only pipeline,fanout,...]

Benchmarks, in order: pipeline, fanout, state, state_pipeline, order_flow, memory, idle, store,
async_io. Each runs in its own fresh interpreter with ``ACTORFLOW_STRICT`` removed from its
environment (the scripts pass ``strict=False`` anyway). Each line holds the actorflow figures,
the baseline figures measured in the same run, their ratios and the targets (value, bound,
met); the last line counts the targets met and missed. ``--quick`` runs the small variants
(well under 3 minutes in all; figures from a quick run are not the targets' measurement).
``--markdown`` writes the figures as tables into ``benchmarks/README.md`` between
``<!-- figures:start -->`` and ``<!-- figures:end -->``.

The exit status is 1 when a benchmark failed to run (or, with ``--fail-on-miss``, when a target
was missed); a missed target alone is a figure, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import emit, machine, ratio, target  # noqa: E402

README = HERE / "README.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

# Targets of the benchmarks whose scripts print figures only (pipeline, state).
PIPELINE_VS_STOCK = 2.5
PIPELINE_VS_SIMPLEQUEUE = 0.3
PIPELINE_CPU_VS_CHAIN = 2.0  # CPU per job / the SimpleQueue chain's CPU per message, same run
ONE_JOB_P50_MS = 0.08
ONE_JOB_P99_MS = 0.3
MODIFY_P50_US = 30.0
INCREMENTS_PER_S = 20_000.0
ONE_INCREMENT_PER_ROUTINE_VS_NONE = 0.7  # state_pipeline: jobs/s against no state calls
TWO_INCREMENTS_PER_ROUTINE_VS_NONE = 0.55
ORDER_FLOW_WITH_STATE_VS_WITHOUT = 0.6

FULL_ARGS: dict[str, list[str]] = {
    "pipeline": [],
    "fanout": [],
    "state": [],
    "state_pipeline": [],
    "order_flow": [],
    "memory": [],
    "idle": [],
    "store": [],
    "async_io": [],
}
QUICK_ARGS: dict[str, list[str]] = {
    "pipeline": [
        "--jobs",
        "5000",
        "--messages",
        "25000",
        "--latency-samples",
        "500",
        "--rounds",
        "3",
    ],
    "fanout": ["--quick"],
    "state": ["--jobs", "1250", "--samples", "500", "--rounds", "3"],
    "state_pipeline": ["--jobs", "5000", "--rounds", "3"],
    "order_flow": ["--jobs", "2000", "--rounds", "3"],
    "memory": ["--quick"],
    "idle": ["--quick"],
    "store": ["--quick"],
    "async_io": ["--quick"],
}


def run(name: str, quick: bool, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """Run ``benchmarks/<name>.py``; the JSON objects it printed and its wall time."""
    env = dict(os.environ)
    env.pop("ACTORFLOW_STRICT", None)
    args = (QUICK_ARGS if quick else FULL_ARGS)[name]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"exit status {proc.returncode}: {tail}")
    objects = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not objects:
        raise RuntimeError("printed no JSON")
    return objects, seconds


def named(targets: dict[str, dict[str, Any]], bench: str) -> list[dict[str, Any]]:
    return [{"name": f"{bench}.{key}", **value} for key, value in targets.items()]


# -- one summary per benchmark: (line, table rows) ----------------------------------------------
Row = dict[str, Any]


def row(
    figure: str,
    value: Any,
    baseline: str = "",
    ratio_: Any = "",
    goal: dict[str, Any] | None = None,
) -> Row:
    return {
        "figure": figure,
        "actorflow": value,
        "baseline": baseline,
        "ratio": ratio_,
        "target": goal,
    }


def pipeline(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    jobs = r["actorflow_jobs_per_s"]
    stock, simple = r["pykka_stock_msgs_per_s"], r["pykka_simplequeue_msgs_per_s"]
    vs_stock, vs_simple = ratio(jobs, stock), ratio(jobs, simple)
    targets = {
        "jobs_per_s_vs_pykka_stock": target(vs_stock or 0.0, ">=", PIPELINE_VS_STOCK),
        "jobs_per_s_vs_pykka_simplequeue": target(vs_simple or 0.0, ">=", PIPELINE_VS_SIMPLEQUEUE),
        "cpu_per_job_vs_simplequeue_msg": target(
            r["cpu_per_job_vs_simplequeue_msg"], "<=", PIPELINE_CPU_VS_CHAIN
        ),
        "one_job_p50_ms": target(r["one_job_p50_ms"], "<=", ONE_JOB_P50_MS),
        "one_job_p99_ms": target(r["one_job_p99_ms"], "<=", ONE_JOB_P99_MS),
    }
    line = {
        "benchmark": "pipeline",
        "params": {"jobs": r["jobs"], "messages": r["messages"], "rounds": r["rounds"]},
        "actorflow": {
            "jobs_per_s": jobs,
            "cpu_us_per_job": r["actorflow_cpu_us_per_job"],
            "one_job_p50_ms": r["one_job_p50_ms"],
            "one_job_p99_ms": r["one_job_p99_ms"],
        },
        "baselines": {
            "pykka_stock_msgs_per_s": stock,
            "pykka_simplequeue_msgs_per_s": simple,
            "pykka_simplequeue_cpu_us_per_msg": r["pykka_simplequeue_cpu_us_per_msg"],
            "pykka_stock_one_msg_p50_ms": r.get("pykka_stock_one_msg_p50_ms"),
            "pykka_simplequeue_one_msg_p50_ms": r.get("pykka_simplequeue_one_msg_p50_ms"),
        },
        "ratios": {
            "vs_pykka_stock": vs_stock,
            "vs_pykka_simplequeue": vs_simple,
            "cpu_per_job_vs_simplequeue_msg": r["cpu_per_job_vs_simplequeue_msg"],
        },
        "targets": named(targets, "pipeline"),
    }
    n, m = r["jobs"], r["messages"]
    stock_p50 = r.get("pykka_stock_one_msg_p50_ms")
    rows = [
        row(
            f"3-routine pipeline, {n:,} jobs: jobs/s",
            jobs,
            f"stock pykka chain, {m:,} msgs: {stock:,} msgs/s",
            vs_stock,
            targets["jobs_per_s_vs_pykka_stock"],
        ),
        row(
            f"3-routine pipeline, {n:,} jobs: jobs/s",
            jobs,
            f"SimpleQueue pykka chain, {m:,} msgs: {simple:,} msgs/s",
            vs_simple,
            targets["jobs_per_s_vs_pykka_simplequeue"],
        ),
        row(
            "CPU per job (us, all threads), as measured",
            r["actorflow_cpu_us_per_job"],
            "SimpleQueue pykka chain (a message through the same 3 actors): "
            f"{r['pykka_simplequeue_cpu_us_per_msg']} us per msg",
            r["cpu_per_job_vs_simplequeue_msg"],
            targets["cpu_per_job_vs_simplequeue_msg"],
        ),
        row(
            "one job at a time: p50 (ms)",
            r["one_job_p50_ms"],
            "stock pykka chain, one message at a time through the same 3 actors: "
            f"p50 {stock_p50} ms",
            ratio(r["one_job_p50_ms"], stock_p50) if stock_p50 else "",
            targets["one_job_p50_ms"],
        ),
        row("one job at a time: p99 (ms)", r["one_job_p99_ms"], goal=targets["one_job_p99_ms"]),
    ]
    return line, rows


def fanout(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    targets = r["targets"]
    line = {
        "benchmark": "fanout",
        "params": {"jobs": r["jobs"], "sinks": r["sinks"], "rounds": r["rounds"]},
        "actorflow": {
            "msgs_per_s": r["actorflow_msgs_per_s"],
            "jobs_per_s": r["actorflow_jobs_per_s"],
            "cpu_us_per_job": r["actorflow_cpu_us_per_job"],
        },
        "baselines": {
            "pykka_fanout_msgs_per_s": r["pykka_fanout_msgs_per_s"],
            "pykka_simplequeue_chain_msgs_per_s": r["pykka_simplequeue_chain_msgs_per_s"],
        },
        "ratios": {
            "vs_pykka_fanout": r["ratio_vs_pykka_fanout"],
            "vs_simplequeue_chain": r["ratio_vs_simplequeue_chain"],
        },
        "targets": named(targets, "fanout"),
    }
    msgs, fanned = r["actorflow_messages"], r["pykka_fanout_messages"]
    chained = r["pykka_simplequeue_chain_messages"]
    label = f"fan-out 1 -> {r['sinks']}, {r['jobs']:,} jobs ({msgs:,} msgs): msgs/s"
    rows = [
        row(
            label,
            r["actorflow_msgs_per_s"],
            f"pykka fan-out, {fanned:,} msgs: {r['pykka_fanout_msgs_per_s']:,} msgs/s",
            r["ratio_vs_pykka_fanout"],
            targets["msgs_per_s_vs_pykka_fanout"],
        ),
        row(
            label,
            r["actorflow_msgs_per_s"],
            f"SimpleQueue pykka chain, {chained:,} msgs: "
            f"{r['pykka_simplequeue_chain_msgs_per_s']:,} msgs/s",
            r["ratio_vs_simplequeue_chain"],
        ),
    ]
    return line, rows


def state(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    inc, locked = r["actorflow_increments_per_s_4_routines"], r["locked_dict_updates_per_s"]
    targets = {
        "modify_roundtrip_p50_us": target(r["modify_roundtrip_p50_us"], "<=", MODIFY_P50_US),
        "increments_per_s_4_routines": target(inc, ">=", INCREMENTS_PER_S),
    }
    line = {
        "benchmark": "state",
        "params": {"rounds": r["rounds"]},
        "actorflow": {
            "increments_per_s_4_routines": inc,
            "modify_roundtrip_p50_us": r["modify_roundtrip_p50_us"],
            "modify_roundtrip_p99_us": r["modify_roundtrip_p99_us"],
        },
        "baselines": {"locked_dict_updates_per_s_4_threads": locked},
        "ratios": {"increments_vs_locked_dict": ratio(inc, locked, 4)},
        "targets": named(targets, "state"),
    }
    rows = [
        row(
            "WorkerState: modify_routine_state round trip p50 (us)",
            r["modify_roundtrip_p50_us"],
            goal=targets["modify_roundtrip_p50_us"],
        ),
        row("WorkerState: modify_routine_state round trip p99 (us)", r["modify_roundtrip_p99_us"]),
        row(
            "WorkerState: 4 routines incrementing one counter: updates/s",
            inc,
            f"dict under a threading.Lock, 4 threads: {locked:,} updates/s",
            ratio(inc, locked, 4),
            targets["increments_per_s_4_routines"],
        ),
    ]
    return line, rows


def memory(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    targets = r["targets"]
    first, last = r["checkpoint_jobs"], r["jobs"]
    at_first, at_last = r[f"rss_after_{first}_jobs_mb"], r[f"rss_after_{last}_jobs_mb"]
    kept = r["retain_jobs"]
    line = {
        "benchmark": "memory",
        "params": {
            "jobs": last,
            "checkpoint": first,
            "job_retention": r["job_retention"],
            "retain_jobs": kept,
            "rounds": r["rounds"],
        },
        "actorflow": {
            f"rss_after_{first}_jobs_mb": at_first,
            f"rss_after_{last}_jobs_mb": at_last,
            "rss_growth_mb": r["rss_growth_mb"],
            "bytes_per_retained_job": r["bytes_per_retained_job"],
            "runtime_idle_rss_mb": r["runtime_idle_rss_mb"],
        },
        "baselines": {
            "bare_interpreter_rss_mb": r["bare_interpreter_rss_mb"],
            "held_bytes_retention_0": r["held_bytes_retention_0"],
        },
        "ratios": {"rss_last_over_first": ratio(at_last, at_first)},
        "targets": named(targets, "memory"),
    }
    rows = [
        row(
            f"RSS growth, {first:,} -> {last:,} jobs (MB; retention {r['job_retention']:,})",
            r["rss_growth_mb"],
            f"RSS {at_first} MB -> {at_last} MB "
            f"(bare interpreter {r['bare_interpreter_rss_mb']} MB)",
            ratio(at_last, at_first),
            targets["rss_growth_mb"],
        ),
        row(
            f"bytes per retained finished job ({kept:,} retained vs retention 0)",
            r["bytes_per_retained_job"],
            f"retention 0 holds {r['held_bytes_retention_0']:,} B in all",
            goal=targets["bytes_per_retained_job"],
        ),
    ]
    return line, rows


def idle(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    targets = r["targets"]
    line = {
        "benchmark": "idle",
        "params": {"workers": r["workers"], "interval_s": r["interval_s"], "rounds": r["rounds"]},
        "actorflow": {
            "cpu_s_per_s": r["actorflow_cpu_s_per_s"],
            "wakeups_per_s": r["actorflow_wakeups_per_s"],
            "threads": r["actorflow_threads"],
            "busy_threads_last_round": r["actorflow_busy_threads_last_round"],
        },
        "baselines": {
            "bare_cpu_s_per_s": r["bare_cpu_s_per_s"],
            "pykka_cpu_s_per_s": r["pykka_cpu_s_per_s"],
            "pykka_wakeups_per_s": r["pykka_wakeups_per_s"],
        },
        "ratios": {"cpu_minus_bare_s_per_s": r["actorflow_minus_bare_cpu_s_per_s"]},
        "targets": named(targets, "idle"),
    }
    rows = [
        row(
            f"idle, {r['workers']} workers x 3 routines: CPU s/s",
            r["actorflow_cpu_s_per_s"],
            f"bare interpreter {r['bare_cpu_s_per_s']}; {r['pykka_actors']} idle pykka actors "
            f"{r['pykka_cpu_s_per_s']}",
            goal=targets["idle_cpu_s_per_s"],
        ),
        row(
            f"idle: thread wakeups/s ({r['actorflow_threads']} threads)",
            r["actorflow_wakeups_per_s"],
            f"pykka actors {r['pykka_wakeups_per_s']}",
            goal=targets["idle_wakeups_per_s"],
        ),
    ]
    return line, rows


def store(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    figures: dict[str, int] = {}
    baselines: dict[str, int] = {}
    skipped = []
    for rec in out:
        if "skipped" in rec:
            skipped.append(f"{rec['backend']}: {rec['skipped']}")
            continue
        mode = rec["mode"] + (f"-{rec['synchronous']}" if "synchronous" in rec else "")
        key = f"{rec['backend']}/{mode}/{rec['op']}"
        (baselines if rec["backend"].startswith("redis-py") else figures)[key] = rec["ops_per_sec"]
    ratios = {
        f"redis/sync/{op}_vs_redis-py-pipeline": ratio(
            figures[f"redis/sync/{op}"], baselines[f"redis-py-pipeline/sync/{op}"]
        )
        for op in ("put", "get")
        if f"redis/sync/{op}" in figures and f"redis-py-pipeline/sync/{op}" in baselines
    }
    line = {
        "benchmark": "store",
        "actorflow": {"ops_per_s": figures},
        "baselines": {"ops_per_s": baselines},
        "ratios": ratios,
        "targets": [],
        **({"skipped": skipped} if skipped else {}),
    }
    rows = []
    for key, value in figures.items():
        backend, mode, op = key.split("/")
        base: str = ""
        rat: Any = ""
        raw = f"redis-py-pipeline/sync/{op}"
        if backend == "redis" and mode == "sync" and raw in baselines:
            base, rat = (
                f"raw redis-py, pipelines of 100: {baselines[raw]:,} ops/s",
                ratios.get(f"redis/sync/{op}_vs_redis-py-pipeline", ""),
            )
        rows.append(row(f"store {backend} {mode} {op}: ops/s", value, base, rat))
    return line, rows


def async_io(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    targets = r["targets"]
    cases = ("async_100", "sync_100", "sync_8")
    line = {
        "benchmark": "async_io",
        "params": {"jobs": r["jobs"], "io_ms": r["io_ms"], "rounds": r["rounds"]},
        "actorflow": {
            f"{case}_{key}": r[f"{case}_{key}"]
            for case in cases
            for key in ("wall_s", "cpu_s", "threads_added", "logic_threads")
        },
        "baselines": {"ideal_wall_s": r["ideal_wall_s"]},
        "ratios": {
            "async_wall_over_ideal": r["async_wall_over_ideal"],
            "sync_100_wall_over_ideal": ratio(r["sync_100_wall_s"], r["ideal_wall_s"]),
            "sync_8_wall_over_ideal": ratio(r["sync_8_wall_s"], r["ideal_wall_s"]),
        },
        "targets": named(targets, "async_io"),
    }
    jobs, io_ms = r["jobs"], r["io_ms"]
    labels = {
        "async_100": "async routine, concurrency 100",
        "sync_100": "sync routine, 100 threads",
        "sync_8": "sync routine, 8 threads",
    }
    rows = []
    for case in cases:
        rows.append(
            row(
                f"{jobs:,} jobs of {io_ms:g} ms I/O, {labels[case]}: wall s",
                r[f"{case}_wall_s"],
                f"ideal {r['ideal_wall_s']} s",
                ratio(r[f"{case}_wall_s"], r["ideal_wall_s"]),
                targets["async_wall_over_ideal"] if case == "async_100" else None,
            )
        )
        rows.append(
            row(
                f"{labels[case]}: CPU s / threads added",
                r[f"{case}_cpu_s"],
                f"{r[f'{case}_threads_added']} threads added",
                goal=targets["async_threads_added"] if case == "async_100" else None,
            )
        )
    return line, rows


def state_pipeline(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    cases = r["cases"]
    none, one, two = cases["calls_0"], cases["calls_1"], cases["calls_2"]
    targets = {
        "one_increment_per_routine_vs_none": target(
            one["ratio_to_no_state"], ">=", ONE_INCREMENT_PER_ROUTINE_VS_NONE
        ),
        "two_increments_per_routine_vs_none": target(
            two["ratio_to_no_state"], ">=", TWO_INCREMENTS_PER_ROUTINE_VS_NONE
        ),
    }
    line = {
        "benchmark": "state_pipeline",
        "params": {"jobs": r["jobs"], "rounds": r["rounds"]},
        "actorflow": dict(cases),
        "baselines": {"no_state_calls_jobs_per_s": none["jobs_per_s"]},
        "ratios": {name: case["ratio_to_no_state"] for name, case in cases.items()},
        "targets": named(targets, "state_pipeline"),
    }
    base = f"no state calls: {none['jobs_per_s']:,} jobs/s"
    rows = [
        row(f"3-routine pipeline, {r['jobs']:,} jobs, no state calls: jobs/s", none["jobs_per_s"]),
        row(
            "... one increment per routine (3 per job): jobs/s",
            one["jobs_per_s"],
            base,
            one["ratio_to_no_state"],
            targets["one_increment_per_routine_vs_none"],
        ),
        row(
            "... two increments per routine (6 per job): jobs/s",
            two["jobs_per_s"],
            base,
            two["ratio_to_no_state"],
            targets["two_increments_per_routine_vs_none"],
        ),
        row(
            "CPU per job (us): none / one / two increments per routine",
            f"{none['cpu_us_per_job']} / {one['cpu_us_per_job']} / {two['cpu_us_per_job']}",
        ),
    ]
    return line, rows


def order_flow(out: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Row]]:
    r = out[0]
    with_state, without = r["with_state_jobs_per_s"], r["without_state_jobs_per_s"]
    targets = {
        "with_state_vs_without": target(
            r["ratio_with_to_without_state"], ">=", ORDER_FLOW_WITH_STATE_VS_WITHOUT
        )
    }
    line = {
        "benchmark": "order_flow",
        "params": {"jobs": r["jobs"], "rounds": r["rounds"]},
        "actorflow": {
            "with_state_jobs_per_s": with_state,
            "with_state_cpu_us_per_job": r["with_state_cpu_us_per_job"],
        },
        "baselines": {
            "without_state_jobs_per_s": without,
            "without_state_cpu_us_per_job": r["without_state_cpu_us_per_job"],
        },
        "ratios": {"with_state_vs_without": r["ratio_with_to_without_state"]},
        "targets": named(targets, "order_flow"),
    }
    rows = [
        row(
            f"order flow (fan-out, join, 5 state calls, 5% retried), {r['jobs']:,} jobs: jobs/s",
            with_state,
            f"the same flow without state calls: {without:,} jobs/s",
            r["ratio_with_to_without_state"],
            targets["with_state_vs_without"],
        ),
        row(
            "order flow: CPU per job (us), with / without state calls",
            f"{r['with_state_cpu_us_per_job']} / {r['without_state_cpu_us_per_job']}",
        ),
    ]
    return line, rows


SUMMARIES: dict[str, Callable[[list[dict[str, Any]]], tuple[dict[str, Any], list[Row]]]] = {
    "pipeline": pipeline,
    "fanout": fanout,
    "state": state,
    "state_pipeline": state_pipeline,
    "order_flow": order_flow,
    "memory": memory,
    "idle": idle,
    "store": store,
    "async_io": async_io,
}


# -- markdown -------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return str(value).replace("|", "\\|")


def markdown(
    tables: dict[str, list[Row]], errors: dict[str, str], quick: bool, summary: dict[str, Any]
) -> str:
    m = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        "",
        f"Measured {when}{' (quick mode: small variants, not the targets)' if quick else ''} "
        f"with `python3 benchmarks/run_all.py{' --quick' if quick else ''} --markdown` on "
        f"{m['cpu_model']}, {m['cpus']} cores, Python {m['python']} ({m['platform']}). "
        f"Load average {summary['load_average'][0]:.2f} at the start and "
        f"{summary['load_average'][1]:.2f} at the end (1 minute; the machine may be shared): "
        "figures are medians of interleaved rounds and every ratio is taken against a baseline "
        "measured in the same run.",
        "",
        f"Targets met: **{summary['met']} of {summary['met'] + summary['missed']}**"
        + (f"; errors: {', '.join(sorted(errors))}" if errors else "")
        + ".",
        "",
        "| Benchmark | Figure | actorflow | Baseline (same run) | Ratio | Target | Met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for bench, rows in tables.items():
        if bench == "store":
            continue
        for r in rows:
            goal = r["target"]
            lines.append(
                f"| {bench} | {_cell(r['figure'])} | {_cell(r['actorflow'])} | "
                f"{_cell(r['baseline'])} | {_cell(r['ratio'])} | "
                f"{_cell(goal['target']) if goal else ''} | "
                f"{('yes' if goal['met'] else '**no**') if goal else ''} |"
            )
    for bench, message in errors.items():
        lines.append(f"| {bench} | failed: {_cell(message.splitlines()[-1])} | | | | | |")
    if tables.get("store"):
        lines += [
            "",
            "Stores (no targets; ops/s, medians of rounds):",
            "",
            "| Backend | Mode | Op | ops/s | Baseline (same run) | Ratio |",
            "|---|---|---|---:|---|---:|",
        ]
        for r in tables["store"]:
            _, backend, mode, op = r["figure"].split(":")[0].split(" ")
            lines.append(
                f"| {backend} | {mode} | {op} | {_cell(r['actorflow'])} | "
                f"{_cell(r['baseline'])} | {_cell(r['ratio'])} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(block: str) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "## Figures\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small variant of every benchmark")
    parser.add_argument("--markdown", action="store_true", help="write the figures into README.md")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit status 1 when a target is missed"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SUMMARIES)
    unknown = sorted(set(names) - set(SUMMARIES))
    if unknown:
        parser.error(
            f"unknown benchmark(s): {', '.join(unknown)} (choose from {', '.join(SUMMARIES)})"
        )

    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    tables: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    goals: list[dict[str, Any]] = []
    for name in names:
        try:
            out, seconds = run(name, args.quick, args.timeout)
            line, rows = SUMMARIES[name](out)
        except Exception as exc:  # one failing benchmark must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            emit({"benchmark": name, "error": errors[name]})
            continue
        line["quick"] = args.quick
        line["seconds"] = round(seconds, 1)
        emit(line)
        tables[name] = rows
        goals += line["targets"]
    met = [g["name"] for g in goals if g["met"]]
    missed = [g["name"] for g in goals if not g["met"]]
    summary = {
        "summary": True,
        "quick": args.quick,
        "met": len(met),
        "missed": len(missed),
        "targets_met": met,
        "targets_missed": missed,
        "errors": sorted(errors),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "machine": machine(),
    }
    emit(summary)
    if args.markdown:
        write_markdown(markdown(tables, errors, args.quick, summary))
    if errors or (args.fail_on_miss and missed):
        sys.exit(1)


if __name__ == "__main__":
    main()
