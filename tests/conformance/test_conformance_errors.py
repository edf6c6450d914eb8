"""Error strategies on every backend: STOP, CONTINUE, SKIP and RETRY (backoff, retry_on), and
emits that are all or nothing."""

from __future__ import annotations

from typing import Any

import pytest
from conformance_kit import Backend, append, make_routine, register

from actorflow import ErrorStrategy, JobStatus, batch_size_policy, get_current_job


def _order_flow(flow_id: str, strategy: Any, *, flow_default: Any = None) -> None:
    """split emits one line per item of the order; price raises on the line 'broken'."""

    def split_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for order in slot_data["in"]:
            for line in order:
                split.emit("line", line=line)

    def price_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for item in slot_data["in"]:
            if item["line"] == "broken":
                raise ValueError(f"cannot price {item['line']!r}")
            job.set_data(item["line"], "priced")

    split = make_routine(split_logic, events=("line",))
    flow = register(
        flow_id,
        {"split": split, "price": make_routine(price_logic, strategy=strategy)},
        [("split", "line", "price", "in")],
    )
    if flow_default is not None:
        flow.set_error_handler(flow_default)


def test_stop_fails_the_job_and_its_queued_messages_become_dead_letters(
    backend: Backend,
) -> None:
    _order_flow("orders", None)  # STOP is the default
    with backend.runtime() as runtime:
        _, job = runtime.post("orders", "split", "in", ["pen", "broken", "ink"])
        assert job.wait(backend.wait)
        assert runtime.shutdown(timeout=backend.wait) is True
    assert job.status == JobStatus.FAILED
    assert job.error == "ValueError: cannot price 'broken'"
    assert dict(job.data) == {"pen": "priced"}
    failed = [e for e in job.trace_log if e["action"] == "failed"]
    assert [(e["routine_id"], e["details"]["error"]) for e in failed] == [
        ("price", "ValueError: cannot price 'broken'")
    ]
    assert "Traceback" in failed[0]["details"]["traceback"]
    assert [(d["routine_id"], d["slot"], d["reason"]) for d in runtime.dead_letters()] == [
        ("price", "in", "job failed")
    ]


@pytest.mark.parametrize("how", ["routine", "flow"])
def test_continue_records_the_error_and_the_job_completes(backend: Backend, how: str) -> None:
    if how == "routine":
        _order_flow("orders", ErrorStrategy.CONTINUE)
    else:
        _order_flow("orders", None, flow_default="continue")
    with backend.runtime() as runtime:
        _, job = runtime.post("orders", "split", "in", ["pen", "broken", "ink"])
        assert job.wait(backend.wait)
        dead = runtime.dead_letter_counts()
    assert job.status == JobStatus.COMPLETED, job.error
    assert dict(job.data) == {"pen": "priced", "ink": "priced"}
    assert job.errors == [
        {
            "routine_id": "price",
            "error": "ValueError: cannot price 'broken'",
            "handled_as": "continue",
        }
    ]
    assert [e["action"] for e in job.trace_log] == ["continue"]
    assert dead == {}


def test_skip_records_the_error_and_a_dead_letter_and_the_job_completes(
    backend: Backend,
) -> None:
    _order_flow("orders", "skip")
    with backend.runtime() as runtime:
        _, job = runtime.post("orders", "split", "in", ["pen", "broken", "ink"])
        assert job.wait(backend.wait)
        dead = runtime.dead_letter_counts()
        letters = [(d["job_id"], d["routine_id"], d["reason"]) for d in runtime.dead_letters()]
    assert job.status == JobStatus.COMPLETED, job.error
    assert dict(job.data) == {"pen": "priced", "ink": "priced"}
    assert [error["handled_as"] for error in job.errors] == ["skip"]
    assert dead == {"skipped": 1}
    assert letters == [(job.job_id, "price", "skipped")]


def _flaky(failures: int, *, error: type[Exception] = ConnectionError) -> Any:
    """A logic whose first ``failures`` tries (per job) raise ``error``."""

    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        tries = state.increment("_tries", job.job_id)
        if tries <= failures:
            raise error(f"try {tries} failed")
        job.set_data("tries", tries)

    return logic


def test_retry_runs_again_with_the_same_input_and_backs_off(backend: Backend) -> None:
    strategy = ErrorStrategy.RETRY(max_retries=3, delay=0.05, backoff=2.0)
    register("flaky", {"r": make_routine(_flaky(3), strategy=strategy)})
    with backend.runtime() as runtime:
        _, job = runtime.post("flaky", "r", "in", {"order": 7})
        assert job.wait(backend.wait)
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.get_data("tries") == 4
    retries = [e["details"] for e in job.trace_log if e["action"] == "retry"]
    assert [(r["attempt"], r["delay"], r["error"]) for r in retries] == [
        (1, 0.05, "ConnectionError: try 1 failed"),
        (2, 0.1, "ConnectionError: try 2 failed"),
        (3, 0.2, "ConnectionError: try 3 failed"),
    ]
    # the backoff was waited: the job took at least the three delays
    assert job.completed_at is not None
    took = (job.completed_at - job.created_at).total_seconds()
    assert took >= (0.05 + 0.1 + 0.2) * 0.9


