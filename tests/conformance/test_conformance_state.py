"""WorkerState on every backend: atomic updates, isolation and grants, JSON values, copies,
per-worker state, state functions that raise, state limits (or their refusal)."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, make_routine, register

from actorflow import (
    ActorCrash,
    ConfigurationError,
    JobStatus,
    StateAccessError,
    StateFunctionError,
    StateLimitError,
    StateLimits,
    StateSerializationError,
    get_current_job,
)


def test_increments_are_exact_across_routines_actors_and_jobs(backend: Backend) -> None:
    def source_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        source.emit("out", n=slot_data["in"][0])

    def count(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.increment("_shared", "count")
        state.modify_routine_state("_modified", lambda old: (old or 0) + 1)

    source = make_routine(source_logic, events=("out",))
    counters = {f"counter{i}": make_routine(count, concurrency=2) for i in range(2)}
    register(
        "race",
        {"source": source, **counters},
        [("source", "out", name, "in") for name in counters],
    )
    jobs_count, outside = 10, 4
    with backend.runtime() as runtime:
        state = runtime.exec("race")
        for n in range(jobs_count):
            runtime.post("race", "source", "in", n)
            if n < outside:
                state.increment("_shared", "count")  # from the driver, meanwhile
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("_shared") == {"count": 2 * jobs_count + outside}
        assert state.get_routine_state("_modified") == 2 * jobs_count
        assert runtime.metrics()["jobs"]["completed"] == jobs_count


RAY_WRAPS_STATE_ERRORS = (
    "an error of a state call reaches the caller on Ray as Ray's RayTaskError wrapper: its "
    "type name and message carry Ray's remote traceback, not the actorflow error's text"
)


def _probe(**actions: Any) -> Any:
    """A logic that runs each ``action(worker_state)`` and writes, under the action's name in
    the job's data, 'ok' or the text of the StateAccessError it raised."""

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for name, action in actions.items():
            try:
                action(state)
                job.set_data(name, "ok")
            except StateAccessError as exc:
                job.set_data(name, str(exc))

    return logic


def test_a_routine_touches_only_its_own_and_shared_keys_unless_granted(
    backend: Backend,
) -> None:
    routines = {
        "stranger": _probe(
            read=lambda ws: ws.get_routine_state("owner"),
            write=lambda ws: ws.update_routine_state("owner", 1),
        ),
        "friend": _probe(  # granted read access only
            read=lambda ws: ws.get_routine_state("owner"),
            write=lambda ws: ws.update_routine_state("owner", 2),
        ),
        "owner": _probe(
            own=lambda ws: ws.update_routine_state("owner", 3),
            shared=lambda ws: ws.increment("_shared", "n"),
            free=lambda ws: ws.update_routine_state("free_key", 1),
        ),
    }
    flow = register("iso", {name: make_routine(logic) for name, logic in routines.items()})
    flow.grant_state_access("friend", "owner", write=False)
    with backend.runtime() as runtime:
        state = runtime.exec("iso")
        outcomes = {}
        for name in routines:
            _, job = runtime.post("iso", name, "in", None)
            assert job.wait(backend.wait)
            outcomes[name] = dict(job.data)
        state.update_routine_state("stranger", {"outside": True})  # the exec handle may
        assert state.get_routine_state("owner") == 3
        assert state.get_routine_state("_shared") == {"n": 1}
        assert state.get_routine_state("free_key") == 1
    assert outcomes == {
        "stranger": {
            "read": "routine 'stranger' may not read the state of routine 'owner' (use a "
            "shared '_' key, or flow.grant_state_access('stranger', 'owner'))",
            "write": "routine 'stranger' may not write the state of routine 'owner' (use a "
            "shared '_' key, or flow.grant_state_access('stranger', 'owner', write=True))",
        },
        "friend": {
            "read": "ok",
            "write": "routine 'friend' may not write the state of routine 'owner' (use a "
            "shared '_' key, or flow.grant_state_access('friend', 'owner', write=True))",
        },
        "owner": {"own": "ok", "shared": "ok", "free": "ok"},
    }


