"""Each fault rule's effect, asserted; job accounting stays exact under faults."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from actorflow import (
    ConfigurationError,
    Flow,
    FlowRegistry,
    InvalidDurationError,
    JobStatus,
    Routine,
    Runtime,
)
from actorflow.faults import FaultPlan
from actorflow.testing import DeterministicRuntime


def two_step(handled: list[Any] | None = None) -> None:
    """a -> b; b records what it handles."""
    FlowRegistry.get_instance().clear()
    a = Routine()
    a.add_slot("in")
    a.add_event("out")
    a.set_logic(lambda sd, m, ws: a.emit("out", v=sd["in"][0]))
    b = Routine()
    b.add_slot("in")
    b.set_logic(lambda sd, m, ws: handled.append(sd["in"][0]["v"]) if handled is not None else None)
    flow = Flow("faulty")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    flow.connect("a", "out", "b", "in")
    FlowRegistry.get_instance().register(flow)


def test_dropped_messages_fail_their_jobs_by_timeout_never_hang() -> None:
    two_step()
    plan = FaultPlan(seed=1, lost_message_timeout=2.0).drop(p=0.5, routine="b")
    with DeterministicRuntime(seed=1, faults=plan) as runtime:
        jobs = [runtime.post("faulty", "a", "in", i)[1] for i in range(40)]
        assert runtime.wait_until_all_jobs_finished()
        statuses = Counter(job.status for job in jobs)
        log = runtime.fault_log()
    dropped = [e for e in log if e["fault"] == "drop"]
    assert statuses[JobStatus.FAILED] == len(dropped) > 0
    assert statuses[JobStatus.COMPLETED] == 40 - len(dropped)
    for job in jobs:
        if job.status == JobStatus.FAILED:
            assert "JobTimeoutError" in (job.error or "")
    assert json.loads(json.dumps(log)) == log  # JSON-ready
    assert set(dropped[0]) >= {"rule", "fault", "job_id", "routine", "ordinal", "time", "slot"}
    assert runtime.dead_letter_counts()["lost (drop)"] == len(dropped)


def without_job_ids(log: list[dict[str, Any]], jobs: list[Any]) -> list[dict[str, Any]]:
    """A fault log with each job id replaced by the job's place in posting order (job ids
    are built from the runtime's seed: two runs with different seeds never share one)."""
    place = {job.job_id: n for n, job in enumerate(jobs)}
    return [{**entry, "job_id": place[entry["job_id"]]} for entry in log]


def test_same_seed_injects_the_same_faults() -> None:
    def run(plan_seed: int, runtime_seed: int = 0) -> list[dict[str, Any]]:
        two_step()
        plan = FaultPlan(seed=plan_seed).drop(p=0.3, routine="b").duplicate(p=0.3, routine="b")
        with DeterministicRuntime(seed=runtime_seed, faults=plan) as runtime:
            jobs = [runtime.post("faulty", "a", "in", i)[1] for i in range(30)]
            runtime.wait_until_all_jobs_finished()
            return without_job_ids(runtime.fault_log(), jobs)

    assert run(5) == run(5)
    assert run(5, runtime_seed=5) == run(5, runtime_seed=5)
    # the plan's seed alone (same scheduler seed, same job ids) picks other messages
    assert run(5) != run(6)


def test_delay_holds_messages_for_virtual_seconds() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan().delay(3.0, source="a")
    with DeterministicRuntime(faults=plan) as runtime:
        _, job = runtime.post("faulty", "a", "in", 1)
        runtime.advance(2.9)
        assert handled == [] and not job.done
        runtime.advance(0.2)
        assert handled == [1] and job.status == JobStatus.COMPLETED


def test_duplicate_delivers_twice_and_is_visible_in_the_trace() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan().duplicate(p=1.0, routine="b")
    with Runtime(faults=plan) as runtime:
        _, job = runtime.post("faulty", "a", "in", 7)
        assert job.wait(10)
    assert handled == [7, 7]
    assert job.status == JobStatus.COMPLETED
    assert [e["action"] for e in job.trace_log] == ["duplicated"]