def test_retry_gives_up_with_the_last_error_and_the_number_of_tries(backend: Backend) -> None:
    strategy = ErrorStrategy.RETRY(max_retries=2, delay=0.0, backoff=1.0)
    register("down", {"r": make_routine(_flaky(10), strategy=strategy)})
    with backend.runtime() as runtime:
        _, job = runtime.post("down", "r", "in", 1)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == "ConnectionError: try 3 failed (after 3 tries)"


@pytest.mark.parametrize(
    "policy", [None, batch_size_policy(1, timeout=None)], ids=["immediate", "released"]
)
def test_retry_by_default_retries_three_times_then_fails_in_its_routine(
    backend: Backend, policy: Any
) -> None:
    """``RETRY()`` retries 3 times: 4 tries, counted from 1 for a message run at once and
    for data an activation policy released."""
    register(
        "down",
        {"r": make_routine(_flaky(10), strategy=ErrorStrategy.RETRY(delay=0.0), policy=policy)},
    )
    with backend.runtime() as runtime:
        _, job = runtime.post("down", "r", "in", 1)
        assert job.wait(backend.wait)
    assert job.status == JobStatus.FAILED
    assert job.error == "ConnectionError: try 4 failed (after 4 tries)"
    trace = [(e["routine_id"], e["action"]) for e in job.trace_log]
    assert trace == [("r", "retry")] * 3 + [("r", "failed")]


def test_retry_retries_only_the_listed_exceptions(backend: Backend) -> None:
    strategy = ErrorStrategy.RETRY(max_retries=5, delay=0.0, retry_on=ConnectionError)
    register("strict", {"r": make_routine(_flaky(10, error=KeyError), strategy=strategy)})
    with backend.runtime() as runtime:
        state = runtime.exec("strict")
        _, job = runtime.post("strict", "r", "in", 1)
        assert job.wait(backend.wait)
        tries = state.get_routine_state("_tries")
    assert job.status == JobStatus.FAILED
    assert job.error == "KeyError: 'try 1 failed'"
    assert tries == {job.job_id: 1}


def test_a_failed_try_delivers_none_of_its_emits(backend: Backend) -> None:
    """Each try emits a page and the first one then raises: downstream sees only the page of
    the try that returned, and the job does not complete before the retry."""

    def fetch_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        attempt = state.increment("_attempts", job.job_id)
        fetch.emit("page", attempt=attempt)  # delivered only if the call returns
        if attempt == 1:
            raise ConnectionError("the first try fails after its emit")

    def store_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        for page in slot_data["in"]:
            append(state, "_stored", page["attempt"])
            job.set_data("stored", page["attempt"])

    fetch = make_routine(
        fetch_logic, events=("page",), strategy=ErrorStrategy.RETRY(max_retries=2, delay=0.2)
    )
    register(
        "fetching",
        {"fetch": fetch, "store": make_routine(store_logic)},
        [("fetch", "page", "store", "in")],
    )
    with backend.runtime() as runtime:
        state = runtime.exec("fetching")
        _, job = runtime.post("fetching", "fetch", "in", "https://example.invalid/a")
        assert job.wait(backend.wait)
        stored = state.get_routine_state("_stored")  # read at once, as the job ended
        data = dict(job.data)
    assert job.status == JobStatus.COMPLETED, job.error
    assert stored == [2]
    assert data == {"stored": 2}


def test_a_waiting_retry_does_not_block_other_messages(backend: Backend) -> None:
    def logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        job = get_current_job()
        assert job is not None
        if slot_data["in"][0] == "slow" and state.increment("_slow", "tries") == 1:
            raise ConnectionError("later")
        job.set_data("done", slot_data["in"][0])

    strategy = ErrorStrategy.RETRY(max_retries=1, delay=1.0)
    register("nonblocking", {"r": make_routine(logic, strategy=strategy)})
    with backend.runtime() as runtime:
        _, slow = runtime.post("nonblocking", "r", "in", "slow")
        _, fast = runtime.post("nonblocking", "r", "in", "fast")
        assert fast.wait(backend.wait)  # handled while the retry of "slow" waits
        assert fast.status == JobStatus.COMPLETED
        assert not slow.done
        assert slow.wait(backend.wait)
    assert slow.status == JobStatus.COMPLETED
    assert (slow.get_data("done"), fast.get_data("done")) == ("slow", "fast")
