"""Routing on every backend: one-to-one, fan-out and fan-in, the current job, declared emits."""

from __future__ import annotations

from typing import Any

from conformance_kit import Backend, make_routine, register

from actorflow import ErrorStrategy, JobStatus, get_current_job


def _pipeline(flow_id: str, length: int) -> None:
    """r0 -> r1 -> ...: each appends its id to the job's ``path`` and adds 1 to the value."""

    def relay(name: str, last: bool) -> Any:
        def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
            job = get_current_job()
            assert job is not None
            for value in slot_data["in"]:
                job.set_data("path", [*job.get_data("path", []), name])
                if last:
                    job.set_data("result", value["value"])
                else:
                    routines[name].emit("out", value=value["value"] + 1)

        return logic

    routines = {}
    for i in range(length):
        last = i == length - 1
        routines[f"r{i}"] = make_routine(relay(f"r{i}", last), events=() if last else ("out",))
    register(flow_id, routines, [(f"r{i}", "out", f"r{i + 1}", "in") for i in range(length - 1)])


def test_a_pipeline_carries_every_job_through_every_routine_once(backend: Backend) -> None:
    _pipeline("pipe", 3)
    jobs_count = 6
    with backend.runtime() as runtime:
        worker = runtime.exec("pipe", worker_id="w")
        jobs = [runtime.post("pipe", "r0", "in", {"value": n})[1] for n in range(jobs_count)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        metrics = runtime.metrics()
        assert worker.status == "running"
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * jobs_count
    assert [job.get_data("path") for job in jobs] == [["r0", "r1", "r2"]] * jobs_count
    assert [job.get_data("result") for job in jobs] == [n + 2 for n in range(jobs_count)]
    routine_metrics = metrics["routines"]["w"]
    assert {rid: routine_metrics[rid]["handled"] for rid in ("r0", "r1", "r2")} == {
        "r0": jobs_count,
        "r1": jobs_count,
        "r2": jobs_count,
    }
    assert metrics["jobs"] == {"active": 0, "completed": jobs_count, "failed": 0, "cancelled": 0}


def _diamond(flow_id: str, *, retry_left: bool = False) -> None:
    """source -> left, right -> sink (one slot fed by both branches)."""

    def source_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        source.emit("out", n=slot_data["in"][0])

    def branch(name: str) -> Any:
        def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
            job = get_current_job()
            assert job is not None
            if retry_left and name == "left":
                tries = state.increment("_tries", job.job_id)
                if tries == 1:
                    raise ConnectionError("the first try of left fails")
            job.set_data(name, slot_data["in"][0]["n"])
            me[name].emit("out", branch=name)

        return logic

    def sink_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for item in slot_data["in"]:
            job.set_data(f"sink_saw_{item['branch']}", True)

    source = make_routine(source_logic, events=("out",))
    me = {
        name: make_routine(
            branch(name),
            events=("out",),
            strategy=ErrorStrategy.RETRY(max_retries=2, delay=0.2)
            if retry_left and name == "left"
            else None,
        )
        for name in ("left", "right")
    }
    register(
        flow_id,
        {"source": source, **me, "sink": make_routine(sink_logic)},
        [
            ("source", "out", "left", "in"),
            ("source", "out", "right", "in"),
            ("left", "out", "sink", "in"),
            ("right", "out", "sink", "in"),
        ],
    )


def test_fan_out_reaches_every_branch_and_fan_in_every_message(backend: Backend) -> None:
    _diamond("diamond")
    jobs_count = 4
    with backend.runtime() as runtime:
        runtime.exec("diamond", worker_id="w")
        jobs = [runtime.post("diamond", "source", "in", n)[1] for n in range(jobs_count)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        metrics = runtime.metrics()["routines"]["w"]
    for n, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, job.error
        assert dict(job.data) == {
            "left": n,
            "right": n,
            "sink_saw_left": True,
            "sink_saw_right": True,
        }
    handled = {rid: metrics[rid]["handled"] for rid in ("source", "left", "right", "sink")}
    assert handled == {"source": 4, "left": 4, "right": 4, "sink": 8}


def test_a_job_completes_only_after_its_retrying_branch(backend: Backend) -> None:
    _diamond("diamond", retry_left=True)
    with backend.runtime() as runtime:
        runtime.exec("diamond", worker_id="w")
        _, job = runtime.post("diamond", "source", "in", 5)
        assert job.wait(backend.wait)
        # read at once: a job that completed before its retry would miss the retried branch
        data = dict(job.data)
        status = job.status
        retried = runtime.metrics()["routines"]["w"]["left"]["retried"]
    assert status == JobStatus.COMPLETED, job.error
    assert data == {"left": 5, "right": 5, "sink_saw_left": True, "sink_saw_right": True}
    assert [entry["action"] for entry in job.trace_log] == ["retry"]
    assert retried == 1


def test_get_current_job_is_the_job_of_the_message_and_none_outside(backend: Backend) -> None:
    def tag_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("seen_id", job.job_id)
        job.set_data("seen_user", job.metadata["user"])
        try:
            job.metadata["user"] = "root"  # type: ignore[index]
        except TypeError:
            job.set_data("metadata_read_only", True)
        job.trace("tag", "tagged", {"user": job.metadata["user"]})
        tag.emit("out", echo=slot_data["in"][0])

    def check_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        if job.get_data("seen_user") != job.metadata["user"]:
            raise AssertionError("the data of another job")
        job.set_data("checked", slot_data["in"][0]["echo"])

    tag = make_routine(tag_logic, events=("out",))
    register(
        "ctx", {"tag": tag, "check": make_routine(check_logic)}, [("tag", "out", "check", "in")]
    )
    assert get_current_job() is None
    with backend.runtime() as runtime:
        jobs = [
            runtime.post("ctx", "tag", "in", n, metadata={"user": f"u{n}"}, job_id=f"ctx-{n}")[1]
            for n in range(5)
        ]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert get_current_job() is None
    for n, job in enumerate(jobs):
        assert job.status == JobStatus.COMPLETED, job.error
        assert dict(job.data) == {
            "seen_id": f"ctx-{n}",
            "seen_user": f"u{n}",
            "metadata_read_only": True,
            "checked": n,
        }
        assert [(e["routine_id"], e["action"], e["details"]) for e in job.trace_log] == [
            ("tag", "tagged", {"user": f"u{n}"})
        ]


def test_a_routine_of_several_actors_handles_every_message_once(backend: Backend) -> None:
    def count(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for value in slot_data["in"]:
            state.increment("_seen", str(value))

    register("spread", {"count": make_routine(count, concurrency=2)})
    with backend.runtime() as runtime:
        state = runtime.exec("spread", worker_id="w")
        jobs = [runtime.post("spread", "count", "in", n)[1] for n in range(8)]
        assert runtime.wait_until_all_jobs_finished(backend.wait)
        assert state.get_routine_state("_seen") == {str(n): 1 for n in range(8)}
        assert runtime.metrics()["routines"]["w"]["count"]["handled"] == 8
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}


def test_immediate_policy_gives_every_slot_a_list(backend: Backend) -> None:
    def record(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        job.set_data("slot_data", slot_data)
        job.set_data("message", message)

    register("two_slots", {"r": make_routine(record, slots=("a", "b"))})
    with backend.runtime() as runtime:
        _, on_a = runtime.post("two_slots", "r", "a", 1)
        _, on_b = runtime.post("two_slots", "r", "b", 2)
        assert runtime.wait_until_all_jobs_finished(backend.wait)
    assert on_a.get_data("slot_data") == {"a": [1], "b": []}
    assert on_b.get_data("slot_data") == {"a": [], "b": [2]}
    assert on_a.get_data("message") is None


def test_an_emit_of_an_undeclared_event_fails_the_job(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        bad.emit("nowhere", n=1)

    bad = make_routine(logic, events=("out",))
    register("undeclared", {"bad": bad})
    with backend.runtime() as runtime:
        _, job = runtime.post("undeclared", "bad", "in", None)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "ValueError: routine 'bad' emitted undeclared event 'nowhere' (declared: ['out'])"
    )


def test_an_emit_of_a_routine_that_declares_no_event_fails_the_job(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        bad.emit("out", n=1)

    bad = make_routine(logic)
    register("silent", {"bad": bad})
    with backend.runtime() as runtime:
        _, job = runtime.post("silent", "bad", "in", None)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == "ValueError: routine 'bad' emitted undeclared event 'out' (declared: none)"


def test_an_emit_of_an_undeclared_field_fails_the_job(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        parse.emit("parsed", nme="pen", quantity=1)

    parse = make_routine(logic, events=(("parsed", ("name", "quantity")),))
    register(
        "fields",
        {"parse": parse, "store": make_routine(lambda sd, m, ws: None)},
        [("parse", "parsed", "store", "in")],
    )
    with backend.runtime() as runtime:
        _, job = runtime.post("fields", "parse", "in", "pen,1")
        assert job.wait(backend.wait)
        handled = runtime.metrics()["routines"][job.worker_id]["store"]["handled"]
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "FlowValidationError: <Routine 'parse' in flow 'fields'> emitted 'parsed' with "
        "undeclared field(s) ['nme'] (declared: ['name', 'quantity'])"
    )
    assert handled == 0
