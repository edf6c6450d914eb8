"""Async routines beyond the conformance suite: the logic is really awaited, the threads an
async routine uses, posting and shutting down from an event loop, deterministic replay on
virtual time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from actorflow import Flow, FlowRegistry, QueueFullError, Routine, Runtime, get_current_job
from actorflow.testing import DeterministicRuntime


def _register(flow_id: str, logic: Any, *, concurrency: int = 1, max_queue: int = 10_000) -> None:
    routine = Routine()
    routine.add_slot("in", max_queue_length=max_queue)
    routine.set_logic(logic)
    if concurrency != 1:
        routine.set_concurrency(concurrency)
    flow = Flow(flow_id)
    flow.add_routine(routine, "r")
    FlowRegistry.get_instance().register(flow)


def test_async_logic_is_awaited_not_skipped() -> None:
    """``set_logic(async def ...)`` once completed every job without running the logic."""

    async def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        await asyncio.sleep(0)
        job = get_current_job()
        assert job is not None
        job.set_data("ran", slot_data["in"][0])

    _register("awaited", logic)
    with Runtime() as runtime:
        _, job = runtime.post("awaited", "r", "in", 42)
        assert job.wait(10)
    assert job.data == {"ran": 42}


def test_an_object_with_an_async_call_is_async_logic() -> None:
    class Client:
        async def __call__(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
            await asyncio.sleep(0)
            await state.aio.increment("r", "calls")

    routine = Routine()
    routine.set_logic(Client())
    assert routine.is_async
    plain = Routine()
    plain.set_logic(lambda sd, m, ws: None)
    assert not plain.is_async
    _register("callable", Client())
    with Runtime() as runtime:
        state = runtime.exec("callable")
        assert runtime.post("callable", "r", "in", 1)[1].wait(10)
        assert state.get_routine_state("r") == {"calls": 1}


def test_an_async_routine_uses_one_loop_thread_whatever_its_concurrency() -> None:
    seen: set[str] = set()
    all_in = asyncio.Event()
    inside = [0]

    async def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        seen.add(threading.current_thread().name)
        inside[0] += 1
        if inside[0] == 100:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)

    _register("loop-threads", logic, concurrency=100)
    before = threading.active_count()
    with Runtime() as runtime:
        runtime.exec("loop-threads", worker_id="w")
        jobs = [runtime.post("loop-threads", "r", "in", n)[1] for n in range(100)]
        assert all(job.wait(10) for job in jobs)
        # the supervisor and the event loop; no actor thread for the routine
        assert threading.active_count() - before == 2
        assert seen == {"actorflow-loop-w"}
    assert threading.active_count() == before


def test_post_async_awaits_room_while_the_loop_runs_on() -> None:
    release = threading.Event()

    def slow(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if not release.wait(10):
            raise TimeoutError("never released")

    _register("narrow-mailbox", slow, max_queue=1)

    async def main() -> tuple[list[str], list[Any]]:
        events: list[str] = []
        async with Runtime(post_timeout=10) as runtime:
            _, first = await runtime.post_async("narrow-mailbox", "r", "in", 1)
            while first.status.value == "pending":  # the actor holds it: the mailbox is free
                await asyncio.sleep(0.001)
            await runtime.post_async("narrow-mailbox", "r", "in", 2)  # fills the mailbox

            async def ticker() -> None:
                for _ in range(3):
                    await asyncio.sleep(0.01)
                    events.append("tick")
                events.append("release")
                release.set()

            ticking = asyncio.create_task(ticker())
            _, third = await runtime.post_async("narrow-mailbox", "r", "in", 3)
            events.append("posted")
            await ticking
            await third
            statuses = [job.status.value for job in (first, third)]
        return events, statuses

    events, statuses = asyncio.run(main())
    assert events == ["tick", "tick", "tick", "release", "posted"]
    assert statuses == ["completed", "completed"]


def test_post_async_raises_queue_full_after_post_timeout() -> None:
    release = threading.Event()
    _register("stuck", lambda sd, m, ws: release.wait(10), max_queue=1)

    async def main() -> None:
        async with Runtime(post_timeout=0.1) as runtime:
            _, first = await runtime.post_async("stuck", "r", "in", 1)
            while first.status.value == "pending":
                await asyncio.sleep(0.001)
            await runtime.post_async("stuck", "r", "in", 2)
            with pytest.raises(QueueFullError, match="waited 0.1 s"):
                await runtime.post_async("stuck", "r", "in", 3)
            release.set()

    asyncio.run(main())


def test_async_with_shuts_down_without_blocking_the_loop() -> None:
    release = threading.Event()

    def held(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        if not release.wait(10):
            raise TimeoutError("never released")

    _register("held", held)

    async def main() -> tuple[list[str], Runtime, Any]:
        events: list[str] = []

        async def ticker() -> None:
            await asyncio.sleep(0.05)  # the shutdown waits for the held job meanwhile
            events.append("tick")
            release.set()

        async with Runtime() as runtime:
            state, job = await runtime.post_async("held", "r", "in", 1)
            assert await state.aio.increment("_outside", "n") == 1  # from the service's loop
            ticking = asyncio.create_task(ticker())
        events.append("shut down")
        await ticking
        return events, runtime, job

    events, runtime, job = asyncio.run(main())
    assert events == ["tick", "shut down"]
    assert runtime.closed
    assert job.status.value == "completed"


def test_deterministic_async_runs_replay_on_virtual_time() -> None:
    async def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        n = slot_data["in"][0]
        await asyncio.sleep(30 + n)  # virtual: costs no real time
        await state.aio.modify_routine_state("r", lambda old: [*(old or []), n])

    _register("replayed", logic, concurrency=3)

    def run(seed: int) -> tuple[float, list[int], list[Any]]:
        with DeterministicRuntime(seed=seed) as runtime:
            state = runtime.exec("replayed", worker_id="w")
            for n in range(6):
                runtime.post("replayed", "r", "in", n, job_id=f"j{n}")
            assert runtime.wait_until_all_jobs_finished(600)
            return runtime.now, state.get_routine_state("r"), runtime.delivery_log()

    started = time.monotonic()
    first, again = run(11), run(11)
    assert time.monotonic() - started < 5
    assert first == again
    now, order, _ = first
    assert sorted(order) == list(range(6))
    assert now >= (30 + 0) + (30 + 3)  # two waves of three at least


def test_the_loop_thread_and_its_executor_end_with_the_worker() -> None:
    def blocking_call(n: int) -> int:
        return n * 2

    async def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        doubled = await asyncio.to_thread(blocking_call, slot_data["in"][0])
        job = get_current_job()
        assert job is not None
        job.set_data("doubled", doubled)

    _register("offloading", logic)
    before = set(threading.enumerate())
    with Runtime() as runtime:
        _, job = runtime.post("offloading", "r", "in", 21)
        assert job.wait(10)
    assert job.data == {"doubled": 42}
    assert [t.name for t in threading.enumerate() if t not in before] == []
