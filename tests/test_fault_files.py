"""Fault plan files: a YAML plan loads into the plan its Python calls build, and runs the same;
every mistake names the file, the line of the offending node and the problem."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actorflow import ConfigurationError, Flow, FlowRegistry
from actorflow.faults import FaultPlan, FaultRule
from actorflow.testing import DeterministicRuntime, FaultPlanFileError, load_fault_plan
from actorflow.testing.strategies import RelayRoutine

PLAN_FILE = """\
seed: 7
lost_message_timeout: 3
faults:
  - drop: {p: 0.1, routine: charge}
  - delay: {seconds: 0.05, jitter: 0.02, source: order}
  - duplicate: {p: 0.05}
  - reorder: {window: 4, hold: 0.05, routine: ship}
  - raise_in: {routine: charge, error: ConnectionError, message: card network down, p: 0.2}
  - crash: {routine: ship, on_message: 12}
  - partition: {between: [1.0, 2.0], groups: [[order], [charge]]}
"""


def python_plan() -> FaultPlan:
    """The plan of PLAN_FILE, built with the Python calls."""
    return (
        FaultPlan(seed=7, lost_message_timeout=3)
        .drop(p=0.1, routine="charge")
        .delay(0.05, jitter=0.02, source="order")
        .duplicate(p=0.05)
        .reorder(window=4, hold=0.05, routine="ship")
        .raise_in("charge", ConnectionError("card network down"), p=0.2)
        .crash("ship", on_message=12)
        .partition({"order"}, {"charge"}, between=(1.0, 2.0))
    )


def fields(rule: FaultRule) -> dict[str, Any]:
    """A rule's fields, its exception as (class, args): instances never compare equal."""
    exc = rule.exc
    if isinstance(exc, BaseException):
        exc = (type(exc), exc.args)
    return {
        "index": rule.index, "kind": rule.kind, "match": rule.match, "p": rule.p,
        "seconds": rule.seconds, "jitter": rule.jitter, "window": rule.window,
        "on_message": rule.on_message, "exc": exc, "groups": rule.groups,
        "between": rule.between,
    }  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_loads_into_the_plan_its_python_calls_build(tmp_path: Path) -> None:
    plan = load_fault_plan(write(tmp_path, PLAN_FILE))
    expected = python_plan()
    assert (plan.seed, plan.lost_message_timeout) == (7, 3.0)
    assert [fields(rule) for rule in plan.rules] == [fields(rule) for rule in expected.rules]
    assert type(plan.lost_message_timeout) is float


def relay_flow() -> None:
    flow = Flow("orders")
    for routine_id in ("order", "charge", "ship"):
        flow.add_routine(RelayRoutine(), routine_id)
    flow.connect("order", "out", "charge", "in")
    flow.connect("charge", "out", "ship", "in")
    FlowRegistry.get_instance().register(flow)


def run(plan: FaultPlan) -> tuple[list[dict[str, Any]], list[str]]:
    """The fault log (job ids as posting places) and the jobs' statuses of one seeded run."""
    relay_flow()
    with DeterministicRuntime(seed=5, faults=plan) as runtime:
        jobs = []
        for n in range(40):
            jobs.append(runtime.post("orders", "order", "in", {"value": n})[1])
            runtime.advance(0.1)
        assert runtime.wait_until_all_jobs_finished()
        place = {job.job_id: n for n, job in enumerate(jobs)}
        log = [{**entry, "job_id": place.get(entry["job_id"])} for entry in runtime.fault_log()]
        statuses = [job.status.value for job in jobs]
    FlowRegistry.get_instance().clear()
    return log, statuses


def test_a_loaded_plan_injects_the_faults_of_the_python_plan(tmp_path: Path) -> None:
    from_file = run(load_fault_plan(write(tmp_path, PLAN_FILE)))
    from_python = run(python_plan())
    assert from_file == from_python
    kinds = {entry["fault"] for entry in from_file[0]}
    assert {"drop", "delay", "reorder", "raise", "crash", "partition"} <= kinds