def test_routine_states_inside_a_routine_shows_only_what_it_may_read(backend: Backend) -> None:
    def look(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("visible", state.routine_states)

    register("visible", {"a": make_routine(look), "b": make_routine(look)})
    with backend.runtime() as runtime:
        state = runtime.exec("visible")
        for key in ("a", "b", "_shared", "other"):
            state.update_routine_state(key, key)
        _, job = runtime.post("visible", "a", "in", None)
        assert job.wait(backend.wait)
    assert job.get_data("visible") == {"a": "a", "_shared": "_shared", "other": "other"}


def test_state_values_must_be_json_and_reads_are_copies(backend: Backend) -> None:
    def store_a_set(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        try:
            state.update_routine_state("probe", {"seen": {"a", "b"}})
        except StateSerializationError as exc:
            job.set_data("refused", str(exc))

    register("json", {"probe": make_routine(store_a_set)})
    with backend.runtime() as runtime:
        state = runtime.exec("json")
        _, job = runtime.post("json", "probe", "in", None)
        assert job.wait(backend.wait)
        with pytest.raises(StateSerializationError):
            state.update_routine_state("_cfg", {"fn": len})
        state.update_routine_state("_cfg", {"items": [1]})
        got = state.get_routine_state("_cfg")
        got["items"].append(2)
        assert state.get_routine_state("_cfg") == {"items": [1]}
        assert state.delete_routine_state("_cfg") is True
        assert state.delete_routine_state("_cfg") is False
        assert state.get_routine_state("probe") is None
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.get_data("refused") == (
        "worker state \"probe['seen']\" holds a set, which the JSON serializer cannot encode "
        "(keep connections, locks, files and functions in the routine, see on_start)"
    )


def test_the_state_handle_a_routine_gets_names_its_worker_and_flow(backend: Backend) -> None:
    def who(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("who", [state.worker_id, state.flow_id, job.worker_id])

    register("named", {"r": make_routine(who)})
    with backend.runtime() as runtime:
        runtime.exec("named", worker_id="blue")
        _, job = runtime.post("named", "r", "in", None, worker_id="blue")
        assert job.wait(backend.wait)
    assert job.get_data("who") == ["blue", "named", "blue"]


def test_two_workers_of_one_flow_never_share_state(backend: Backend) -> None:
    register("two", {"r": make_routine(lambda sd, m, ws: ws.increment("r", "n"))})
    with backend.runtime() as runtime:
        blue = runtime.exec("two", worker_id="blue")
        green = runtime.exec("two", worker_id="green")
        for _ in range(3):
            runtime.post("two", "r", "in", 1, worker_id="blue")
        runtime.post("two", "r", "in", 1, worker_id="green")
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert (blue.get_routine_state("r"), green.get_routine_state("r")) == ({"n": 3}, {"n": 1})


def _reserve(stock: Any) -> Any:
    if stock is None:
        raise ActorCrash("the stock was never loaded")
    return stock - 1


def test_a_state_function_that_raises_changes_nothing_and_crashes_no_actor(
    backend: Backend,
) -> None:
    def order(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        state.modify_routine_state("_stock", _reserve)

    register("orders", {"order": make_routine(order)})
    with backend.runtime() as runtime:
        state = runtime.exec("orders", worker_id="shop")
        with pytest.raises(StateFunctionError, match="the stock was never loaded"):
            state.modify_routine_state("_stock", _reserve)
        _, failed = runtime.post("orders", "order", "in", "pen")
        assert failed.wait(backend.wait)
        state.update_routine_state("_stock", 3)
        _, done = runtime.post("orders", "order", "in", "pen")
        assert done.wait(backend.wait)
        assert state.get_routine_state("_stock") == 2
        assert runtime.metrics()["workers"]["shop"]["restarts"] == 0
    assert failed.status == JobStatus.FAILED
    assert failed.error == (
        "StateFunctionError: the function given to modify_routine_state('_stock') raised "
        "ActorCrash: the stock was never loaded (the state is unchanged)"
    )
    assert done.status == JobStatus.COMPLETED


def test_state_limits_are_applied_or_refused(backend: Backend) -> None:
    register("limits", {"r": make_routine(lambda sd, m, ws: None)})
    limits = StateLimits(max_key_bytes=100, max_total_bytes=150)
    if backend.refuses("state_limits"):
        with backend.runtime(state_limits=limits) as runtime:
            with pytest.raises(ConfigurationError, match="state_limits"):
                runtime.exec("limits")
        with backend.runtime() as runtime:
            with pytest.raises(ConfigurationError, match="state_limits"):
                runtime.exec("limits", state_limits=limits)
        return
    with backend.runtime(state_limits=limits) as runtime:
        state = runtime.exec("limits")
        state.update_routine_state("a", "x" * 80)
        with pytest.raises(StateLimitError, match="limit per key is 100"):
            state.update_routine_state("b", "x" * 200)
        with pytest.raises(StateLimitError, match="limit for the worker is 150"):
            state.update_routine_state("b", "x" * 90)
        assert state.get_routine_state("b") is None
