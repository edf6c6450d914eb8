"""Durable workers: a process killed mid-stream loses no acknowledged state update."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigurationError, Flow, FlowRegistry, Routine, Runtime

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    from actorflow import Flow, FlowRegistry, Routine, Runtime
    from actorflow.store import create_store

    kind, target, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    store = (create_store("sqlite", path=target) if kind == "sqlite"
             else create_store("redis", url=target, key_prefix="durable-test:"))
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda sd, m, ws: ws.increment("counter", "n"))
    flow = Flow("durable")
    flow.add_routine(counter, "counter")
    FlowRegistry.get_instance().register(flow)
    runtime = Runtime(state_store=store)
    if mode == "write":
        state = runtime.exec("durable", worker_id="w1")
        i = 0
        while True:
            _, job = runtime.post("durable", "counter", "in", i)
            job.wait()                     # the routine's increment was acknowledged
            state.update_routine_state("_last", {"i": i})
            print(i, flush=True)           # tell the parent what is acknowledged
            i += 1
            if i == int(sys.argv[4]):
                os._exit(1)                # die without any clean-up
    else:
        # the writer died holding the worker's lease: it is known dead, so take over now
        state = runtime.exec("durable", worker_id="w1", restore=True, take_over=True)
        print(json.dumps(state.snapshot()))
        runtime.shutdown()
    """
)


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def kill_and_restore(kind: str, target: str) -> None:
    writer = run_child(kind, target, "write", "137")
    assert writer.returncode == 1, writer.stderr
    acknowledged = [int(line) for line in writer.stdout.split()]
    assert acknowledged == list(range(137))
    restorer = run_child(kind, target, "restore")
    assert restorer.returncode == 0, restorer.stderr
    state = json.loads(restorer.stdout)
    assert state["counter"] == {"n": 137}
    assert state["_last"] == {"i": 136}


def test_sqlite_worker_state_survives_os_exit(tmp_path: Path) -> None:
    kill_and_restore("sqlite", str(tmp_path / "state.sqlite3"))


@pytest.mark.redis
def test_redis_worker_state_survives_os_exit(redis_url: str) -> None:
    kill_and_restore("redis", redis_url)


def test_restore_needs_a_store_and_a_worker_id() -> None:
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda sd, m, ws: None)
    flow = Flow("durable")
    flow.add_routine(counter, "counter")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime, pytest.raises(ConfigurationError):
        runtime.exec("durable", worker_id="w1", restore=True)


def test_write_through_lands_in_the_store_before_the_ack(tmp_path: Path) -> None:
    from actorflow.store import create_store

    store = create_store("memory")
    counter = Routine()
    counter.add_slot("in")
    counter.set_logic(lambda sd, m, ws: ws.increment("counter", "n"))
    flow = Flow("durable")
    flow.add_routine(counter, "counter")
    FlowRegistry.get_instance().register(flow)
    with Runtime(state_store=store) as runtime:
        state = runtime.exec("durable", worker_id="w9")
        state.update_routine_state("_cfg", {"a": [1, 2]})
        assert store.get("worker:w9:_cfg") == {"a": [1, 2]}
        assert runtime.post("durable", "counter", "in", 1)[1].wait(10)
        assert store.get("worker:w9:counter") == {"n": 1}
        state.delete_routine_state("_cfg")
        assert store.get("worker:w9:_cfg") is None
    with Runtime(state_store=store) as runtime:
        restored: Any = runtime.exec("durable", worker_id="w9", restore=True)
        assert restored.snapshot() == {"counter": {"n": 1}}