def test_match_keys_ordinal_lists_metadata_and_null_source(tmp_path: Path) -> None:
    plan = load_fault_plan(
        write(
            tmp_path,
            """\
            faults:
              - drop: {ordinal: [1, 3], metadata: {tenant: acme, tier: 2}, source: null}
              - duplicate:
                  ordinal: 2
                  flow: orders
                  slot: in
                  event: out
              - raise_in: {routine: charge, error: KeyError, on_message: 2, flow: orders}
              - crash: {routine: ship, on_message: 1, metadata: {tenant: acme}}
              - delay: {seconds: 1}
              - reorder:
            """,
        )
    )
    assert plan.seed == 0
    assert plan.lost_message_timeout == 5.0
    expected = (
        FaultPlan()
        .drop(ordinal=[1, 3], metadata={"tenant": "acme", "tier": 2}, source=None)
        .duplicate(ordinal=2, flow="orders", slot="in", event="out")
        .raise_in("charge", KeyError, on_message=2, flow="orders")
        .crash("ship", on_message=1, metadata={"tenant": "acme"})
        .delay(1)
        .reorder()
    )
    assert [fields(rule) for rule in plan.rules] == [fields(rule) for rule in expected.rules]


def test_an_empty_list_of_faults_is_a_plan_without_rules(tmp_path: Path) -> None:
    assert load_fault_plan(write(tmp_path, "seed: 3\nfaults: []\n")).rules == []
    assert load_fault_plan(write(tmp_path, "faults:\n")).rules == []


def test_a_json_file_loads_too(tmp_path: Path) -> None:
    text = '{\n\t"seed": 2,\n\t"faults": [{"drop": {"p": 0.5, "routine": "charge"}}]\n}\n'
    plan = load_fault_plan(write(tmp_path, text, "plan.json"))
    assert [fields(rule) for rule in plan.rules] == [
        fields(rule) for rule in FaultPlan(seed=2).drop(p=0.5, routine="charge").rules
    ]


def test_an_error_class_named_module_colon_name_is_imported_from_beside_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop_errors_for_faults.py").write_text(
        "class CardDeclined(Exception):\n    pass\n"
    )
    plan = load_fault_plan(
        write(
            tmp_path,
            """\
            faults:
              - raise_in: {routine: charge, error: "shop_errors_for_faults:CardDeclined", p: 1}
            """,
        )
    )
    exc = plan.rules[0].exc
    assert isinstance(exc, type) and exc.__name__ == "CardDeclined"


