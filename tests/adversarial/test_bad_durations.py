"""Durations no timer can wait for are refused where they are passed; timers and reapers
outlive whatever the callbacks they run raise."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from actorflow import (
    ActorCrash,
    ErrorStrategy,
    Flow,
    FlowRegistry,
    InvalidDurationError,
    JobStatus,
    Routine,
    Runtime,
    Supervision,
    all_slots_ready_policy,
    batch_size_policy,
    time_interval_policy,
)
from actorflow._clock import SystemClock
from actorflow._durations import MAX_SECONDS
from actorflow.cli import main as cli_main
from actorflow.engine.timers import TimerService
from actorflow.errors import ConfigurationError
from actorflow.experiments import run_experiment
from actorflow.faults import FaultPlan
from actorflow.store import (
    InvalidTTLError,
    MemoryStore,
    SqliteStore,
    TypedStore,
    create_async_store,
    create_store,
)
from actorflow.testing import DeterministicRuntime
from actorflow.testing._virtual_time import VirtualClock, VirtualTimers

NAN, INF = float("nan"), float("inf")
# Not finite, longer than any platform timer can wait, or negative.
BAD = [
    pytest.param(NAN, id="nan"),
    pytest.param(INF, id="inf"),
    pytest.param(-INF, id="-inf"),
    pytest.param(1e300, id="1e300"),
    pytest.param(MAX_SECONDS * 2, id="beyond-TIMEOUT_MAX"),
    pytest.param(-1, id="-1"),
]
BAD_TEXT = ["nan", "inf", "-inf", "1e300", "-1"]
WAIT = 10.0  # generous bound for things that happen within milliseconds


def assert_names_the_range(error: BaseException, name: str) -> None:
    """The message names the argument, the allowed range and the value given."""
    message = str(error)
    assert name in message, message
    assert re.search(rf"finite number of seconds >=? 0 and at most {int(MAX_SECONDS)}", message), (
        message
    )


def single(flow_id: str, routine: Routine, **supervision: Any) -> Flow:
    flow = Flow(flow_id)
    flow.add_routine(routine, "r")
    if supervision:
        flow.set_supervision(**supervision)
    FlowRegistry.get_instance().register(flow)
    return flow


def make(logic: Callable[..., Any], *, policy: Any = None, strategy: Any = None) -> Routine:
    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(logic)
    if policy is not None:
        routine.set_activation_policy(policy)
    if strategy is not None:
        routine.set_error_handler(strategy)
    return routine


def echo_flow(flow_id: str = "d") -> Flow:
    return single(flow_id, make(lambda sd, m, ws: None))


def actorflow_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("actorflow-") and t.is_alive()}


@contextlib.contextmanager
def runtime_of(**options: Any) -> Iterator[Runtime]:
    """A runtime shut down at the end, without leaking a thread."""
    before = actorflow_threads()
    rt = Runtime(**options)
    try:
        yield rt
    finally:
        rt.shutdown(wait=False)
        assert not {t.name for t in actorflow_threads() - before}


# -- entry points ------------------------------------------------------------------------------


def _post_timeout(rt: Runtime, v: float) -> None:
    echo_flow()
    try:
        rt.post("d", "r", "in", 1, timeout=v)
    finally:
        assert rt.list_jobs() == []  # nothing was posted


def _shutdown_timeout(rt: Runtime, v: float) -> None:
    try:
        rt.shutdown(timeout=v)
    finally:
        assert not rt.closed  # refused before anything was shut down


def _install_signal_handlers(rt: Runtime, v: float) -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        rt.install_signal_handlers(timeout=v, signals=(signal.SIGUSR1,))
    finally:
        installed = signal.getsignal(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, previous)
        assert installed is previous  # nothing was installed


def _job_wait(rt: Runtime, v: float) -> None:
    single("gather", make(lambda sd, m, ws: None, policy=batch_size_policy(2, timeout=None)))
    _, job = rt.post("gather", "r", "in", 1)  # stays unfinished
    job.wait(v)


def _deterministic(action: Callable[[Runtime, float], Any]) -> Callable[[Runtime, float], None]:
    def run(_rt: Runtime, v: float) -> None:
        with DeterministicRuntime(seed=1) as rt:
            single("gather", make(lambda sd, m, ws: None, policy=batch_size_policy(2, None)))
            rt.post("gather", "r", "in", 1)
            before = rt.now
            try:
                action(rt, v)
            finally:
                assert rt.now == before  # virtual time did not move

    return run


RUNTIME_PLACES: dict[str, Callable[[Runtime, float], Any]] = {
    "post(timeout=)": _post_timeout,
    "Runtime(post_timeout=)": lambda rt, v: Runtime(post_timeout=v),
    "Flow.set_job_timeout": lambda rt, v: echo_flow().set_job_timeout(v),
    "wait_until_all_jobs_finished(timeout=)": lambda rt, v: rt.wait_until_all_jobs_finished(v),
    "shutdown(timeout=)": _shutdown_timeout,
    "install_signal_handlers(timeout=)": _install_signal_handlers,
    "JobContext.wait(timeout=)": _job_wait,
    "deterministic advance()": _deterministic(lambda rt, v: rt.advance(v)),
    "deterministic wait_until_all_jobs_finished()": _deterministic(
        lambda rt, v: rt.wait_until_all_jobs_finished(v)
    ),
    "deterministic JobContext.wait()": _deterministic(lambda rt, v: rt.list_jobs()[0].wait(v)),
    "Probe.expect(timeout=)": lambda rt, v: rt.probe("r", "out").expect(timeout=v),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "plain"])
@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("place", list(RUNTIME_PLACES))
def test_runtime_refuses_durations_no_timer_can_wait_for(
    place: str, value: float, strict: bool
) -> None:
    with runtime_of(strict=strict) as rt:
        with pytest.raises(InvalidDurationError) as caught:
            RUNTIME_PLACES[place](rt, value)
    assert_names_the_range(caught.value, "timeout" if "advance" not in place else "seconds")


@pytest.mark.parametrize(
    "place",
    [
        "RETRY(delay=)",
        "as_error_strategy('retry', delay=)",
        "Routine.set_error_handler('retry', delay=)",
    ],
)
@pytest.mark.parametrize("value", BAD)
def test_error_strategy_refuses_bad_retry_delays(place: str, value: float) -> None:
    from actorflow.error_strategies import as_error_strategy

    calls: dict[str, Callable[[], Any]] = {
        "RETRY(delay=)": lambda: ErrorStrategy.RETRY(delay=value),
        "as_error_strategy('retry', delay=)": lambda: as_error_strategy("retry", delay=value),
        "Routine.set_error_handler('retry', delay=)": lambda: Routine().set_error_handler(
            "retry", delay=value
        ),
    }
    with pytest.raises(InvalidDurationError) as caught:
        calls[place]()
    assert_names_the_range(caught.value, "delay")


@pytest.mark.parametrize("value", [NAN, INF, -INF, -1, 0.5])
def test_error_strategy_refuses_a_backoff_that_is_not_a_finite_factor_of_at_least_1(
    value: float,
) -> None:
    with pytest.raises(InvalidDurationError, match=r"backoff must be a finite number >= 1"):
        ErrorStrategy.RETRY(backoff=value)


@pytest.mark.parametrize("attempt", [1, 2, 1_000, 10**6, 10**30])
def test_computed_retry_delays_never_overflow(attempt: int) -> None:
    for strategy in (
        ErrorStrategy.RETRY(max_retries=10**6, delay=0.1, backoff=2.0),
        ErrorStrategy.RETRY(delay=MAX_SECONDS, backoff=1e300),
        ErrorStrategy.RETRY(delay=1e-300, backoff=1e300),
        ErrorStrategy.RETRY(delay=0, backoff=1e300),
    ):
        seconds = strategy.retry_delay(attempt)
        assert 0 <= seconds <= MAX_SECONDS
        if strategy.delay == 0:
            assert seconds == 0
    assert ErrorStrategy.RETRY(delay=0.1, backoff=2.0).retry_delay(3) == pytest.approx(0.4)
    assert ErrorStrategy.RETRY(delay=0.1, backoff=2.0).retry_delay(10**6) == MAX_SECONDS


@pytest.mark.parametrize("name", ["period", "backoff_base", "backoff_max", "set_supervision"])
@pytest.mark.parametrize("value", BAD)
def test_supervision_refuses_bad_durations(name: str, value: float) -> None:
    with pytest.raises(InvalidDurationError) as caught:
        if name == "set_supervision":
            Flow("sup").set_supervision(period=value)
        else:
            Supervision(**{name: value})
    assert_names_the_range(caught.value, "period" if name == "set_supervision" else name)


def test_supervision_keeps_its_zero_rules_and_restart_delays_never_overflow() -> None:
    with pytest.raises(InvalidDurationError, match="period"):
        Supervision(period=0)
    assert Supervision(backoff_base=0, backoff_max=0).restart_delay(3) == 0
    supervision = Supervision(max_restarts=10**9, backoff_base=1e-300, backoff_max=MAX_SECONDS)
    for restarts in (1, 1_024, 10**6, 10**9):
        assert 0 < supervision.restart_delay(restarts) <= MAX_SECONDS
    assert Supervision(backoff_base=0.1, backoff_max=5.0).restart_delay(10**6) == 5.0


@pytest.mark.parametrize("value", [*BAD, pytest.param(0, id="0")])
def test_worker_state_cache_refuses_bad_ttls(runtime: Runtime, value: float) -> None:
    echo_flow()
    state = runtime.exec("d")
    with pytest.raises(InvalidDurationError) as caught:
        state.cache("sessions", ttl=value)
    assert_names_the_range(caught.value, "ttl")


POLICY_PLACES: dict[str, Callable[[float], Any]] = {
    "batch_size_policy(timeout=)": lambda v: batch_size_policy(3, timeout=v),
    "all_slots_ready_policy(timeout=)": lambda v: all_slots_ready_policy(timeout=v),
    "time_interval_policy(seconds)": time_interval_policy,
}


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("place", list(POLICY_PLACES))
def test_activation_policies_refuse_bad_durations(place: str, value: float) -> None:
    with pytest.raises(InvalidDurationError) as caught:
        POLICY_PLACES[place](value)
    assert_names_the_range(caught.value, "seconds" if "interval" in place else "timeout")


FAULT_PLACES: dict[str, Callable[[float], Any]] = {
    "FaultPlan(lost_message_timeout=)": lambda v: FaultPlan(lost_message_timeout=v),
    "delay(seconds)": lambda v: FaultPlan().delay(v),
    "delay(jitter=)": lambda v: FaultPlan().delay(0.01, jitter=v),
    "reorder(hold=)": lambda v: FaultPlan().reorder(window=2, hold=v),
}


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("place", list(FAULT_PLACES))
def test_fault_plans_refuse_bad_durations(place: str, value: float) -> None:
    with pytest.raises(InvalidDurationError) as caught:
        FAULT_PLACES[place](value)
    name = place.split("(")[1].rstrip("=)") or "seconds"
    assert_names_the_range(caught.value, name)


def test_a_fault_delay_and_its_jitter_together_stay_within_what_a_timer_can_wait() -> None:
    FaultPlan().delay(MAX_SECONDS / 2, jitter=MAX_SECONDS / 2)
    with pytest.raises(InvalidDurationError, match="seconds \\+ jitter"):
        FaultPlan().delay(MAX_SECONDS, jitter=MAX_SECONDS)


@pytest.mark.parametrize("name", ["job_timeout", "wait"])
@pytest.mark.parametrize("value", BAD)
def test_experiments_refuse_bad_durations_before_running_anything(name: str, value: float) -> None:
    ran: list[Any] = []
    single("exp", make(lambda sd, m, ws: ran.append(sd)))
    with pytest.raises(InvalidDurationError) as caught:
        run_experiment("exp", [("r", "in", 1)], FaultPlan(), **{name: value})
    assert_names_the_range(caught.value, name)
    assert ran == []


# -- stores ------------------------------------------------------------------------------------


def _store_places(tmp_path: Path) -> dict[str, Callable[[Any], Any]]:
    def sync(kind: str) -> Any:
        return create_store(kind, **({"path": str(tmp_path / "s.db")} if kind == "sqlite" else {}))

    def run_async(kind: str, call: Callable[[Any], Any]) -> Any:
        async def go() -> None:
            options = {"path": str(tmp_path / "a.db")} if kind == "sqlite" else {}
            async with create_async_store(kind, **options) as store:
                await call(store)

        asyncio.run(go())

    def with_sync(kind: str, call: Callable[[Any], Any]) -> Any:
        with sync(kind) as store:
            try:
                call(store)
            finally:
                assert store.keys() == []

    places: dict[str, Callable[[Any], Any]] = {}
    for kind in ("memory", "sqlite"):
        path = {"path": str(tmp_path / f"{kind}.db")} if kind == "sqlite" else {}
        places[f"{kind} default_ttl"] = lambda v, kind=kind, path=path: create_store(
            kind, default_ttl=v, **path
        )
        places[f"{kind} put(ttl=)"] = lambda v, kind=kind: with_sync(
            kind, lambda s: s.put("k", 1, ttl=v)
        )
        places[f"{kind} update(ttl=)"] = lambda v, kind=kind: with_sync(
            kind, lambda s: s.update("k", lambda old: 1, ttl=v)
        )
        places[f"{kind} scope put(ttl=)"] = lambda v, kind=kind: with_sync(
            kind, lambda s: s.scope("u").put("k", 1, ttl=v)
        )
        places[f"{kind} typed put(ttl=)"] = lambda v, kind=kind: with_sync(
            kind, lambda s: TypedStore(s, int).put("k", 1, ttl=v)
        )
        places[f"{kind} async default_ttl"] = lambda v, kind=kind, path=path: create_async_store(
            kind, default_ttl=v, **path
        )
        places[f"{kind} async put(ttl=)"] = lambda v, kind=kind: run_async(
            kind, lambda s: s.put("k", 1, ttl=v)
        )
        places[f"{kind} async update(ttl=)"] = lambda v, kind=kind: run_async(
            kind, lambda s: s.update("k", lambda old: 1, ttl=v)
        )
    places["MemoryStore(default_ttl=)"] = lambda v: MemoryStore(default_ttl=v)
    places["SqliteStore(default_ttl=)"] = lambda v: SqliteStore(
        str(tmp_path / "c.db"), default_ttl=v
    )
    places["SqliteStore(busy_timeout=)"] = lambda v: SqliteStore(
        str(tmp_path / "b.db"), busy_timeout=v
    )
    places["redis default_ttl"] = lambda v: create_store("redis", default_ttl=v)
    places["redis socket_timeout"] = lambda v: create_store("redis", socket_timeout=v)
    places["redis socket_connect_timeout"] = lambda v: create_store(
        "redis", socket_connect_timeout=v
    )
    places["redis async socket_timeout"] = lambda v: create_async_store("redis", socket_timeout=v)
    return places


STORE_PLACES = list(_store_places(Path("/nonexistent")))


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("place", STORE_PLACES)
def test_stores_refuse_bad_ttls_and_timeouts(place: str, value: float, tmp_path: Path) -> None:
    with pytest.raises(InvalidDurationError) as caught:
        _store_places(tmp_path)[place](value)
    assert isinstance(caught.value, ConfigurationError)
    if "ttl" in place:
        assert isinstance(caught.value, InvalidTTLError)  # one except catches both
    name = re.search(r"(default_ttl|ttl|busy_timeout|socket_connect_timeout|socket_timeout)", place)
    assert name is not None
    assert_names_the_range(caught.value, name.group(1))


def test_store_ttl_errors_keep_their_types_for_non_numbers() -> None:
    with MemoryStore() as store:
        for bad in ("10", True, [1]):
            with pytest.raises(InvalidTTLError, match="number of seconds or a timedelta"):
                store.put("k", 1, ttl=bad)  # type: ignore[arg-type]
    assert issubclass(InvalidTTLError, InvalidDurationError)


# -- the command line --------------------------------------------------------------------------

CLI_APP = """\
from actorflow import Flow, Routine

