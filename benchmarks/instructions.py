"""Machine instructions per job of the 3-routine pipeline, counted by valgrind, at git revisions.

A count of instructions does not depend on what else the machine is doing, so revisions can be
compared on a shared machine where timings cannot: the same code, inputs and interpreter give
counts within about 1% of each other (valgrind runs one thread at a time, and where it switches
between them varies). For each revision the pipeline of
``pipeline.py`` (three routines on threads, ``strict=False``, ``job_retention=1000``) runs
twice under ``valgrind --tool=callgrind``, with ``--base-jobs`` and with ``--base-jobs +
--jobs`` jobs; the difference of the two totals over ``--jobs`` is what one job costs, with the
start-up, imports and shutdown taken out.

It counts instructions, not time: valgrind runs one thread at a time, so the cost of two
cores' caches and of handing the interpreter lock between threads is not in the count, and an
instruction that misses the cache counts as one. What it does show exactly is the work added
or removed by a change.

    python benchmarks/instructions.py [--rev REV ...] [--jobs 8000] [--base-jobs 2000] [--no-gc]

``--rev`` names a git revision (a commit, tag or branch; ``WORKTREE``, the default, is the
package as it is on disk); each other revision's ``actorflow/`` is taken with ``git archive``
into a temporary directory and run from there, with this interpreter and its installed
dependencies. ``--no-gc`` turns the garbage collector off in the measured runs (what the
collector's share is). Needs valgrind (Debian: ``apt-get install valgrind``) and, for
``--rev``, git. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, ratio

ROOT = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"
_COLLECTED = re.compile(r"Collected : (\d+)")


def run_pipeline(jobs: int, collect_garbage: bool, package_parent: Path) -> None:
    """The measured program (``--child``): ``jobs`` jobs through ``s0 -> s1 -> s2``.

    Uses only the public API that every revision since 2026-11-25 has (``Routine``,
    ``Flow``, ``FlowRegistry``, ``Runtime.post``), not the benchmarks' shared flows, which
    may differ between revisions. Exits with an error unless ``actorflow`` was imported from
    ``package_parent`` (a revision measured must be the one run).
    """
    import actorflow  # noqa: PLC0415
    from actorflow import Flow, FlowRegistry, Routine, Runtime  # noqa: PLC0415

    imported = Path(actorflow.__file__).resolve().parent.parent
    if imported != package_parent.resolve():
        raise SystemExit(f"actorflow was imported from {imported}, not from {package_parent}")

    class Step(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")
            self.add_event("out")

        def logic(self, slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
            self.emit("out", value=slot_data["in"][0])

    flow = Flow("instructions_pipeline")
    for index in range(3):
        flow.add_routine(Step(), f"s{index}")
    for index in range(2):
        flow.connect(f"s{index}", "out", f"s{index + 1}", "in")
    FlowRegistry.get_instance().register(flow)
    if not collect_garbage:
        gc.disable()
    with Runtime(strict=False, job_retention=1000) as runtime:
        runtime.exec("instructions_pipeline")
        for index in range(jobs):
            runtime.post("instructions_pipeline", "s0", "in", index)
        runtime.wait_until_all_jobs_finished()


def count(package_parent: Path, jobs: int, collect_garbage: bool) -> int:
    """Instructions valgrind counts for a whole run of ``jobs`` jobs, the package imported
    from ``package_parent``."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(jobs),
        "--package-parent",
        str(package_parent),
    ]
    if not collect_garbage:
        command.append("--no-gc")
    environment = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def checkout(rev: str, into: Path) -> tuple[Path, str, str]:
    """``rev``'s ``actorflow/`` under ``into``; returns it with the commit and its subject."""
    if rev == WORKTREE:
        return ROOT, WORKTREE, "the package as it is on disk"
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rev!r} is not a revision of this repository") from None
    subject = _git("log", "-1", "--format=%s", commit)
    target = into / commit
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "actorflow"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target, commit, subject


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def measure(revs: list[str], jobs: int, base_jobs: int, collect_garbage: bool) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="actorflow-instructions-") as tmp:
        for rev in revs:
            parent, commit, subject = checkout(rev, Path(tmp))
            base = count(parent, base_jobs, collect_garbage)
            total = count(parent, base_jobs + jobs, collect_garbage)
            rows.append(
                {
                    "rev": rev,
                    "commit": commit,
                    "subject": subject,
                    "instructions_per_job": round((total - base) / jobs),
                }
            )
    first = rows[0]["instructions_per_job"]
    for row in rows:
        row["ratio_to_first"] = ratio(row["instructions_per_job"], first, 4)
    return {
        "benchmark": "instructions",
        "machine": machine(),
        "what": "machine instructions per job, 3-routine pipeline on threads (valgrind callgrind)",
        "jobs": jobs,
        "base_jobs": base_jobs,
        "garbage_collector": collect_garbage,
        "revisions": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", help="a git revision (default: WORKTREE)")
    parser.add_argument("--jobs", type=int, default=8000, help="the jobs a count is per")
    parser.add_argument("--base-jobs", type=int, default=2000, help="jobs of the baseline run")
    parser.add_argument("--no-gc", action="store_true", help="garbage collector off")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--package-parent", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_pipeline(args.child, not args.no_gc, args.package_parent)
        return
    if args.jobs < 1 or args.base_jobs < 1:
        parser.error("--jobs and --base-jobs must be at least 1")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    emit(measure(args.rev or [WORKTREE], args.jobs, args.base_jobs, not args.no_gc))


if __name__ == "__main__":
    main()