def test_reorder_shuffles_groups_of_messages() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan(seed=3).reorder(window=5, routine="b")
    with DeterministicRuntime(seed=0, faults=plan) as runtime:
        runtime.exec("faulty")
        for i in range(10):
            runtime.post("faulty", "a", "in", i)
            runtime.run_until_idle()  # a's messages reach b's group in posting order
        assert runtime.wait_until_all_jobs_finished()
    assert sorted(handled) == list(range(10)) and handled != list(range(10))


def test_reorder_releases_a_short_group_after_its_hold_time() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan().reorder(window=10, hold=0.5, routine="b")
    with DeterministicRuntime(faults=plan) as runtime:
        _, job = runtime.post("faulty", "a", "in", 1)
        runtime.advance(0.4)
        assert handled == []
        runtime.advance(0.1)
        assert handled == [1] and job.done


def test_raise_in_on_a_given_message_goes_through_the_error_strategy() -> None:
    two_step()
    plan = FaultPlan().raise_in("b", ValueError("injected"), on_message=2)
    with DeterministicRuntime(faults=plan) as runtime:
        jobs = [runtime.post("faulty", "a", "in", i)[1] for i in range(3)]
        runtime.run_until_idle()
        order = [entry["job_id"] for entry in runtime.fault_log()]
    failed = [job for job in jobs if job.status == JobStatus.FAILED]
    assert len(failed) == 1 and failed[0].error == "ValueError: injected"
    assert order == [failed[0].job_id]


def test_raise_in_with_probability_and_metadata_match() -> None:
    two_step()
    plan = FaultPlan(seed=2).raise_in("b", KeyError, p=1.0, metadata={"tenant": "flaky"})
    with DeterministicRuntime(faults=plan) as runtime:
        ok = runtime.post("faulty", "a", "in", 1, metadata={"tenant": "calm"})[1]
        bad = runtime.post("faulty", "a", "in", 2, metadata={"tenant": "flaky"})[1]
        runtime.run_until_idle()
    assert ok.status == JobStatus.COMPLETED and bad.status == JobStatus.FAILED


def test_crash_on_a_given_message_is_handled_by_the_supervisor() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan().crash("b", on_message=3)
    with Runtime(faults=plan) as runtime:
        state = runtime.exec("faulty")
        jobs = [runtime.post("faulty", "a", "in", i)[1] for i in range(6)]
        assert runtime.wait_until_all_jobs_finished(10)
        assert state.status == "running"
    statuses = [job.status for job in jobs]
    assert statuses.count(JobStatus.FAILED) == 1 and statuses.count(JobStatus.COMPLETED) == 5
    assert len(handled) == 5
    assert [e["fault"] for e in runtime.fault_log()] == ["crash"]


def test_partition_drops_messages_between_groups_only_inside_its_window() -> None:
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan(lost_message_timeout=100).partition({"a"}, {"b"}, between=(1.0, 2.0))
    with DeterministicRuntime(faults=plan) as runtime:
        before = runtime.post("faulty", "a", "in", "before")[1]
        runtime.advance(1.5)
        during = runtime.post("faulty", "a", "in", "during")[1]
        runtime.advance(1.0)
        after = runtime.post("faulty", "a", "in", "after")[1]
        runtime.run_until_idle()
        assert handled == ["before", "after"]
        assert before.done and after.done and not during.done
        assert [e["fault"] for e in runtime.fault_log()] == ["partition"]


