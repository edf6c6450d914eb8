"""Shutdown, signals and the end of jobs under attack: a signal that lands while the main
thread holds the runtime's lock, a second signal while the shutdown hangs, two shutdowns at
once, a message of a job that ended and was forgotten."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from _waiting import wait_until, waiting_inside

from actorflow import Flow, FlowRegistry, Routine, Runtime

ROOT = Path(__file__).resolve().parents[2]
EXIT_DEADLINE = 20.0  # seconds a child has to end once nothing holds it any more

# A service whose exec(restore=True) reads a store that blocks until the test writes a line to
# the child's stdin: the main thread then holds the runtime's lock. The child announces the
# moment ("in exec"), and prints "shutdown started" when the signal's shutdown begins (on
# whichever thread runs it), so the test acts at known points, never after a sleep.
CHILD = textwrap.dedent(
    """
    import signal, sys
    def say(text):  # one write per line: lines from two threads never run together
        sys.stdout.write(text + "\\n")
        sys.stdout.flush()
    from actorflow import Flow, FlowRegistry, Routine, Runtime
    from actorflow.store import create_store

    class GatedStore:
        \"\"\"A memory store whose key listing (what restore reads) waits for the test.\"\"\"
        def __init__(self, inner):
            self._inner = inner
        def scope(self, name):
            return GatedStore(self._inner.scope(name))
        def _gate(self):
            say("in exec")
            sys.stdin.readline()
        def keys(self, *args, **kwargs):
            self._gate()
            return self._inner.keys(*args, **kwargs)
        def range_get(self, *args, **kwargs):
            self._gate()
            return self._inner.range_get(*args, **kwargs)
        def __getattr__(self, name):
            return getattr(self._inner, name)

    class Service(Routine):
        def __init__(self):
            super().__init__()
            self.add_slot("in")
        def logic(self, sd, m, ws):
            pass
        def on_stop(self):
            say("on_stop ran")

    shutdown = Runtime.shutdown
    def announced_shutdown(self, *args, **kwargs):
        say("shutdown started")
        return shutdown(self, *args, **kwargs)
    Runtime.shutdown = announced_shutdown

    flow = Flow("svc")
    flow.add_routine(Service(), "r")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(state_store=GatedStore(create_store("memory")))
    runtime.install_signal_handlers(timeout=5)
    runtime.exec("svc", "w", restore=True)
    say("exec done")
    """
)


def start_child() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def expect_line(child: subprocess.Popen[str], line: str) -> None:
    assert child.stdout is not None
    got = child.stdout.readline().strip()
    assert got == line, f"expected {line!r}, got {got!r}"


def wait_for_exit(child: subprocess.Popen[str]) -> tuple[int | None, str, str]:
    """(exit status or None if it still ran after the deadline, stdout rest, stderr)."""
    try:
        out, err = child.communicate(timeout=EXIT_DEADLINE)
        return child.returncode, out, err
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        return None, out, err


@pytest.mark.timeout(60)
def test_sigterm_while_main_thread_holds_the_runtime_lock_still_ends_the_process() -> None:
    child = start_child()
    assert child.stdin is not None
    expect_line(child, "in exec")  # restore() is reading the store, under the runtime's lock
    child.send_signal(signal.SIGTERM)
    expect_line(child, "shutdown started")
    child.stdin.write("go\n")  # let exec finish and release the lock
    child.stdin.flush()
    status, out, err = wait_for_exit(child)
    assert status == -signal.SIGTERM, f"status {status}; stdout {out!r}; stderr {err}"
    # the shutdown's on_stop may print before the main thread prints "exec done"
    assert sorted(out.splitlines()) == ["exec done", "on_stop ran"]


@pytest.mark.timeout(60)
def test_second_sigterm_ends_the_process_while_the_shutdown_hangs() -> None:
    child = start_child()
    expect_line(child, "in exec")
    child.send_signal(signal.SIGTERM)
    expect_line(child, "shutdown started")  # it waits for the lock the main thread holds
    child.send_signal(signal.SIGTERM)  # the store is never released: only this can end it
    status, out, err = wait_for_exit(child)
    assert status == -signal.SIGTERM, f"status {status}; stdout {out!r}; stderr {err}"
    assert out == ""


def actorflow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("actorflow-") and t.is_alive()]


@pytest.mark.timeout(30)
def test_concurrent_shutdown_waits_for_the_one_under_way_and_returns_its_result() -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            started.set()
            assert release.wait(20)

    flow = Flow("slow")
    flow.add_routine(Slow(), "r")
    FlowRegistry.get_instance().register(flow)
    before = set(actorflow_threads())
    runtime = Runtime()
    _, job = runtime.post("slow", "r", "in", 1)
    assert started.wait(10)
    results: dict[str, Any] = {}

    def first() -> None:  # cancels the job, then waits for the routine's thread to stop
        results["first"] = runtime.shutdown(wait=False)

    def second() -> None:
        results["second"] = runtime.shutdown()
        results["alive when second returned"] = [
            t.name for t in actorflow_threads() if t not in before
        ]

    one = threading.Thread(target=first)
    one.start()
    assert job.wait(10) and job.status == "cancelled"  # the first shutdown is under way
    two = threading.Thread(target=second)
    two.start()
    wait_until(
        lambda: not two.is_alive() or waiting_inside(two, "shutdown"),
        "the second shutdown to wait or return",
    )
    assert two.is_alive(), "a second shutdown returned while the first was still draining"
    release.set()
    one.join(10)
    two.join(10)
    assert not one.is_alive() and not two.is_alive()
    assert results == {"first": False, "second": False, "alive when second returned": []}
    assert runtime.shutdown() is False  # later calls: the same result


@pytest.mark.timeout(30)
def test_a_shorter_timeout_in_a_concurrent_shutdown_cancels_jobs_sooner() -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            started.set()
            release.wait(20)

    flow = Flow("slow")
    flow.add_routine(Slow(), "r")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime()
    _, job = runtime.post("slow", "r", "in", 1)
    assert started.wait(10)
    results: dict[str, bool] = {}
    patient = threading.Thread(target=lambda: results.setdefault("first", runtime.shutdown()))
    patient.start()  # no timeout: it would wait for the job as long as it runs
    try:
        wait_until(lambda: waiting_inside(patient, "shutdown"), "the graceful wait")
        assert not job.done  # the graceful wait is under way
        # wait=False brings the deadline to now: the job is cancelled, not waited for
        second = threading.Thread(
            target=lambda: results.setdefault("second", runtime.shutdown(wait=False))
        )
        second.start()
        assert job.wait(10) and job.status == "cancelled"
    finally:
        release.set()
    patient.join(10)
    second.join(10)
    assert results == {"first": False, "second": False}


def test_shutdown_refuses_a_timeout_no_timer_can_wait_for() -> None:
    from actorflow import InvalidDurationError

    runtime = Runtime()
    try:
        with pytest.raises(InvalidDurationError, match="timeout"):
            runtime.shutdown(timeout=float("nan"))
        with pytest.raises(InvalidDurationError, match="timeout"):
            runtime.install_signal_handlers(timeout=-1)
    finally:
        assert runtime.shutdown() is True


def one_slot(logic: Any) -> Routine:
    r = Routine()
    r.add_slot("in")
    r.set_logic(logic)
    return r


# -- strict mode: a job that ended and dropped out of retention ---------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("retention", [0, 1])
def test_a_cancelled_job_that_dropped_out_of_retention_never_runs(
    strict: bool, retention: int
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[Any] = []

    def logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        value = sd["in"][0]
        ran.append(value)
        if value == "block":
            started.set()
            assert release.wait(20)

    flow = Flow("gate")
    flow.add_routine(one_slot(logic), "r")
    flow.add_routine(one_slot(lambda sd, m, ws: None), "other")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=strict, job_retention=retention) as runtime:
        _, blocker = runtime.post("gate", "r", "in", "block")
        assert started.wait(10)
        _, victim = runtime.post("gate", "r", "in", "victim")  # waits behind the blocker
        assert runtime.cancel_job(victim.job_id)
        for _ in range(2):  # finished jobs that push the victim out of retention
            _, other = runtime.post("gate", "other", "in", None)
            assert other.wait(10)
        assert runtime.get_job(victim.job_id) is None
        _, last = runtime.post("gate", "r", "in", "last")  # queued behind the victim
        release.set()
        assert last.wait(10) and blocker.wait(10)
        assert ran == ["block", "last"]
        assert [
            (letter["job_id"], letter["routine_id"], letter["reason"])
            for letter in runtime.dead_letters()
        ] == [(victim.job_id, "r", "job cancelled")]