r = Routine()
r.add_slot("in")
r.set_logic(lambda sd, m, ws: None)
flow = Flow("cli_durations")
flow.add_routine(r, "r")
"""

CLI_PLACES = {
    "run --timeout": ["run", "{app}:flow", "--post", "r.in=1", "--timeout={v}"],
    "chaos --timeout": ["chaos", "{app}:flow", "--post", "r.in=1", "--timeout={v}"],
    "chaos --delay": ["chaos", "{app}:flow", "--post", "r.in=1", "--delay=r:{v}"],
    "inspect --timeout": ["inspect", "http://127.0.0.1:9", "--timeout={v}"],
}


@pytest.mark.parametrize("value", BAD_TEXT)
@pytest.mark.parametrize("place", list(CLI_PLACES))
def test_cli_refuses_bad_durations_as_usage_errors(place: str, value: str, tmp_path: Path) -> None:
    app = tmp_path / f"durations_app_{abs(hash((place, value)))}.py"
    app.write_text(CLI_APP, encoding="utf-8")
    args = [arg.format(app=app, v=value) for arg in CLI_PLACES[place]]
    result = CliRunner().invoke(cli_main, args, prog_name="actorflow", catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(
        rf"finite number of seconds >=? 0 and at most {int(MAX_SECONDS)}",
        " ".join(result.stderr.split()),
    ), result.stderr


# -- timers outlive their callbacks -------------------------------------------------------------


class TrapClock(SystemClock):
    """The real clock, except that its first wall-clock reading on the timer thread raises
    ActorCrash: the first timer callback that stamps a time (a job timeout writing its trace
    entry) raises a BaseException on the timer thread."""

    def __init__(self) -> None:
        self.armed = True

    def wall(self) -> float:  # type: ignore[override]
        if self.armed and threading.current_thread().name == "actorflow-timers":
            self.armed = False
            raise ActorCrash("the clock failed on the timer thread")
        return time.time()


def _attack_with_post(value: float) -> Callable[[Runtime], None]:
    def attack(rt: Runtime) -> None:
        single("victim", make(lambda sd, m, ws: None, policy=batch_size_policy(2, None)))
        with contextlib.suppress(InvalidDurationError):  # refused now; accepted before
            rt.post("victim", "r", "in", 1, timeout=value)

    return attack


def _attack_with_a_raising_callback(rt: Runtime) -> None:
    single("victim", make(lambda sd, m, ws: None, policy=batch_size_policy(2, None)))
    _, job = rt.post("victim", "r", "in", 1, timeout=0.01)  # its timeout callback raises
    assert not job.wait(0)


ATTACKS: dict[str, Callable[[Runtime], None]] = {
    "post(timeout=inf)": _attack_with_post(INF),
    "post(timeout=1e300)": _attack_with_post(1e300),
    "post(timeout=nan)": _attack_with_post(NAN),
    "a timer callback raised ActorCrash": _attack_with_a_raising_callback,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_job_timeout_retry_backoff_batch_timeout_and_restart_backoff_fire_after_an_attack(
    attack: str,
) -> None:
    tries: list[int] = []

    def flaky(sd: Any, m: Any, ws: Any) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("first try fails")

    crashes: list[int] = []

    def crashy(sd: Any, m: Any, ws: Any) -> None:
        crashes.append(1)
        if len(crashes) == 1:
            raise ActorCrash("first message crashes the actor")

    single("timeouts", make(lambda sd, m, ws: None, policy=batch_size_policy(2, None)))
    single("retries", make(flaky, strategy=ErrorStrategy.RETRY(max_retries=2, delay=0.05)))
    single("batches", make(lambda sd, m, ws: None, policy=batch_size_policy(10, timeout=0.05)))
    single("restarts", make(crashy), backoff_base=0.05, backoff_max=0.05)
    trap = TrapClock()
    with runtime_of(clock=trap) as rt:
        ATTACKS[attack](rt)
        if attack != "a timer callback raised ActorCrash":
            trap.armed = False
        _, timed = rt.post("timeouts", "r", "in", 1, timeout=0.05)
        _, retried = rt.post("retries", "r", "in", 1)
        _, batched = rt.post("batches", "r", "in", 1)
        _, crashed = rt.post("restarts", "r", "in", 1)
        assert crashed.wait(WAIT) and crashed.status == JobStatus.FAILED
        _, restarted = rt.post("restarts", "r", "in", 2)  # handled once the restart fires

        assert timed.wait(WAIT), "the job timeout never fired"
        assert timed.status == JobStatus.FAILED and "timed out" in (timed.error or "")
        assert retried.wait(WAIT), "the retry backoff never fired"
        assert retried.status == JobStatus.COMPLETED and len(tries) == 2
        assert batched.wait(WAIT), "the batch timeout never fired"
        assert batched.status == JobStatus.COMPLETED
        assert restarted.wait(WAIT), "the restart backoff never fired"
        assert restarted.status == JobStatus.COMPLETED
        errors = rt.metrics()["timers"]["callback_errors"]
        assert errors == (1 if attack == "a timer callback raised ActorCrash" else 0)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom"),
        ActorCrash("crash"),
        SystemExit(3),
        KeyboardInterrupt(),
        OverflowError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_timer_thread_runs_later_timers_after_a_callback_raised(error: BaseException) -> None:
    timers = TimerService(SystemClock(), name="actorflow-timers-test")
    fired = threading.Event()

    def bad() -> None:
        raise error

    try:
        now = time.monotonic()
        timers.call_at(now, bad)
        timers.call_at(now + 0.01, bad)
        timers.call_at(now + 0.02, fired.set)
        assert fired.wait(WAIT), "the timer thread died with the callback"
        assert timers.callback_errors == 2
    finally:
        timers.stop()


@pytest.mark.parametrize("deadline", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_timer_services_refuse_a_deadline_no_clock_reaches(deadline: float) -> None:
    timers = TimerService(SystemClock(), name="actorflow-timers-test")
    virtual = VirtualTimers(VirtualClock())
    fired = threading.Event()
    try:
        for service in (timers, virtual):
            with pytest.raises(InvalidDurationError, match="deadline"):
                service.call_at(deadline, fired.set)
        timers.call_at(time.monotonic() + 1e300, fired.set)  # far, finite: waits, never fires
        timers.call_at(time.monotonic(), fired.set)  # the thread is alive and not stuck
        assert fired.wait(WAIT)
        assert virtual.next_deadline() is None
    finally:
        timers.stop()


def test_virtual_timers_run_later_timers_after_a_callback_raised() -> None:
    clock = VirtualClock()
    timers = VirtualTimers(clock)
    fired: list[str] = []

    def crash() -> None:
        raise ActorCrash("crash")

    def interrupt() -> None:
        raise KeyboardInterrupt

    timers.call_at(1.0, crash)
    timers.call_at(2.0, lambda: fired.append("after crash"))
    timers.call_at(3.0, interrupt)
    timers.call_at(4.0, lambda: fired.append("after interrupt"))
    clock.now = 2.0
    assert timers.fire_due() == 2
    assert fired == ["after crash"] and timers.callback_errors == 1
    clock.now = 4.0
    with pytest.raises(KeyboardInterrupt):  # the caller's own thread: Ctrl-C must stop it
        timers.fire_due()
    assert timers.fire_due() == 1  # what was queued behind it still fires
    assert fired == ["after crash", "after interrupt"]


def test_metrics_report_timer_callback_errors() -> None:
    with runtime_of() as rt:
        assert rt.metrics()["timers"] == {"callback_errors": 0}
    with DeterministicRuntime(seed=1) as rt:
        assert rt.metrics()["timers"] == {"callback_errors": 0}


# -- store reapers outlive their failures -------------------------------------------------------


def _evict_events() -> tuple[dict[str, threading.Event], Callable[[str, Any, str], None]]:
    events = {"a": threading.Event(), "b": threading.Event()}

    def on_evict(key: str, value: Any, reason: str) -> None:
        if reason == "expired":
            events[key].set()
            if key == "a":
                raise ActorCrash("on_evict crashed")

    return events, on_evict


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_store_reaper_survives_a_callback_that_raised(kind: str, tmp_path: Path) -> None:
    events, on_evict = _evict_events()
    path = {"path": str(tmp_path / "r.db")} if kind == "sqlite" else {}
    with create_store(kind, on_evict=on_evict, **path) as store:
        store.put("a", 1, ttl=0.01)
        assert events["a"].wait(WAIT)  # reclaimed by the reaper, whose callback raised
        store.put("b", 2, ttl=0.01)  # no store call after this one: only the reaper reclaims
        assert events["b"].wait(WAIT), "the reaper thread died"
        assert store.get_stats()["reaper_errors"] == 1


@pytest.mark.timeout(30)
def test_the_sqlite_reaper_survives_an_expiry_beyond_what_a_timer_can_wait(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "far.db")
    with SqliteStore(path) as store:
        store.put("far", 0)
    with contextlib.closing(sqlite3.connect(path)) as db:  # as written by another program
        with db:
            db.execute("UPDATE actorflow_store SET expires_at = 1e300")
    reclaimed = threading.Event()
    with SqliteStore(path, on_evict=lambda k, v, r: reclaimed.set()) as store:
        store.put("b", 1, ttl=0.01)
        assert reclaimed.wait(WAIT), "the reaper thread died"
        assert store.get("far") == 0
        assert store.get_stats()["reaper_errors"] == 0


# -- a real redis-server -----------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("value", [1e300, MAX_SECONDS * 2], ids=["1e300", "beyond-TIMEOUT_MAX"])
def test_redis_refuses_a_ttl_beyond_what_a_timer_can_wait(redis_url: str, value: float) -> None:
    with create_store("redis", url=redis_url, key_prefix="durations:") as store:
        for call in (
            lambda: store.put("k", 1, ttl=value),
            lambda: store.update("k", lambda old: 1, ttl=value),
        ):
            with pytest.raises(InvalidTTLError) as caught:
                call()
            assert isinstance(caught.value, InvalidDurationError)
            assert_names_the_range(caught.value, "ttl")
        assert store.get("k") is None
        store.put("k", 1, ttl=math.floor(MAX_SECONDS))  # the longest allowed TTL is accepted
        assert store.get("k") == 1
        store.delete("k")
    with pytest.raises(InvalidTTLError) as caught:
        create_store("redis", url=redis_url, default_ttl=value)
    assert_names_the_range(caught.value, "default_ttl")