def test_fault_plan_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="unknown match key"):
        FaultPlan().drop(p=0.5, routin="b")
    with pytest.raises(ConfigurationError):
        FaultPlan().drop(p=1.5)
    with pytest.raises(ConfigurationError):
        FaultPlan().raise_in("b", ValueError, on_message=1, p=0.5)
    with pytest.raises(TypeError):
        FaultPlan().raise_in("b", "not an exception", on_message=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        FaultPlan().reorder(window=1)
    with pytest.raises(ConfigurationError):
        FaultPlan().partition({"a"}, {"b"}, between=(2.0, 1.0))
    with pytest.raises(TypeError):
        Runtime(faults="drop everything")  # type: ignore[arg-type]


def test_a_reused_plan_injects_the_same_faults_every_run() -> None:
    plan = FaultPlan(seed=1).drop(p=0.5, routine="b")

    def run() -> list[Any]:
        two_step()
        with DeterministicRuntime(seed=1, faults=plan) as runtime:
            for i in range(10):
                runtime.post("faulty", "a", "in", i)
            runtime.wait_until_all_jobs_finished()
            return [entry["job_id"] for entry in runtime.fault_log()]

    assert run() == run()


def test_logic_faults_refuse_keys_that_cannot_apply() -> None:
    with pytest.raises(ConfigurationError, match="cannot apply"):
        FaultPlan().raise_in("b", ValueError, on_message=1, slot="in")
    with pytest.raises(ConfigurationError, match="cannot apply"):
        FaultPlan().crash("b", on_message=1, source="a")


# -- what each rule matches on, and what the fault log and dead letters record ----------------


def _run_two_step(
    plan: FaultPlan, rows: int, post: dict[int, dict[str, Any]] | None = None
) -> tuple[Any, list[Any], list[Any]]:
    """Post ``rows`` rows through a -> b under ``plan`` (deterministic, seed 3; ``post``: the
    options of the post of row n); the runtime (shut down), the jobs and what b handled."""
    handled: list[Any] = []
    two_step(handled)
    with DeterministicRuntime(seed=3, faults=plan) as runtime:
        options = post or {}
        jobs = [runtime.post("faulty", "a", "in", n, **options.get(n, {}))[1] for n in range(rows)]
        assert runtime.wait_until_all_jobs_finished()
    return runtime, jobs, handled


def test_a_rule_with_ordinal_n_hits_the_nth_message_only_and_the_log_says_where() -> None:
    plan = FaultPlan(seed=0, lost_message_timeout=1.0).drop(routine="b", ordinal=2)
    runtime, jobs, handled = _run_two_step(plan, 4)
    assert handled == [0, 2, 3]
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED
    ]  # fmt: skip
    (entry,) = runtime.fault_log()
    assert {k: v for k, v in entry.items() if k != "time"} == {
        "rule": "0:drop",
        "fault": "drop",
        "job_id": jobs[1].job_id,
        "worker": jobs[1].worker_id,
        "routine": "b",
        "slot": "in",
        "source": "a",
        "ordinal": 2,
    }
    assert [
        (d["job_id"], d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()
    ] == [(jobs[1].job_id, "b", "in", "lost (drop)")]


def test_a_rule_whose_ordinal_is_a_function_or_a_collection() -> None:
    even = FaultPlan(lost_message_timeout=1.0).drop(routine="b", ordinal=lambda n: n % 2 == 0)
    assert _run_two_step(even, 5)[2] == [0, 2, 4]
    listed = FaultPlan(lost_message_timeout=1.0).drop(routine="b", ordinal=[1, 5])
    assert _run_two_step(listed, 5)[2] == [1, 2, 3]


def test_a_rule_matching_on_source_or_job_metadata() -> None:
    by_source = FaultPlan(lost_message_timeout=1.0).drop(source="a")
    assert _run_two_step(by_source, 2)[2] == []  # a's emits are lost, posts are not
    by_metadata = FaultPlan(lost_message_timeout=1.0).drop(routine="b", metadata={"lose": True})
    post = {1: {"metadata": {"lose": True}}, 2: {"metadata": {"lose": False}}}
    _, jobs, handled = _run_two_step(by_metadata, 3, post)
    assert handled == [0, 2]
    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED
    ]  # fmt: skip


def test_a_lost_message_fails_its_job_after_the_default_five_seconds() -> None:
    runtime, jobs, _ = _run_two_step(FaultPlan().drop(routine="b"), 1)
    assert jobs[0].error == f"JobTimeoutError: job '{jobs[0].job_id}' timed out after 5 s"


def test_a_delay_of_zero_hands_the_message_on_at_once_in_order() -> None:
    plan = FaultPlan().delay(0.0, routine="b", ordinal=2)
    runtime, _, handled = _run_two_step(plan, 4)
    assert handled == [0, 1, 2, 3]
    assert [entry["seconds"] for entry in runtime.fault_log()] == [0.0]


