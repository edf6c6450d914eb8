"""Supervision on Ray: a crash is the worker's business, decided by the same policy as on
threads; it never strands other jobs, loses no queued data, and shutdown stays bounded."""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _waiting import wait_until

from actorflow import (
    ActorCrash,
    ConfigurationError,
    ErrorStrategy,
    Flow,
    FlowRegistry,
    JobStatus,
    Routine,
    Runtime,
    all_slots_ready_policy,
    get_current_job,
)
from actorflow.faults import FaultPlan
from actorflow.store import Store, create_store
from actorflow.store.memory import MemoryBackend

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def _pipeline_with_a_crash(crash_on: int, flow_id: str = "crashy") -> None:
    """first -> middle -> last; ``middle`` crashes its actor on the job whose value is
    ``crash_on`` (once: a marker in the worker state)."""
    first = Routine()
    first.add_slot("in")
    first.add_event("out")
    first.set_logic(lambda sd, m, ws: [first.emit("out", value=v) for v in sd["in"]])

    middle = Routine()
    middle.add_slot("in")
    middle.add_event("out")

    def middle_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        for item in sd["in"]:
            if item["value"] == crash_on:
                raise ActorCrash(f"crash on {crash_on}")
            middle.emit("out", **item)

    middle.set_logic(middle_logic)

    last = Routine()
    last.add_slot("in")

    def last_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("value", sd["in"][0]["value"])

    last.set_logic(last_logic)
    flow = Flow(flow_id)
    flow.add_routine(first, "first")
    flow.add_routine(middle, "middle")
    flow.add_routine(last, "last")
    flow.connect("first", "out", "middle", "in")
    flow.connect("middle", "out", "last", "in")
    FlowRegistry.get_instance().register(flow)


def test_one_crash_among_many_jobs_fails_only_its_job(local_ray: None) -> None:
    _pipeline_with_a_crash(crash_on=150)
    with Runtime(backend="ray") as runtime:
        jobs = [runtime.post("crashy", "first", "in", n)[1] for n in range(600)]
        started = time.monotonic()
        assert runtime.wait_until_all_jobs_finished(timeout=120)
        took = time.monotonic() - started
        metrics = runtime.metrics()
    statuses = Counter(job.status for job in jobs)
    assert statuses == {JobStatus.COMPLETED: 599, JobStatus.FAILED: 1}, statuses
    failed = next(job for job in jobs if job.status == JobStatus.FAILED)
    assert failed.error == "ActorCrash: crash on 150 (routine actor crashed)"
    assert all(job.get_data("value") == n for n, job in enumerate(jobs) if n != 150)
    assert next(iter(metrics["workers"].values()))["restarts"] == 1
    assert took < 60, f"the jobs took {took:.1f} s to end"


