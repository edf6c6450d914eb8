"""The supervisor survives whatever a user function raises, and the caller gets a named error
at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actorflow import (
    ActorCrash,
    Flow,
    FlowRegistry,
    Routine,
    Runtime,
    StateFunctionError,
    WorkerState,
)
from actorflow.engine.state_owner import BUSY


def routine(logic: Any) -> Routine:
    r = Routine()
    r.add_slot("in")
    r.set_logic(logic)
    return r


def crash(old: Any) -> Any:
    raise ActorCrash("crash from a state function")


def register_flow() -> None:
    def crashy(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        if sd["in"][0] == "crash":
            raise ActorCrash("the routine crashes")

    flow = Flow("svc")
    flow.add_routine(routine(lambda sd, m, ws: ws.increment("_shared", "n")), "count")
    flow.add_routine(routine(crashy), "crashy")
    flow.set_supervision("one_for_one", max_restarts=10, period=60.0)
    FlowRegistry.get_instance().register(flow)


@pytest.fixture
def on_supervisor_thread(runtime: Runtime) -> Iterator[tuple[Runtime, WorkerState]]:
    """A worker whose state calls all run on the supervisor's thread (never lent inline)."""
    register_flow()
    state = runtime.exec("svc", worker_id="w")
    runtime._workers["w"].supervisor_core.apply_now = lambda *call: BUSY  # type: ignore[method-assign]
    yield runtime, state


def assert_crashes_are_still_handled(runtime: Runtime, state: WorkerState) -> None:
    """Later state calls are answered, and a crashed routine is still restarted."""
    state.update_routine_state("_shared", {"n": 10})
    _, job = runtime.post("svc", "count", "in", 1)
    assert job.wait(10) and job.status == "completed"
    assert state.get_routine_state("_shared") == {"n": 11}
    _, crashed = runtime.post("svc", "crashy", "in", "crash")
    assert crashed.wait(10) and crashed.status == "failed"
    assert "actor crashed" in (crashed.error or "")
    _, after = runtime.post("svc", "crashy", "in", "fine")
    assert after.wait(10) and after.status == "completed"
    worker = runtime._workers["w"]
    assert worker.status == "running" and worker.restart_count == 1


@pytest.mark.timeout(15)  # the reply timeout (60 s) must never be what answers the caller
def test_actor_crash_from_a_modify_function_on_the_supervisor_thread_keeps_it_alive(
    on_supervisor_thread: tuple[Runtime, WorkerState],
) -> None:
    runtime, state = on_supervisor_thread
    ran_on: list[str] = []

    def crash_where(old: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return crash(old)

    with pytest.raises(StateFunctionError, match=r"modify_routine_state\('_shared'\)") as info:
        state.modify_routine_state("_shared", crash_where)
    assert isinstance(info.value.__cause__, ActorCrash)
    assert "-supervisor-" in ran_on[0]
    assert state.get_routine_state("_shared") is None  # unchanged
    assert_crashes_are_still_handled(runtime, state)


@pytest.mark.timeout(15)
def test_system_exit_from_a_modify_function_on_the_supervisor_thread_keeps_it_alive(
    on_supervisor_thread: tuple[Runtime, WorkerState],
) -> None:
    runtime, state = on_supervisor_thread

    def leave(old: Any) -> Any:
        raise SystemExit(3)

    with pytest.raises(StateFunctionError) as info:
        state.modify_routine_state("_shared", leave)
    assert isinstance(info.value.__cause__, SystemExit)
    assert_crashes_are_still_handled(runtime, state)


@pytest.mark.timeout(15)
def test_actor_crash_from_a_modify_function_run_inline_gives_the_same_named_error(
    runtime: Runtime,
) -> None:
    register_flow()
    state = runtime.exec("svc", worker_id="w")
    ran_on: list[str] = []

    def crash_where(old: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return crash(old)

    with pytest.raises(StateFunctionError) as info:
        state.modify_routine_state("_shared", crash_where)  # the supervisor is idle: inline
    assert ran_on == [threading.current_thread().name]
    assert isinstance(info.value.__cause__, ActorCrash)
    assert_crashes_are_still_handled(runtime, state)


@pytest.mark.timeout(15)
def test_an_exception_from_a_modify_function_still_reaches_the_caller_as_itself(
    on_supervisor_thread: tuple[Runtime, WorkerState],
) -> None:
    runtime, state = on_supervisor_thread

    def bad(old: Any) -> Any:
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing"):
        state.modify_routine_state("_shared", bad)
    assert_crashes_are_still_handled(runtime, state)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("mode", ["threads", "strict=False", "deterministic"])
def test_actor_crash_from_a_modify_function_in_a_routine_fails_its_job_not_its_actor(
    mode: str,
) -> None:
    flow = Flow("mod")
    flow.add_routine(routine(lambda sd, m, ws: ws.modify_routine_state("_shared", crash)), "r")
    FlowRegistry.get_instance().register(flow)
    options: dict[str, Any] = {
        "threads": {},
        "strict=False": {"strict": False},
        "deterministic": {"deterministic": True},
    }[mode]
    with Runtime(**options) as runtime:
        _, job = runtime.post("mod", "r", "in", 1)
        assert job.wait(10) and job.status == "failed"
        assert (job.error or "").startswith("StateFunctionError: the function given to")
        assert runtime._workers["mod-worker-1"].restart_count == 0  # no actor crashed


@pytest.mark.timeout(15)
def test_supervisor_survives_a_failure_while_handling_a_crash_report(
    on_supervisor_thread: tuple[Runtime, WorkerState],
) -> None:
    runtime, state = on_supervisor_thread
    worker = runtime._workers["w"]
    handler = worker.supervisor_core.control_handler
    failed = threading.Event()

    def failing(message: Any) -> None:
        failed.set()
        raise ActorCrash("a failure while handling a control message")

    worker.supervisor_core.control_handler = failing
    worker.to_supervisor(object())
    assert failed.wait(10)
    worker.supervisor_core.control_handler = handler
    assert_crashes_are_still_handled(runtime, state)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ray_modify_function_raising_actor_crash_gives_the_same_named_error(
    local_ray: None,
) -> None:
    register_flow()
    with Runtime(backend="ray") as runtime:
        state = runtime.exec("svc", worker_id="w")
        with pytest.raises(StateFunctionError, match=r"raised ActorCrash"):
            state.modify_routine_state("_shared", crash)
        state.update_routine_state("_shared", {"n": 1})
        assert state.modify_routine_state("_shared", lambda old: {"n": old["n"] + 1}) == {"n": 2}