def test_a_delay_rule_with_p_picks_the_same_messages_for_the_same_seed() -> None:
    """No jitter: a delay draws once per message (whether it applies), and only then."""
    plan = FaultPlan(seed=5).delay(0.5, p=0.5, routine="b")
    runtime, _, handled = _run_two_step(plan, 12)
    assert sorted(handled) == list(range(12))
    assert [entry["ordinal"] for entry in runtime.fault_log()] == [3, 4, 8]


def test_a_duplicate_is_traced_with_its_slot_source_and_rule() -> None:
    plan = FaultPlan().duplicate(routine="b", ordinal=1)
    _, jobs, handled = _run_two_step(plan, 2)
    assert handled == [0, 0, 1]
    duplicated = [e for e in jobs[0].trace_log if e["action"] == "duplicated"]
    assert [(e["routine_id"], e["details"]) for e in duplicated] == [
        ("b", {"slot": "in", "source": "a", "fault": "0:duplicate"})
    ]


def test_a_reorder_logs_where_it_held_each_message() -> None:
    plan = FaultPlan(seed=2).reorder(window=2, routine="b")
    runtime, jobs, handled = _run_two_step(plan, 2)
    assert sorted(handled) == [0, 1]
    log = [{k: v for k, v in e.items() if k not in ("time", "job_id")} for e in runtime.fault_log()]
    worker = jobs[0].worker_id
    assert log == [
        {"rule": "0:reorder", "fault": "reorder", "worker": worker, "routine": "b",
         "slot": "in", "source": "a", "ordinal": n}
        for n in (1, 2)
    ]  # fmt: skip


def test_a_partition_ends_at_its_end_time() -> None:
    """Between 0 and 1 s a and b cannot reach each other; at exactly 1 s they can."""
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan(lost_message_timeout=0.5).partition(["a"], ["b"], between=(0.0, 1.0))
    with DeterministicRuntime(seed=3, faults=plan) as runtime:
        _, lost = runtime.post("faulty", "a", "in", "lost")
        assert lost.wait(0.75)
        runtime.advance(1.0 - runtime.now)
        assert runtime.now == 1.0
        _, passed = runtime.post("faulty", "a", "in", "passed")
        assert passed.wait(0.1)
    assert (lost.status, passed.status) == (JobStatus.FAILED, JobStatus.COMPLETED)
    assert handled == ["passed"]


def test_a_logic_fault_logs_the_activation_it_hit() -> None:
    plan = FaultPlan().raise_in("b", ValueError("injected"), on_message=2)
    runtime, jobs, _ = _run_two_step(plan, 3)
    (entry,) = runtime.fault_log()
    assert {k: v for k, v in entry.items() if k != "time"} == {
        "rule": "0:raise",
        "fault": "raise",
        "job_id": jobs[1].job_id,
        "worker": jobs[1].worker_id,
        "routine": "b",
        "ordinal": 2,
    }
    assert jobs[1].error == "ValueError: injected"


@pytest.mark.parametrize("p", ["half", None, True, 1.5, -0.1])
def test_a_fault_probability_that_is_not_a_number_in_range_is_refused(p: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"^a fault probability must be between 0 and 1, got {p!r}$"
    ):
        FaultPlan().drop(p=p)


def test_bad_logic_fault_rules_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ConfigurationError, match=r"^crash: on_message must be an int >= 1, got 0$"):
        FaultPlan().crash("b", on_message=0)
    with pytest.raises(ConfigurationError, match=r"^crash matches on \['flow', 'metadata'\]"):
        FaultPlan().crash("b", on_message=1, slot="in")
    with pytest.raises(
        ConfigurationError, match=r"^raise_in needs exactly one of on_message= or p=$"
    ):
        FaultPlan().raise_in("b", ValueError)
    with pytest.raises(
        TypeError, match=r"^raise_in needs an exception instance or class, got 'boom'$"
    ):
        FaultPlan().raise_in("b", "boom", on_message=1)  # type: ignore[arg-type]


