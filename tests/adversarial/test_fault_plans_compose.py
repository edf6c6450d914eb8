"""Fault plans compose: each rule sees what the rules before it let through, in the order they
were written, and every fault injected is in the fault log.

The flow is ``a -> b``; ``b`` records ``(value, virtual time)`` of what it handles. Four jobs are
posted in two waves: values 0 and 1 at 0 s (their messages to ``b`` are its 1st and 2nd), values
2 and 3 at 10 s (3rd and 4th). Each rule kind is written so that, as the first rule, it lets
the second wave through (a lossy rule hits the first wave only) and, as the second rule, it
lets the first wave through, so both rules of every pair have something to act on. A small
model of the plan (below) says what each pair must do.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import pytest

from actorflow import Flow, FlowRegistry, JobStatus, Routine, Runtime
from actorflow.faults import FaultPlan
from actorflow.testing import DeterministicRuntime

KINDS = ("drop", "delay", "duplicate", "reorder", "partition", "raise_in", "crash")
LOGIC = {"raise_in": "raise", "crash": "crash"}  # rule kind -> fault name in the log
WAVES = {0: 0.0, 1: 0.0, 2: 10.0, 3: 10.0}  # value -> when its job is posted
LOSSY_ORDINALS = {"first": {1, 2}, "second": {3, 4}}
PARTITION_WINDOWS = {"first": (0.0, 5.0), "second": (10.0, 12.0)}
LOGIC_ACTIVATION = {"first": 1, "second": 2}


def two_step(handled: list[tuple[Any, float]], clock: list[Any]) -> None:
    """a -> b; b records what it handles, and when."""
    FlowRegistry.get_instance().clear()
    a = Routine()
    a.add_slot("in")
    a.add_event("out", ["v"])
    a.set_logic(lambda sd, m, ws: a.emit("out", v=sd["in"][0]))
    b = Routine()
    b.add_slot("in")
    b.set_logic(lambda sd, m, ws: handled.append((sd["in"][0]["v"], clock[0].now)))
    flow = Flow("faulty")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    flow.connect("a", "out", "b", "in")
    FlowRegistry.get_instance().register(flow)


def add_rule(plan: FaultPlan, kind: str, role: str) -> FaultPlan:
    if kind == "drop":
        return plan.drop(routine="b", ordinal=LOSSY_ORDINALS[role])
    if kind == "delay":
        return plan.delay(1.0, routine="b")
    if kind == "duplicate":
        return plan.duplicate(routine="b")
    if kind == "reorder":
        return plan.reorder(window=2, routine="b")
    if kind == "partition":
        return plan.partition({"a"}, {"b"}, between=PARTITION_WINDOWS[role])
    if kind == "raise_in":
        return plan.raise_in("b", ValueError("injected"), on_message=LOGIC_ACTIVATION[role])
    assert kind == "crash"
    return plan.crash("b", on_message=LOGIC_ACTIVATION[role])


@dataclass(frozen=True)
class Copy:
    value: int
    ordinal: int
    time: float


@dataclass
class Expected:
    faults: Counter[str]
    handled: list[tuple[int, float]]  # (value, time) b handles, when no logic fault runs
    lost: set[int]  # values whose message never reaches b
    outcomes: Counter[str]  # "completed", or the failed job's error type


def model(rules: list[tuple[str, str]]) -> Expected:
    """What a plan of these (kind, role) rules does to the four jobs, rule after rule."""
    copies = [Copy(value, value + 1, at) for value, at in WAVES.items()]
    faults: Counter[str] = Counter()
    lost: set[int] = set()
    for kind, role in rules:
        if kind in LOGIC:
            continue  # acts on b's activations, after every message rule
        if kind in ("drop", "partition"):
            if kind == "drop":
                hit = [c for c in copies if c.ordinal in LOSSY_ORDINALS[role]]
            else:
                t0, t1 = PARTITION_WINDOWS[role]
                hit = [c for c in copies if t0 <= c.time < t1]
            faults[kind] += len(hit)
            lost |= {c.value for c in hit}
            copies = [c for c in copies if c not in hit]
            continue
        faults[kind] += len(copies)  # delay, duplicate, reorder: every copy that reaches it
        if kind == "delay":
            copies = [replace(c, time=c.time + 1.0) for c in copies]
        elif kind == "duplicate":
            copies = [c for c in copies for _ in range(2)]
    delivered = {c.value for c in copies}
    assert not delivered & lost  # a wave is delivered or lost whole
    if any(kind in LOGIC for kind, _ in rules):
        assert len(delivered) >= 2  # b has a 1st and a 2nd activation, of two jobs
    outcomes: Counter[str] = Counter(JobTimeoutError=len(lost), completed=len(delivered))
    for kind, _ in rules:
        if kind in LOGIC:  # activation 1 fails its job: activation 2 is another job's
            faults[LOGIC[kind]] += 1
            outcomes["completed"] -= 1
            outcomes["ValueError" if kind == "raise_in" else "ActorCrash"] += 1
    handled = sorted((c.value, c.time) for c in copies)
    return Expected(+faults, handled, lost, +outcomes)


def run(plan: FaultPlan, seed: int = 0, **options: Any) -> tuple[Any, ...]:
    handled: list[tuple[Any, float]] = []
    clock: list[Any] = []
    two_step(handled, clock)
    with DeterministicRuntime(seed=seed, faults=plan, **options) as runtime:
        clock.append(runtime)
        jobs = []
        for value, at in WAVES.items():
            if at > runtime.now:
                runtime.run_until_idle()
                runtime.advance(at - runtime.now)
            jobs.append(runtime.post("faulty", "a", "in", value)[1])
        assert runtime.wait_until_all_jobs_finished(60)
        log = runtime.fault_log()
        dead = runtime.dead_letter_counts()
    return jobs, handled, log, dead


def outcome(job: Any) -> str:
    if job.status == JobStatus.COMPLETED:
        return "completed"
    assert job.status == JobStatus.FAILED, job.status
    return str(job.error).split(":")[0]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
@pytest.mark.parametrize(("first", "second"), list(itertools.product(KINDS, KINDS)))
def test_every_pair_of_rule_kinds_composes_in_the_order_written(
    first: str, second: str, strict: bool
) -> None:
    plan = add_rule(add_rule(FaultPlan(lost_message_timeout=3.0), first, "first"), second, "second")
    jobs, handled, log, dead = run(plan, strict=strict)
    expected = model([(first, "first"), (second, "second")])

    assert Counter(entry["fault"] for entry in log) == expected.faults
    by_rule = Counter(entry["rule"] for entry in log)
    assert by_rule["0:" + LOGIC.get(first, first)] > 0  # both rules injected faults
    assert by_rule["1:" + LOGIC.get(second, second)] > 0
    assert Counter(outcome(job) for job in jobs) == expected.outcomes
    assert {i for i, job in enumerate(jobs) if outcome(job) == "JobTimeoutError"} == expected.lost
    for kind in ("drop", "partition"):
        assert dead.get(f"lost ({kind})", 0) == expected.faults[kind]
    if first not in LOGIC and second not in LOGIC:
        assert sorted(handled) == expected.handled


def test_the_model_of_the_pair_test_says_what_the_issue_says() -> None:
    """drop after duplicate drops both copies; partition after delay sees the delayed time."""
    assert model([("duplicate", "first"), ("drop", "second")]).faults == Counter(
        duplicate=4, drop=4
    )
    late = model([("delay", "first"), ("partition", "second")])
    assert late.faults == Counter(delay=4, partition=2) and late.lost == {2, 3}


# -- the cases reported, as written --------------------------------------------------------
def test_a_drop_after_a_reorder_drops_every_message_the_reorder_held() -> None:
    plan = FaultPlan(lost_message_timeout=2.0).reorder(window=2, routine="b")
    jobs, handled, log, _ = run(plan.drop(p=1.0, routine="b"))
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 4
    assert all(str(job.error).startswith("JobTimeoutError") for job in jobs)
    assert Counter(entry["fault"] for entry in log) == Counter(reorder=4, drop=4)
    assert handled == []


def test_a_partition_after_a_reorder_lets_nothing_through() -> None:
    plan = FaultPlan(lost_message_timeout=2.0).reorder(window=2, routine="b")
    jobs, handled, log, _ = run(plan.partition({"a"}, {"b"}, between=(0.0, 100.0)))
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 4
    assert Counter(entry["fault"] for entry in log) == Counter(reorder=4, partition=4)
    assert handled == []


def test_a_partition_after_a_delay_judges_the_time_the_message_reaches_it() -> None:
    """Sent at 0 s and 10 s, outside the window; delayed by 1 s, inside it: nothing passes."""
    plan = FaultPlan(lost_message_timeout=2.0).delay(1.0, routine="b")
    plan.partition({"a"}, {"b"}, between=(0.5, 1.5)).partition({"a"}, {"b"}, between=(10.5, 11.5))
    jobs, handled, log, _ = run(plan)
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 4
    assert [entry["rule"] for entry in log if entry["fault"] == "partition"] == [
        "1:partition", "1:partition", "2:partition", "2:partition",
    ]  # fmt: skip
    assert handled == []


def test_every_copy_of_a_duplicate_meets_the_rules_after_it() -> None:
    plan = FaultPlan(lost_message_timeout=2.0).duplicate(routine="b").drop(routine="b")
    jobs, handled, log, dead = run(plan)
    assert Counter(entry["fault"] for entry in log) == Counter(duplicate=4, drop=8)
    assert dead["lost (drop)"] == 8 and handled == []
    assert [job.status for job in jobs] == [JobStatus.FAILED] * 4


def test_a_reorder_holds_the_copies_of_a_duplicate_like_any_message() -> None:
    plan = FaultPlan().duplicate(routine="b").reorder(window=3, routine="b")
    jobs, handled, log, _ = run(plan)
    assert Counter(entry["fault"] for entry in log) == Counter(duplicate=4, reorder=8)
    assert sorted(value for value, _ in handled) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 4


def test_a_reorder_group_is_released_by_its_own_hold_time_not_an_earlier_groups() -> None:
    """A group that filled up leaves its timer behind; it must not release the next group."""
    handled: list[tuple[Any, float]] = []
    clock: list[Any] = []
    two_step(handled, clock)
    plan = FaultPlan().reorder(window=2, hold=1.0, routine="b")
    with DeterministicRuntime(faults=plan) as runtime:
        clock.append(runtime)
        for value in (0, 1):  # a full group at 0 s; its timer is due at 1 s
            runtime.post("faulty", "a", "in", value)
        runtime.advance(0.5)
        runtime.post("faulty", "a", "in", 2)  # a new group, short: held until 1.5 s
        runtime.advance(0.6)  # 1.1 s: the first group's timer has fired
        assert sorted(handled) == [(0, 0.0), (1, 0.0)]
        runtime.advance(0.4)  # 1.5 s
        assert sorted(handled) == [(0, 0.0), (1, 0.0), (2, 1.5)]


def test_the_first_logic_rule_to_fire_on_an_activation_is_the_one_that_raises() -> None:
    plan = FaultPlan().raise_in("b", ValueError("first"), on_message=1).crash("b", on_message=1)
    jobs, _, log, _ = run(plan)
    assert [entry["rule"] for entry in log] == ["0:raise"]
    assert Counter(outcome(job) for job in jobs) == Counter(completed=3, ValueError=1)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_the_same_seed_gives_the_same_fault_log_for_a_composed_plan(strict: bool) -> None:
    def plan(seed: int) -> FaultPlan:
        return (
            FaultPlan(seed=seed, lost_message_timeout=2.0)
            .duplicate(p=0.5, routine="b")
            .delay(0.5, jitter=0.5, p=0.5, routine="b")
            .reorder(window=3, hold=0.2, routine="b")
            .drop(p=0.3, routine="b")
        )

    def faults(seed: int) -> tuple[list[dict[str, Any]], list[Any]]:
        jobs, handled, log, _ = run(plan(seed), seed=seed, strict=strict)
        # job ids are built from the seed: compare jobs by their place in posting order
        place = {job.job_id: n for n, job in enumerate(jobs)}
        log = [{**entry, "job_id": place[entry["job_id"]]} for entry in log]
        return log, [outcome(job) for job in jobs] + handled

    assert faults(4) == faults(4)
    assert faults(4) != faults(5)


@pytest.mark.timeout(30)
def test_a_composed_plan_keeps_job_accounting_exact_on_the_thread_runtime() -> None:
    """Copies, delays, reorder groups and drops on actor threads and the timer thread: a job
    completes exactly when none of its copies was dropped, else fails by its timeout."""
    handled: list[tuple[Any, float]] = []
    clock: list[Any] = []
    two_step(handled, clock)
    plan = (
        FaultPlan(seed=2, lost_message_timeout=0.5)
        .duplicate(routine="b")
        .delay(0.01, jitter=0.01, p=0.5, routine="b")
        .reorder(window=3, hold=0.05, routine="b")
        .drop(p=0.3, routine="b")
    )
    with Runtime(faults=plan) as runtime:
        clock.append(runtime)
        jobs = [runtime.post("faulty", "a", "in", value)[1] for value in range(60)]
        assert runtime.wait_until_all_jobs_finished(20)
        log = runtime.fault_log()
    faults = Counter(entry["fault"] for entry in log)
    assert faults["duplicate"] == 60 and faults["reorder"] == 120 and 0 < faults["drop"] < 120
    dropped = {entry["job_id"] for entry in log if entry["fault"] == "drop"}
    times_handled = Counter(value for value, _ in handled)
    for value, job in enumerate(jobs):
        if job.job_id in dropped:
            assert job.status == JobStatus.FAILED and "JobTimeoutError" in (job.error or "")
        else:
            assert job.status == JobStatus.COMPLETED, job.error
            assert times_handled[value] == 2  # the message and its copy
