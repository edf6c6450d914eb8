"""Durable worker state on every backend (SQLite): write-through, restore, discard, the start
rules and the worker's lease. On Ray ``state_store=`` is a function that makes the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conformance_kit import Backend, make_routine, register

from actorflow import (
    ConfigurationError,
    JobStatus,
    WorkerLeaseHeldError,
    WorkerLeaseLostError,
    WorkerStateExistsError,
)


def _counter() -> None:
    register("durable", {"counter": make_routine(lambda sd, m, ws: ws.increment("counter", "n"))})


def _write(backend: Backend, store: Any, jobs: int = 3) -> None:
    """A first runtime: ``jobs`` increments by routines and one write from the driver."""
    with backend.runtime(state_store=store) as runtime:
        state = runtime.exec("durable", worker_id="w1")
        posted = [runtime.post("durable", "counter", "in", n)[1] for n in range(jobs)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert [job.status for job in posted] == [JobStatus.COMPLETED] * jobs
        state.update_routine_state("_cfg", {"a": [1, 2]})


def test_acknowledged_state_is_restored_by_the_next_runtime(
    backend: Backend, tmp_path: Path
) -> None:
    _counter()
    store = backend.state_store(tmp_path / "state.sqlite3")
    _write(backend, store)
    with backend.runtime(state_store=store) as runtime:
        restored = runtime.exec("durable", worker_id="w1", restore=True)
        assert restored.snapshot() == {"counter": {"n": 3}, "_cfg": {"a": [1, 2]}}
        _, job = runtime.post("durable", "counter", "in", 3)
        assert job.wait(backend.wait)
        assert restored.get_routine_state("counter") == {"n": 4}


def test_stored_state_is_never_overwritten_by_accident(backend: Backend, tmp_path: Path) -> None:
    _counter()
    store = backend.state_store(tmp_path / "state.sqlite3")
    _write(backend, store)
    with backend.runtime(state_store=store) as runtime:
        with pytest.raises(WorkerStateExistsError):
            runtime.exec("durable", worker_id="w1")
        with pytest.raises(ConfigurationError, match="contradict"):
            runtime.exec("durable", worker_id="w1", restore=True, discard_stored=True)
        fresh = runtime.exec("durable", worker_id="w1", discard_stored=True)
        assert fresh.snapshot() == {}
    with backend.runtime(state_store=store) as runtime:
        assert runtime.exec("durable", worker_id="w1", restore=True).snapshot() == {}


def test_one_worker_id_runs_in_one_runtime_at_a_time(backend: Backend, tmp_path: Path) -> None:
    _counter()
    store = backend.state_store(tmp_path / "state.sqlite3")
    first = backend.runtime(state_store=store)
    held = first.exec("durable", worker_id="w1")
    held.increment("counter", "n")
    with backend.runtime(state_store=store) as second:
        with pytest.raises(WorkerLeaseHeldError):
            second.exec("durable", worker_id="w1", restore=True)
        taken = second.exec("durable", worker_id="w1", restore=True, take_over=True)
        assert taken.get_routine_state("counter") == {"n": 1}
        with pytest.raises(WorkerLeaseLostError):
            held.increment("counter", "n")  # the first runtime lost the worker
        taken.increment("counter", "n")
        assert taken.get_routine_state("counter") == {"n": 2}
    first.shutdown(wait=False)


def test_a_state_store_is_taken_in_the_form_the_backend_needs(
    backend: Backend, tmp_path: Path
) -> None:
    """A store object where the state lives in this process; on Ray a store object is refused
    (the supervisor runs in another process: it takes a function that makes the store)."""
    from actorflow.store import create_store

    _counter()
    store = create_store("sqlite", path=str(tmp_path / "state.sqlite3"))
    with backend.runtime(state_store=store) as runtime:
        if backend.refuses("store_object"):
            with pytest.raises(ConfigurationError, match="zero-argument function"):
                runtime.exec("durable", worker_id="w1")
            return
        state = runtime.exec("durable", worker_id="w1")
        state.update_routine_state("_cfg", {"a": 1})
        assert store.get("worker:w1:_cfg") == {"a": 1}  # written through before the ack