def test_a_delay_with_jitter_waits_its_seconds_plus_a_random_part_of_the_jitter() -> None:
    """Each message waits ``seconds`` plus its own draw from [0, jitter]: never less, never
    more, and not all the same; the log says how long each one waited."""
    handled: list[Any] = []
    two_step(handled)
    plan = FaultPlan(seed=4).delay(1.0, jitter=0.2, routine="b")
    with DeterministicRuntime(seed=3, faults=plan) as runtime:
        for n in range(10):
            runtime.post("faulty", "a", "in", n)
        runtime.run_until_idle()
        runtime.advance(0.999)
        assert handled == []
        runtime.advance(0.201)  # 1.2 s in all: the longest a delay can be
        assert sorted(handled) == list(range(10))
        waited = [entry["seconds"] for entry in runtime.fault_log()]
    assert len(waited) == 10 and all(1.0 <= s <= 1.2 for s in waited)
    assert len(set(waited)) == 10  # each message draws its own jitter


def test_a_probabilistic_logic_rule_that_does_not_fire_leaves_the_activation_to_the_next() -> None:
    """Logic rules are tried in order on every activation: where the first (p=0.5) does not
    fire, the second (p=1) does, so every activation raises one of the two."""
    plan = (
        FaultPlan(seed=1)
        .raise_in("b", KeyError("first"), p=0.5)
        .raise_in("b", ValueError("second"), p=1.0)
    )
    runtime, jobs, handled = _run_two_step(plan, 10)
    assert handled == []
    assert all(job.status == JobStatus.FAILED for job in jobs)
    errors = Counter(job.error for job in jobs)
    assert set(errors) == {"KeyError: 'first'", "ValueError: second"}
    rules = Counter(entry["rule"] for entry in runtime.fault_log())
    assert rules == {
        "0:raise": errors["KeyError: 'first'"],
        "1:raise": errors["ValueError: second"],
    }


def test_bad_fault_plan_durations_and_ordinals_are_refused_naming_the_argument() -> None:
    with pytest.raises(
        InvalidDurationError, match=r"^FaultPlan: lost_message_timeout must be a finite number"
    ):
        FaultPlan(lost_message_timeout=0)
    with pytest.raises(InvalidDurationError, match=r"^delay: seconds must be a finite number"):
        FaultPlan().delay(-1.0)
    with pytest.raises(InvalidDurationError, match=r"^delay: jitter must be a finite number"):
        FaultPlan().delay(1.0, jitter=-0.5)
    with pytest.raises(
        ConfigurationError, match=r"^raise_in: on_message must be an int >= 1, got 0$"
    ):
        FaultPlan().raise_in("b", ValueError, on_message=0)


def test_each_place_of_a_plan_draws_its_own_sequence_and_the_same_place_the_same() -> None:
    """On Ray each routine actor applies the plan with random draws of its own (the place
    names it): two places draw differently, the same place the same, and no place keeps the
    draws of a runtime without places."""
    plan = FaultPlan(seed=5).drop(p=0.5)

    def draws(place: str) -> list[float]:
        (rule,) = plan.fresh_rules(place)
        return [rule.rng.random() for _ in range(8)]

    assert draws("w/a/0") == draws("w/a/0")
    assert draws("w/a/0") != draws("w/b/0")
    assert draws("") != draws("w/a/0")


def test_an_injector_resumed_from_a_snapshot_goes_on_where_the_other_stopped() -> None:
    """What a Ray routine actor killed by a crash fault hands to its successor: the counts
    and each rule's random state, so the successor draws what the first would have drawn."""
    from actorflow.faults import FaultInjector

    class Services:
        now = 0.0
        clock = None
        timers = None

        def job_record(self, job_id: str) -> None:
            return None

        def message_lost(self, job_id: str, seconds: float) -> None:
            pass

    plan = FaultPlan(seed=9).drop(p=0.5).raise_in("r", ValueError("x"), p=0.5)
    first = FaultInjector(plan, Services(), place="w/r/0")
    for rule in first.message_rules + first.logic_rules:
        rule.rng.random()
    first._ordinals[("w", "r")] = 7
    first._activations[("logic", "w", "r")] = 3
    successor = FaultInjector(plan, Services(), place="w/r/0")
    successor.resume(first.snapshot())
    assert successor.snapshot()["ordinals"] == {("w", "r"): 7}
    assert successor.snapshot()["activations"] == {("logic", "w", "r"): 3}
    expected = [rule.rng.random() for rule in first.message_rules + first.logic_rules]
    got = [rule.rng.random() for rule in successor.message_rules + successor.logic_rules]
    assert got == expected
