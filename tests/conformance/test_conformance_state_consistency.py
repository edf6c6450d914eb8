"""What each caller of WorkerState sees, and when (docs/state.md, "What each caller sees"), on
every backend: a call sees every write whose call returned before it started, whoever made it
(the same logic, a routine downstream, another job, the application), and a routine actor's
crash loses no write whose call returned."""

from __future__ import annotations

from typing import Any

from conformance_kit import Backend, make_routine, register

from actorflow import ActorCrash, JobStatus, get_current_job


def _job() -> Any:
    job = get_current_job()
    assert job is not None
    return job


def test_a_logic_reads_its_own_writes(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        n = slot_data["in"][0]
        key = f"_last:{_job().job_id}"  # this job's alone
        state.update_routine_state(key, {"n": n})
        seen = [state.get_routine_state(key)]
        counted = state.increment("_count", "n")
        seen.append(state.get_routine_state("_count"))
        _job().set_data("seen", [seen, counted])

    register("own", {"r": make_routine(logic, concurrency=2)})
    with backend.runtime() as runtime:
        runtime.exec("own", worker_id="w")
        jobs = [runtime.post("own", "r", "in", n, worker_id="w")[1] for n in range(20)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    for n, job in enumerate(jobs):
        (last, count), counted = job.data["seen"]
        assert last == {"n": n}
        # another actor may count in between: a later read never shows less than one's own
        assert count["n"] >= counted


def test_a_routine_downstream_sees_the_writes_made_upstream_for_its_job(
    backend: Backend,
) -> None:
    def first_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job_id = _job().job_id
        state.update_routine_state(f"_order:{job_id}", {"paid": True})
        first.emit("out", n=slot_data["in"][0])

    def second_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = _job()
        job.set_data("seen", state.get_routine_state(f"_order:{job.job_id}"))

    first = make_routine(first_logic, events=("out",))
    register(
        "causal",
        {"first": first, "second": make_routine(second_logic, concurrency=2)},
        [("first", "out", "second", "in")],
    )
    with backend.runtime() as runtime:
        runtime.exec("causal", worker_id="w")
        jobs = [runtime.post("causal", "first", "in", n, worker_id="w")[1] for n in range(30)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert [job.data["seen"] for job in jobs] == [{"paid": True}] * 30


def test_the_application_and_later_jobs_see_a_finished_jobs_writes(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        kind, value = slot_data["in"][0]
        if kind == "write":
            state.update_routine_state("_setting", value)
        else:
            _job().set_data("seen", state.get_routine_state("_setting"))

    register("later", {"r": make_routine(logic)})
    with backend.runtime() as runtime:
        state = runtime.exec("later", worker_id="w")
        for value in range(5):
            _, writer = runtime.post("later", "r", "in", ("write", value), worker_id="w")
            assert writer.wait(backend.wait)
            assert state.get_routine_state("_setting") == value  # the application
            _, reader = runtime.post("later", "r", "in", ("read", None), worker_id="w")
            assert reader.wait(backend.wait)
            assert reader.data["seen"] == value  # a job posted after the write returned


def test_a_routine_actors_crash_loses_no_write_whose_call_returned(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        n = slot_data["in"][0]
        state.modify_routine_state("_written", lambda old: [*(old or []), n])
        if n % 2 == 0:
            raise ActorCrash(f"crash after writing {n}")

    register("crashing", {"r": make_routine(logic)})
    with backend.runtime() as runtime:
        state = runtime.exec("crashing", worker_id="w")
        jobs = [runtime.post("crashing", "r", "in", n, worker_id="w")[1] for n in range(6)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        written = state.get_routine_state("_written")
    assert [job.status for job in jobs] == [JobStatus.FAILED, JobStatus.COMPLETED] * 3
    assert sorted(written) == list(range(6))
