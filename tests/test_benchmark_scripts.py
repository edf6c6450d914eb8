"""The benchmarks run and check what they measure (tiny sizes: no figure is judged).

A benchmark that no longer runs, or whose counters are no longer exact, would print figures
no one can trust; these runs keep the scripts working. Their figures are not looked at: speed
is measured by ``benchmarks/run_all.py``, never by a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.timeout(120)


def run(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_profile_state_call_times_every_layer_of_an_increment() -> None:
    result = run("profile_state_call.py", "--calls", "2000", "--rounds", "2")
    layers = result["us_per_call"]
    assert set(result["own_us_per_call"]) == {
        "WorkerState.increment",
        "WorkerCore.state_call",
        "SupervisorCore turn",
        "SupervisorCore._increment",
    }
    assert set(layers) == {*result["own_us_per_call"], "an empty call (the loop's own cost)"}
    assert all(value > 0 for value in layers.values())


def test_state_pipeline_runs_its_three_cases_with_exact_counters() -> None:
    result = run("state_pipeline.py", "--jobs", "300", "--rounds", "1")
    cases = result["cases"]
    assert {name: case["increments_per_job"] for name, case in cases.items()} == {
        "calls_0": 0,
        "calls_1": 3,
        "calls_2": 6,
    }
    assert cases["calls_0"]["ratio_to_no_state"] == 1.0


def test_order_flow_runs_both_variants_and_mixes_no_job() -> None:
    result = run("order_flow.py", "--jobs", "300", "--rounds", "1")
    assert result["benchmark"] == "order_flow"
    assert result["jobs"] == 300


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not on PATH")
def test_pipeline_measures_its_baselines_in_the_same_run() -> None:
    """The pipeline's figures come with the chains' throughput, CPU and one-message latency
    through the same 3 actors, each measured in the run."""
    result = run(
        "pipeline.py",
        "--jobs",
        "300",
        "--messages",
        "300",
        "--latency-samples",
        "50",
        "--rounds",
        "1",
    )
    for key in (
        "actorflow_jobs_per_s",
        "actorflow_cpu_us_per_job",
        "one_job_p50_ms",
        "pykka_stock_msgs_per_s",
        "pykka_simplequeue_msgs_per_s",
        "pykka_simplequeue_cpu_us_per_msg",
        "pykka_stock_one_msg_p50_ms",
        "pykka_simplequeue_one_msg_p50_ms",
    ):
        assert result[key] > 0, key


def test_instructions_counts_the_work_of_a_job_at_a_revision() -> None:
    result = run("instructions.py", "--jobs", "60", "--base-jobs", "20")
    (row,) = result["revisions"]
    assert row["rev"] == "WORKTREE"
    assert row["ratio_to_first"] == 1.0
    # a job is thousands of instructions (about 58,000 on x86_64), never nothing
    assert 5_000 < row["instructions_per_job"] < 1_000_000


def test_instructions_names_a_revision_it_cannot_find() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "instructions.py"), "--rev", "no-such-revision"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "'no-such-revision' is not a revision of this repository" in done.stderr


def test_run_all_reports_the_load_it_ran_under() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--only", "idle"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["summary"] is True and summary["errors"] == []
    start, end = summary["load_average"]
    assert start >= 0.0 and end >= 0.0