# -- mistakes ----------------------------------------------------------------------------
MISTAKES = [
    pytest.param("", 1, "the file is empty (a fault plan file needs faults)", id="empty"),
    pytest.param(
        "faults: [\n  - drop\n",
        2,
        "YAML syntax error: expected the node content, but found '-' (while parsing a flow "
        "node, line 2)",
        id="syntax",
    ),
    pytest.param(
        "faults: []\nsed: 3\n",
        2,
        "the fault plan file: unknown key 'sed' (did you mean 'seed'? valid keys: seed, "
        "lost_message_timeout, faults)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "- drop: {}\n", 1, "the fault plan file must be a mapping, not a list", id="not-a-mapping"
    ),
    pytest.param(
        "seed: 1\n",
        1,
        "missing key 'faults' (the list of fault rules)",
        id="missing-faults",
    ),
    pytest.param(
        "seed: one\nfaults: []\n", 1, "seed must be an int, not a string", id="seed-not-an-int"
    ),
    pytest.param(
        "lost_message_timeout: 0\nfaults: []\n",
        1,
        "lost_message_timeout must be a finite number of seconds > 0 and at most 9223372036, got 0",
        id="lost-message-timeout",
    ),
    pytest.param(
        "faults: {drop: {}}\n",
        1,
        "faults must be a list of rules, not a mapping",
        id="faults-not-a-list",
    ),
    pytest.param(
        "faults:\n  - drop\n",
        2,
        "a fault rule is a mapping with one key, its kind (drop, delay, duplicate, reorder, "
        "partition, raise_in, crash), mapped to its fields, not a string",
        id="rule-not-a-mapping",
    ),
    pytest.param(
        "faults:\n  - drop:\n    p: 0.5\n",
        2,
        "a fault rule has one key, its kind (drop, delay, duplicate, reorder, partition, "
        "raise_in, crash), mapped to its fields; found 2 keys: drop, p (indent the fields "
        "under the kind)",
        id="rule-with-two-keys",
    ),
    pytest.param(
        "faults:\n  - {}\n",
        2,
        "a fault rule has one key, its kind (drop, delay, duplicate, reorder, partition, "
        "raise_in, crash), mapped to its fields; found 0 keys: none",
        id="rule-without-a-key",
    ),
    pytest.param(
        "faults:\n  - dorp: {p: 0.5}\n",
        2,
        "unknown fault kind 'dorp' (did you mean 'drop'? kinds: drop, delay, duplicate, "
        "reorder, partition, raise_in, crash)",
        id="unknown-kind",
    ),
    pytest.param(
        "faults:\n  - drop:\n      p: 0.5\n      routin: charge\n",
        4,
        "drop: unknown key 'routin' (did you mean 'routine'? valid keys: p, flow, routine, "
        "source, slot, event, metadata, ordinal)",
        id="unknown-key",
    ),
    pytest.param(
        "faults:\n  - crash: {routine: ship, on_message: 1, slot: in}\n",
        2,
        "crash: unknown key 'slot' (valid keys: routine, on_message, flow, metadata)",
        id="message-key-on-a-logic-rule",
    ),
    pytest.param(
        "faults:\n  - drop:\n      p: 0.5\n      p: 0.6\n",
        4,
        "drop: duplicate key 'p' (first on line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "faults:\n  - drop: {1: 0.5}\n",
        2,
        "drop: keys must be strings, not an int",
        id="key-not-a-string",
    ),
    pytest.param(
        "faults:\n  - drop: 0.5\n",
        2,
        "drop must be a mapping, not a float",
        id="fields-not-a-mapping",
    ),
    pytest.param(
        "faults:\n  - delay: {jitter: 1}\n", 2, "delay: missing key 'seconds'", id="missing-key"
    ),
    pytest.param(
        "faults:\n  - drop: {p: 1.5}\n",
        2,
        "drop: p must be a number between 0 and 1, not 1.5",
        id="p-out-of-range",
    ),
    pytest.param(
        "faults:\n  - duplicate:\n      p: often\n",
        3,
        "duplicate: p must be a number between 0 and 1, not a string",
        id="p-not-a-number",
    ),
    pytest.param(
        "faults:\n  - delay: {seconds: soon}\n",
        2,
        "delay: seconds must be a number of seconds, got 'soon'",
        id="seconds-not-a-number",
    ),
    pytest.param(
        "faults:\n  - delay: {seconds: -1}\n",
        2,
        "delay: seconds must be a finite number of seconds >= 0 and at most 9223372036, got -1",
        id="seconds-negative",
    ),
    pytest.param(
        "faults:\n  - reorder: {hold: .inf}\n",
        2,
        "reorder: hold must be a finite number of seconds >= 0 and at most 9223372036, got inf",
        id="hold-infinite",
    ),
    pytest.param(
        "faults:\n  - crash: {routine: ship, on_message: 0}\n",
        2,
        "crash: on_message must be an int >= 1, not 0",
        id="on-message-zero",
    ),
    pytest.param(
        "faults:\n  - raise_in: {routine: ship, error: KeyError, on_message: 1.5}\n",
        2,
        "raise_in: on_message must be an int >= 1, not 1.5",
        id="on-message-float",
    ),
    pytest.param(
        "faults:\n  - reorder: {window: 1}\n",
        2,
        "reorder: window must be an int >= 2, not 1",
        id="window-too-small",
    ),
    pytest.param(
        "faults:\n  - crash: {routine: '', on_message: 1}\n",
        2,
        "crash: routine must be a non-empty string, not a string",
        id="routine-empty",
    ),
    pytest.param(
        "faults:\n  - drop: {source: 3}\n",
        2,
        "drop: source must be a non-empty string or null, not 3",
        id="source-not-a-string",
    ),
    pytest.param(
        "faults:\n  - drop: {ordinal: [1, zero]}\n",
        2,
        "drop: ordinal must be an int >= 1 or a non-empty list of them, not [1, 'zero']",
        id="ordinal",
    ),
    pytest.param(
        "faults:\n  - drop: {metadata: [tenant]}\n",
        2,
        "drop: metadata must be a mapping, not a list",
        id="metadata-not-a-mapping",
    ),
    pytest.param(
        "faults:\n  - partition: {between: [0, 1], groups: [[order], []]}\n",
        2,
        "partition: groups must be two non-empty lists of routine ids, not [['order'], []]",
        id="groups",
    ),
    pytest.param(
        "faults:\n  - partition:\n      groups: [[order], [charge]]\n      between: [2, 1]\n",
        4,
        "partition: between must be [t0, t1], numbers with 0 <= t0 <= t1, not [2, 1]",
        id="between",
    ),
    pytest.param(
        "faults:\n  - raise_in: {routine: charge, error: ConectionError, p: 0.5}\n",
        2,
        "raise_in: error: no builtin exception 'ConectionError' (did you mean 'ConnectionError'?)",
        id="unknown-exception",
    ),
    pytest.param(
        "faults:\n  - raise_in: {routine: charge, error: print, p: 0.5}\n",
        2,
        "raise_in: error: 'print' is not an Exception subclass",
        id="not-an-exception",
    ),
    pytest.param(
        "faults:\n  - raise_in: {routine: charge, error: 'no_such_module_here:Oops', p: 1}\n",
        2,
        "raise_in: error: cannot import module 'no_such_module_here' for class "
        "'no_such_module_here:Oops' (No module named 'no_such_module_here')",
        id="exception-module-missing",
    ),
    pytest.param(
        "faults:\n  - raise_in:\n      routine: charge\n      error: UnicodeDecodeError\n"
        "      message: bad bytes\n      p: 1\n",
        4,
        "raise_in: error: UnicodeDecodeError('bad bytes') raised TypeError: function takes "
        "exactly 5 arguments (1 given)",
        id="exception-not-built-from-a-message",
    ),
    pytest.param(
        "faults:\n  - raise_in: {routine: charge, error: KeyError, message: 3, p: 1}\n",
        2,
        "raise_in: message must be a string, not 3",
        id="message-not-a-string",
    ),
    pytest.param(
        "faults:\n  - drop: {}\n  - raise_in: {routine: charge, error: KeyError, on_message: 1, "
        "p: 0.5}\n",
        3,
        "raise_in needs exactly one of on_message= or p=",
        id="plan-method-refuses-at-the-rule-line",
    ),
    pytest.param(
        "faults:\n  - delay:\n      seconds: 9223372036\n      jitter: 9223372036\n",
        2,
        "delay: seconds + jitter must be a finite number of seconds >= 0 and at most "
        "9223372036, got 18446744072.0",
        id="plan-duration-error-at-the-rule-line",
    ),
]