def test_a_crash_loses_no_data_queued_in_the_crashed_actor(local_ray: None) -> None:
    """Job "slow" parks its left data in the join; job "boom" completes a join whose logic
    crashes the actor; the successor takes over "slow"'s data, which then joins its right."""
    split = Routine()
    split.add_slot("in")
    split.add_event("left")
    split.add_event("right")
    split.set_logic(
        lambda sd, m, ws: [
            (split.emit("left", tag=t), split.emit("right", tag=t)) for t in sd["in"]
        ]
    )
    right = Routine()
    right.add_slot("in")
    right.add_event("out")

    def right_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        tag = sd["in"][0]["tag"]
        if tag == "slow" and ws.increment("_tries", "slow") == 1:
            raise ConnectionError("not yet")  # retried after 2 s: "slow" waits in the join
        right.emit("out", tag=tag)

    right.set_logic(right_logic)
    right.set_error_handler(ErrorStrategy.RETRY(max_retries=1, delay=2.0))
    join = Routine()
    join.add_slot("left")
    join.add_slot("right")
    join.set_activation_policy(all_slots_ready_policy())

    def join_logic(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        tag = sd["left"][0]["tag"]
        if tag == "boom":
            raise ActorCrash("boom")
        ws.increment("_joined", tag)
        job = get_current_job()
        assert job is not None
        job.set_data("pair", [sd["left"][0]["tag"], sd["right"][0]["tag"]])

    join.set_logic(join_logic)
    flow = Flow("joins")
    flow.add_routine(split, "split")
    flow.add_routine(right, "right")
    flow.add_routine(join, "join")
    flow.connect("split", "left", "join", "left")
    flow.connect("split", "right", "right", "in")
    flow.connect("right", "out", "join", "right")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("joins", worker_id="w")
        _, slow = runtime.post("joins", "split", "in", "slow", worker_id="w")
        _, boom = runtime.post("joins", "split", "in", "boom", worker_id="w")
        assert boom.wait(60) and slow.wait(60)
        restarts = runtime.metrics()["workers"]["w"]["restarts"]
        joined = state.get_routine_state("_joined")
    assert boom.status == JobStatus.FAILED and "ActorCrash: boom" in boom.error
    assert restarts == 1
    # "slow" was waiting in the join when it crashed (its right branch retried for 2 s)
    assert boom.completed_at is not None and slow.completed_at is not None
    assert boom.completed_at < slow.completed_at
    assert slow.status == JobStatus.COMPLETED, slow.error
    assert slow.get_data("pair") == ["slow", "slow"]
    assert joined == {"slow": 1}


def test_past_the_restart_intensity_the_worker_fails_with_its_jobs(local_ray: None) -> None:
    crasher = Routine()
    crasher.add_slot("in")
    crasher.set_logic(lambda sd, m, ws: (_ for _ in ()).throw(ActorCrash("always")))
    doomed = Flow("doomed")
    doomed.add_routine(crasher, "crasher")
    doomed.set_supervision(max_restarts=1, period=60)
    FlowRegistry.get_instance().register(doomed)
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("doomed", worker_id="d")
        jobs = [runtime.post("doomed", "crasher", "in", n, worker_id="d")[1] for n in range(3)]
        assert runtime.wait_until_all_jobs_finished(timeout=60)
        assert state.status == "failed"
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 3
    assert "ActorCrash: always (routine actor crashed)" in jobs[0].error
    assert "more than 1 restarts within 60 s" in (jobs[2].error or "")


def test_one_for_all_restarts_every_routine_actor(local_ray: None) -> None:
    class Counted(Routine):
        def __init__(self, name: str, crash: bool) -> None:
            super().__init__()
            self.name = name
            self.crash = crash
            self.add_slot("in")
            self.add_event("out")

        def on_start(self) -> None:
            self.starts = getattr(self, "starts", 0) + 1

        def logic(self, sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
            ws.update_routine_state(f"_starts_{self.name}", self.starts)
            if self.crash and ws.increment("_crashes", "n") == 1:
                raise ActorCrash("once")
            self.emit("out", **sd["in"][0])

    flow = Flow("all")
    flow.add_routine(Counted("a", crash=False), "a")
    flow.add_routine(Counted("b", crash=True), "b")
    flow.connect("a", "out", "b", "in")
    flow.set_supervision(strategy="one_for_all")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("all", worker_id="w")
        first = runtime.post("all", "a", "in", {"n": 1}, worker_id="w")[1]
        assert first.wait(60)
        second = runtime.post("all", "a", "in", {"n": 2}, worker_id="w")[1]
        assert second.wait(60)
        starts = (state.get_routine_state("_starts_a"), state.get_routine_state("_starts_b"))
    assert first.status == JobStatus.FAILED and second.status == JobStatus.COMPLETED
    assert starts == (2, 2)  # both actors were restarted (on_start ran again)


def test_shutdown_with_a_timeout_stays_bounded_when_a_logic_hangs(local_ray: None) -> None:
    hang = Routine()
    hang.add_slot("in")
    hang.set_logic(lambda sd, m, ws: time.sleep(600))
    flow = Flow("hang")
    flow.add_routine(hang, "hang")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(backend="ray")
    _, job = runtime.post("hang", "hang", "in", 1)
    started = time.monotonic()
    assert runtime.shutdown(timeout=1) is False
    took = time.monotonic() - started
    assert job.status == JobStatus.CANCELLED
    assert took < 5, f"shutdown(timeout=1) took {took:.1f} s"


class _FailsFirstStart(Routine):
    """Its first ``on_start`` (anywhere: the marker is a file) raises."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.add_slot("in")
        self.set_config(marker=marker)

    def on_start(self) -> None:
        marker = Path(self.get_config("marker"))
        if not marker.exists():
            marker.write_text("started once")
            raise OSError("the resource is not ready yet")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("r", "handled")


class _StartsAfter(Routine):
    """Its ``on_start`` waits until the marker exists (the other routine's first start
    crashed), then holds the worker's start a while longer, so the crash is reported while
    the worker is still starting."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.add_slot("in")
        self.set_config(marker=marker)

    def on_start(self) -> None:
        marker = Path(self.get_config("marker"))
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # widens the window: the crash report arrives during the start

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        pass


def test_an_on_start_crash_reported_while_the_worker_starts_is_supervised(
    tmp_path: Path,
) -> None:
    marker = str(tmp_path / "marker")
    flow = Flow("starting")
    flow.add_routine(_FailsFirstStart(marker), "r")
    flow.add_routine(_StartsAfter(marker), "later")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("starting", worker_id="w")
        _, job = runtime.post("starting", "r", "in", 1)
        assert job.wait(30)  # before the fix: the crash was ignored and the job never ran
        assert state.get_routine_state("r") == {"handled": 1}
        assert runtime.metrics()["workers"]["w"]["restarts"] == 1
    assert job.status == JobStatus.COMPLETED


def test_a_stopping_worker_kills_its_actors_only_after_they_learned_of_ended_jobs(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that ends early is told to every routine actor of its worker by a control call
    (``mark_ended``, on the actor's control thread, in no order with ``stop``). A stopping
    worker must let those calls run before it kills the actors: a call killed half-way is
    retried by Ray, and Ray's raylet prints its failure on the driver's output (a docs
    example's checked output caught such a line). Here the actors take a second to learn of
    an ended job; the stop must wait for them, within its budget."""
    from actorflow.backends.ray import _driver
    from actorflow.backends.ray._host import RoutineHost

    learned = str(tmp_path / "learned")

    class SlowToLearn(RoutineHost):
        def mark_ended(self, ended: list[tuple[str, str]]) -> None:
            time.sleep(1.0)  # a busy control thread
            super().mark_ended(ended)
            with open(learned, "a", encoding="utf-8") as out:
                out.write(f"{ended[0][0]} {ended[0][1]}\n")

    made = _driver._remote_classes

    def with_slow_learners(ray: Any) -> tuple[Any, Any, Any]:
        _, state, ledger = made(ray)
        host = ray.remote(
            max_restarts=-1, max_task_retries=-1, concurrency_groups={_driver.CONTROL_GROUP: 1}
        )(SlowToLearn)
        return host, state, ledger

    monkeypatch.setattr(_driver, "_remote_classes", with_slow_learners)
    fails = Routine()
    fails.add_slot("in")

    def refuse(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        raise ValueError("refused")

    fails.set_logic(refuse)
    flow = Flow("ends_early")
    flow.add_routine(fails, "fails")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(backend="ray")
    _, job = runtime.post("ends_early", "fails", "in", 1)
    assert job.wait(60) and job.status == JobStatus.FAILED
    assert runtime.shutdown(timeout=20) is True
    assert Path(learned).read_text(encoding="utf-8").split("\n") == [f"{job.job_id} failed", ""]


def test_a_raising_callback_of_the_ray_drivers_timers_is_counted_in_the_metrics(
    local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a routine actor's process died, the driver replays and checks the worker's
    unfinished jobs on timers of its own. A callback of those that raises is logged and
    counted in ``metrics()["timers"]["callback_errors"]``, as one of the runtime's timers is:
    never a timer that failed unseen."""
    from actorflow.backends.ray import _driver

    def broken_replay(self: Any, worker_id: str, job_ids: list[str]) -> None:
        raise RuntimeError("the replay broke")

    monkeypatch.setattr(_driver.RayBackend, "_replay", broken_replay)
    crashes = Routine()
    crashes.add_slot("in")
    crashes.set_logic(lambda sd, m, ws: None)
    flow = Flow("replayed")
    flow.add_routine(crashes, "crashes")
    FlowRegistry.get_instance().register(flow)
    plan = FaultPlan(seed=1).crash("crashes", on_message=1)
    with Runtime(backend="ray", faults=plan) as runtime:
        runtime.exec("replayed", worker_id="w")
        _, job = runtime.post("replayed", "crashes", "in", 1, worker_id="w")
        assert job.wait(60) and job.status == JobStatus.FAILED  # the crashed job
        wait_until(
            lambda: runtime.metrics()["timers"]["callback_errors"] == 1,
            "the replay timer's error to be counted",
            timeout=60,
        )


def test_a_job_stalled_after_a_process_death_fails_once_it_makes_no_progress(
    local_ray: None, tmp_path: Path
) -> None:
    """After a routine actor's process died, each unfinished job of the worker is replayed
    and watched: it fails with a ``JobTimeoutError`` once it made no progress for the fault
    plan's ``lost_message_timeout``, counted from its last report, not from the death.

    Job "held" waits in ``slow`` (its logic hangs) when another routine's process dies. Its
    replay runs ``entry`` again about 2 s after the restart: a report, so the check at 6 s
    looks again later, and "held" fails 6 s after that report (about 8 s after the restart),
    with no timer callback raising on the way."""
    entered = tmp_path / "entered"
    handled = tmp_path / "handled"
    entry = Routine()
    entry.add_slot("in")
    entry.add_event("out")
    entry.set_config(handled=str(handled))

    def forward(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        with open(entry.get_config("handled"), "a", encoding="utf-8") as out:
            out.write(f"{sd['in'][0]}\n")
        entry.emit("out", value=sd["in"][0])

    entry.set_logic(forward)
    slow = Routine()
    slow.add_slot("in")
    slow.set_config(marker=str(entered))

    def hang(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        Path(slow.get_config("marker")).write_text("in slow")
        time.sleep(600)

    slow.set_logic(hang)
    crashes = Routine()
    crashes.add_slot("in")
    crashes.set_logic(lambda sd, m, ws: None)
    flow = Flow("stalls")
    flow.add_routine(entry, "entry")
    flow.add_routine(slow, "slow")
    flow.add_routine(crashes, "crashes")
    flow.connect("entry", "out", "slow", "in")
    FlowRegistry.get_instance().register(flow)
    plan = FaultPlan(seed=1, lost_message_timeout=6.0).crash("crashes", on_message=1)
    runtime = Runtime(backend="ray", faults=plan)
    try:
        runtime.exec("stalls", worker_id="w")
        _, held = runtime.post("stalls", "entry", "in", 1, worker_id="w")
        wait_until(entered.exists, "job 'held' to reach the hanging routine", timeout=60)
        crashed_at = time.monotonic()
        _, crashed = runtime.post("stalls", "crashes", "in", 1, worker_id="w")
        assert crashed.wait(60) and crashed.status == JobStatus.FAILED
        assert held.wait(60)
        took = time.monotonic() - crashed_at
        callback_errors = runtime.metrics()["timers"]["callback_errors"]
    finally:
        runtime.shutdown(timeout=2)
    assert held.status == JobStatus.FAILED
    assert held.error is not None and "made no progress for 6 s after a routine actor's" in (
        held.error
    )
    assert callback_errors == 0
    assert handled.read_text(encoding="utf-8") == "1\n1\n"  # the first time and the replay
    # its replay's report at about 2 s put the failure off: not at the first check, at 6 s
    assert took >= 7.5, f"job 'held' failed {took:.1f} s after the process died"


class _LoadsOnlyInTheDriver(Routine):
    """A routine that cannot be unpickled in any other process (as one whose module is missing
    on a Ray node)."""

    driver_pid = 0

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        return None

    def __setstate__(self, state: dict[str, Any]) -> None:
        if os.getpid() != type(self).driver_pid:
            raise RuntimeError("this routine cannot be loaded here")
        self.__dict__.update(state)


def test_a_routine_that_cannot_be_loaded_on_its_node_fails_the_start_at_once(
    local_ray: None,
) -> None:
    """It used to make Ray restart the routine's actor over and over while ``exec`` waited
    for it, forever."""
    _LoadsOnlyInTheDriver.driver_pid = os.getpid()
    flow = Flow("unloadable")
    flow.add_routine(_LoadsOnlyInTheDriver(), "r")
    FlowRegistry.get_instance().register(flow)
    with Runtime(backend="ray") as runtime:
        started = time.monotonic()
        with pytest.raises(ConfigurationError) as refused:
            runtime.exec("unloadable", worker_id="w")
        assert time.monotonic() - started < 60
        message = str(refused.value)
        assert message.startswith("routine 'r' of worker 'w' cannot start on Ray node ")
        assert message.endswith(
            "its flow could not be loaded there (RuntimeError: this routine cannot be loaded here)"
        )
        # nothing of the worker that did not start is kept for actors to restart with
        import ray

        ledger: Any = getattr(runtime._backend, "ledger")  # noqa: B009  # Ray's alone
        assert ray.get(ledger.wired.remote()) == []


def _register_counter(flow_id: str) -> None:
    """Register a flow of one routine ``r`` that increments its own ``n`` per message."""
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda sd, m, ws: ws.increment("r", "n"))
    flow = Flow(flow_id)
    flow.add_routine(counter, "r")
    FlowRegistry.get_instance().register(flow)


_DRIVER = {"pid": 0}  # set by the test; 0 in a process that imports this module afresh


def _store_made_only_in_the_driver() -> Store:
    """A state store that cannot be made in any other process (as one whose server cannot be
    reached from a Ray node)."""
    if os.getpid() != _DRIVER["pid"]:
        raise RuntimeError("the store cannot be reached from here")
    return Store(MemoryBackend())


def test_a_state_store_that_cannot_be_made_on_its_node_fails_the_start_at_once(
    local_ray: None,
) -> None:
    """It used to make Ray restart the worker's state actor over and over while ``exec``
    waited for it, forever."""
    _DRIVER["pid"] = os.getpid()
    _register_counter("storeless")
    with Runtime(backend="ray", state_store=_store_made_only_in_the_driver) as runtime:
        started = time.monotonic()
        with pytest.raises(ConfigurationError) as refused:
            runtime.exec("storeless", worker_id="w")
        assert time.monotonic() - started < 60
        message = str(refused.value)
        assert message.startswith("the state of worker 'w' cannot be kept on Ray node ")
        assert message.endswith(
            "its state_store could not be made there "
            "(RuntimeError: the store cannot be reached from here)"
        )
        assert runtime.list_workers() == []


def _store_until(marker: str, path: str) -> Store:
    """A SQLite state store that cannot be made once ``marker`` exists (its node lost it)."""
    if os.path.exists(marker):
        raise RuntimeError("the store's disk is gone")
    return create_store("sqlite", path=path)


def test_a_state_actor_restarted_without_its_store_refuses_every_state_call(
    local_ray: None, tmp_path: Path
) -> None:
    """Ray restarts the state actor after its process died, and the store cannot be made
    there any more: the worker's state calls raise instead of running without their store."""
    import ray

    marker = tmp_path / "gone"
    factory = functools.partial(_store_until, str(marker), str(tmp_path / "state.sqlite3"))
    _register_counter("loses_its_store")
    with Runtime(backend="ray", state_store=factory) as runtime:
        state = runtime.exec("loses_its_store", worker_id="w")
        state.increment("_totals", "n")
        marker.write_text("", encoding="utf-8")
        workers: Any = getattr(runtime, "_workers")  # noqa: B009  # the Ray worker's actor
        supervisor = workers["w"].supervisor
        before = ray.get(supervisor.process.remote())["pid"]
        ray.kill(supervisor, no_restart=False)  # the process dies; Ray restarts the actor
        wait_until(
            lambda: ray.get(supervisor.process.remote())["pid"] != before,
            "the state actor to run in a new process",
            timeout=60,
        )
        with pytest.raises(ConfigurationError, match="its state_store could not be made there"):
            state.increment("_totals", "n")
        with pytest.raises(ConfigurationError, match="the store's disk is gone"):
            state.get_routine_state("_totals")


class _LeaseReleaseHangs(MemoryBackend):
    """A memory store's backend whose delete of the worker's lease hangs (as a store whose
    server stopped answering would): the lease cannot be released when the worker stops."""

    def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        if any(key == guard and data is None for key, data in writes):
            time.sleep(600)
        return super().write_many_if(guard, expected, writes, ttl)


def _store_whose_lease_release_hangs() -> Store:
    return Store(_LeaseReleaseHangs())


def test_shutdown_with_a_timeout_stays_bounded_when_the_state_store_hangs(
    local_ray: None,
) -> None:
    """The state owner's close (the lease's release) is waited for at most the shutdown's
    timeout; after that the owner is killed."""
    _register_counter("hangs_at_close")
    runtime = Runtime(backend="ray", state_store=_store_whose_lease_release_hangs)
    state = runtime.exec("hangs_at_close", worker_id="w")
    _, job = runtime.post("hangs_at_close", "r", "in", 1)
    assert job.wait(60) and job.status == JobStatus.COMPLETED
    assert state.get_routine_state("r") == {"n": 1}
    started = time.monotonic()
    assert runtime.shutdown(timeout=2) is True
    took = time.monotonic() - started
    assert took < 15, f"shutdown(timeout=2) took {took:.1f} s"