@pytest.mark.parametrize(("text", "line", "problem"), MISTAKES)
def test_every_mistake_names_file_line_and_problem(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(FaultPlanFileError) as caught:
        load_fault_plan(path)
    error = caught.value
    assert str(error) == f"{path}:{line}: {problem}"
    assert (error.filename, error.line, error.problem) == (str(path), line, problem)
    assert isinstance(error, ConfigurationError)


def test_a_missing_file_is_an_error_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(FaultPlanFileError) as caught:
        load_fault_plan(path)
    assert caught.value.line is None
    assert str(caught.value).startswith(f"{path}: cannot read the fault plan file (")


def test_tags_that_build_python_objects_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        seed: 1
        faults:
          - raise_in: {routine: charge, error: !!python/name:builtins.ValueError '', p: 1}
        """,
    )
    with pytest.raises(FaultPlanFileError) as caught:
        load_fault_plan(path)
    assert caught.value.line == 3
    assert "could not determine a constructor for the tag" in caught.value.problem


def test_the_error_pickles_with_its_parts(tmp_path: Path) -> None:
    error = FaultPlanFileError(str(tmp_path / "plan.yaml"), 4, "drop: p must be ...")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is FaultPlanFileError
    assert (copy.filename, copy.line, copy.problem, str(copy)) == (
        error.filename, error.line, error.problem, str(error),
    )  # fmt: skip
