"""Flow files: good YAML and JSON files load and run; every mistake names file, line, problem."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorflow import ConfigurationError, ErrorStrategy, FlowRegistry, Runtime
from actorflow.flowfile import FlowFileError, load_flow_file

ROUTINES = """\
from actorflow import Routine, batch_size_policy, get_current_job

EXECUTED = []  # a module that ran code from a flow file would leave a mark here


class Parse(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("line")
        self.add_event("parsed")

    def logic(self, slot_data, policy_message, worker_state):
        sep = self.get_config("sep", ",")
        for line in slot_data["line"]:
            name, quantity = line.split(sep)
            self.emit("parsed", name=name, quantity=int(quantity))


class Store(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("item")

    def logic(self, slot_data, policy_message, worker_state):
        for item in slot_data["item"]:
            worker_state.increment("store", item["name"], item["quantity"])
            get_current_job().set_data("stored", item["name"])


class Batched(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("item")
        self.set_activation_policy(batch_size_policy(2))

    def logic(self, slot_data, policy_message, worker_state):
        pass


class NoLogic(Routine):
    def __init__(self):
        super().__init__()
        self.add_slot("in")


class NeedsArgs(Routine):
    def __init__(self, name):
        super().__init__()


class NotARoutine:
    pass


def parse_function(slot_data, policy_message, worker_state):
    pass
"""

_names = itertools.count(1)


@pytest.fixture
def mod(tmp_path: Path) -> Iterator[str]:
    """A module of routines beside the flow files, under a name no other test uses."""
    name = f"flowfile_routines_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(ROUTINES, encoding="utf-8")
    yield name
    sys.modules.pop(name, None)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_one(flow_id: str, line: str) -> tuple[str, object, object]:
    with Runtime() as runtime:
        worker_state, job = runtime.post(flow_id, "parse", "line", line)
        assert job.wait(30)
        return job.status.value, job.get_data("stored"), worker_state.get_routine_state("store")


# -- good files ------------------------------------------------------------------------------
def test_a_yaml_flow_file_loads_and_runs(tmp_path: Path, mod: str) -> None:
    path = write(
        tmp_path,
        "orders.yaml",
        f"""\
        flow: orders            # the flow id
        job_timeout: 30
        routines:
          parse: {{class: "{mod}:Parse", config: {{sep: ";"}}, error_strategy: retry,
                  retry: {{max_retries: 3, delay: 0.1, retry_on: [ValueError, "builtins:KeyError"]}}}}
          store:
            class: {mod}:Store
            concurrency: 2
            retry: {{max_retries: 2}}   # retry options alone mean error_strategy: retry
        connections:
          - {{from: "parse.parsed", to: "store.item"}}
        """,
    )
    flow = load_flow_file(path)
    assert flow.flow_id == "orders"
    assert flow.job_timeout == 30.0
    parse, store = flow.get_routine("parse"), flow.get_routine("store")
    assert type(parse).__module__ == mod and parse.config == {"sep": ";"}
    assert parse.error_handler == ErrorStrategy.RETRY(
        max_retries=3, delay=0.1, retry_on=(ValueError, KeyError)
    )
    assert store.concurrency == 2 and store.error_handler == ErrorStrategy.RETRY(max_retries=2)
    assert [str(c) for c in flow.connections] == ["parse.parsed -> store.item"]
    FlowRegistry.get_instance().register(flow)
    assert run_one("orders", "pen;3") == ("completed", "pen", {"pen": 3})


def test_a_json_flow_file_with_tabs_loads_and_runs(tmp_path: Path, mod: str) -> None:
    path = write(
        tmp_path,
        "inventory.json",
        "{\n"
        '\t"routines": {\n'
        f'\t\t"parse": {{"class": "{mod}:Parse"}},\n'
        f'\t\t"store": {{"class": "{mod}:Store"}}\n'
        "\t},\n"
        '\t"connections": [{"from": "parse.parsed", "to": "store.item"}],\n'
        '\t"error_strategy": "continue"\n'
        "}\n",
    )
    flow = load_flow_file(path)
    assert flow.flow_id == "inventory"  # the file name without its suffix
    assert flow.error_strategy_for("parse") == ErrorStrategy.CONTINUE
    FlowRegistry.get_instance().register(flow)
    assert run_one("inventory", "ink,2") == ("completed", "ink", {"ink": 2})


def test_shorthand_routines_and_no_connections(tmp_path: Path, mod: str) -> None:
    path = write(tmp_path, "solo.yml", f"routines:\n  parse: {mod}.Parse\nconnections:\n")
    flow = load_flow_file(str(path))
    assert list(flow.routines) == ["parse"] and flow.connections == []


def test_a_flow_file_can_name_classes_of_installed_modules(tmp_path: Path) -> None:
    path = write(tmp_path, "probe.yaml", "routines:\n  r: {class: 'actorflow.routine:Routine'}\n")
    with pytest.raises(FlowFileError, match=r"probe.yaml:2: routine 'r': class .* has no logic"):
        load_flow_file(path)


# -- bad files -------------------------------------------------------------------------------
BAD = [
    # (name, text, line, problem)
    ("unknown-top-key", "flow: f\nroutine:\n  a: {class: M:Parse}\n", 2,
     "the flow file: unknown key 'routine' (did you mean 'routines'? valid keys: flow, routines,"),
    ("unknown-routine-key", "routines:\n  parse:\n    class: M:Parse\n    confg: {}\n", 4,
     "routine 'parse': unknown key 'confg' (did you mean 'config'?"),
    ("missing-class", "routines:\n  parse: {config: {sep: ','}}\n", 2,
     "routine 'parse': missing key 'class' (module:Class)"),
    ("class-form", "routines:\n  parse: {class: Parse}\n", 2,
     "routine 'parse': class 'Parse' is not of the form module:Class"),
    ("no-module", "routines:\n  parse:\n    class: no_such_module_xyz:Parse\n", 3,
     "routine 'parse': cannot import module 'no_such_module_xyz' for class "
     "'no_such_module_xyz:Parse' (No module named 'no_such_module_xyz')"),
    ("no-class", "routines:\n  parse: {class: 'M:Prase'}\n", 2,
     "routine 'parse': module 'M' has no class 'Prase' (class 'M:Prase')"),
    ("not-a-routine", "routines:\n  parse: {class: 'M:NotARoutine'}\n", 2,
     "routine 'parse': class 'M:NotARoutine' is not a Routine subclass"),
    ("not-a-class", "routines:\n  parse: {class: 'M:parse_function'}\n", 2,
     "routine 'parse': 'M:parse_function' is a function, not a Routine subclass"),
    ("needs-arguments", "routines:\n  parse: {class: 'M:NeedsArgs'}\n", 2,
     "routine 'parse': M:NeedsArgs() with no arguments raised TypeError:"),
    ("no-logic", "routines:\n  parse: {class: 'M:NoLogic'}\n", 2,
     "routine 'parse': class 'M:NoLogic' has no logic (define a logic method)"),
    ("bad-from", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - from: parse\n    to: store.item\n", 5,
     "connection from: 'parse' is not of the form routine.event"),
    ("bad-to", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - {from: parse.parsed, to: [store, item]}\n", 5,
     "connection to: write it as routine.slot, not a list"),
    ("unknown-routine", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - from: parse.parsed\n    to: stor.item\n", 6,
     "connection to: 'stor.item' names no routine of the flow (did you mean 'store'? "
     "routines: parse, store)"),
    ("unknown-event", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - {from: parse.parse, to: store.item}\n", 5,
     "connection from: routine 'parse' has no event 'parse' (did you mean 'parsed'? "
     "events: parsed)"),
    ("unknown-slot", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - {from: parse.parsed, to: store.items}\n", 5,
     "connection to: routine 'store' has no slot 'items' (did you mean 'item'? slots: item)"),
    ("connection-missing-to", "routines:\n  parse: {class: M:Parse}\n"
     "connections:\n  - {from: parse.parsed}\n", 4, "connection: missing key 'to'"),
    ("connections-not-a-list", "routines:\n  parse: {class: M:Parse}\n"
     "connections: {from: parse.parsed}\n", 3, "connections must be a list, not a mapping"),
    ("duplicate-connection", "routines:\n  parse: {class: M:Parse}\n  store: {class: M:Store}\n"
     "connections:\n  - {from: parse.parsed, to: store.item}\n"
     "  - {from: parse.parsed, to: store.item}\n", 6,
     "connection: flow 'dup' already connects parse.parsed -> store.item"),
    ("yaml-syntax", "routines:\n  parse: {class: M:Parse\n  store: {class: M:Store}\n", 3,
     "YAML syntax error: expected ',' or '}', but got ':' (while parsing a flow mapping, line 2)"),
    ("yaml-indentation", "routines:\n  parse:\n    class: M:Parse\n   config: {}\n", 4,
     "YAML syntax error:"),
    ("duplicate-key", "routines:\n  parse: {class: M:Parse}\n  parse: {class: M:Store}\n", 3,
     "routines: duplicate key 'parse' (first on line 2)"),
    ("bad-strategy", "routines:\n  parse: {class: M:Parse, error_strategy: retyr}\n", 2,
     "routine 'parse': unknown error strategy 'retyr' (choose stop, continue, skip or retry)"),
    ("retry-without-retry", "routines:\n  parse:\n    class: M:Parse\n"
     "    error_strategy: skip\n    retry: {max_retries: 2}\n", 5,
     "routine 'parse': retry options need error_strategy: retry"),
    ("bad-retry-option", "routines:\n  parse:\n    class: M:Parse\n    error_strategy: retry\n"
     "    retry: {max_retries: 2, delay_s: 1}\n", 5,
     "routine 'parse': retry: unknown key 'delay_s'"),
    ("bad-retry-value", "routines:\n  parse:\n    class: M:Parse\n    error_strategy: retry\n"
     "    retry: {max_retries: 0}\n", 4,
     "routine 'parse': RETRY: max_retries must be >= 1, got 0"),
    ("bad-retry-on", "routines:\n  parse:\n    class: M:Parse\n    error_strategy: retry\n"
     "    retry:\n      retry_on: [NoSuchError]\n", 6,
     "routine 'parse': retry_on: no builtin exception 'NoSuchError'"),
    ("bad-concurrency", "routines:\n  parse: {class: M:Parse, concurrency: 0}\n", 2,
     "routine 'parse': concurrency must be >= 1, got 0"),
    ("concurrency-with-batch", "routines:\n  b: {class: M:Batched, concurrency: 2}\n", 2,
     "routine 'b': concurrency 2 needs the immediate activation policy"),
    ("bad-config", "routines:\n  parse: {class: M:Parse, config: [1, 2]}\n", 2,
     "routine 'parse': config must be a mapping with string keys"),
    ("routines-not-a-mapping", "routines:\n  - parse\n", 2,
     "routines must be a mapping, not a list"),
    ("no-routines", "flow: empty\nroutines: {}\n", 2, "routines: the flow has no routines"),
    ("missing-routines", "flow: f\n", 1, "missing key 'routines'"),
    ("empty-file", "# nothing here\n", 1, "the file is empty"),
    ("not-a-mapping", "- parse\n- store\n", 1, "the flow file must be a mapping, not a list"),
    ("bad-flow-id", "flow: [a]\nroutines:\n  parse: {class: M:Parse}\n", 1,
     "flow must be a non-empty string, not a list"),
    ("bad-job-timeout", "job_timeout: -1\nroutines:\n  parse: {class: M:Parse}\n", 1,
     "job_timeout: job timeout must be a finite number of seconds > 0 and at most"),
    ("python-tag", "routines:\n  parse:\n    class: M:Parse\n"
     "    config: {x: !!python/object/apply:M.EXECUTED.append [1]}\n", 4,
     "could not determine a constructor for the tag"),
    ("two-documents", "routines: {}\n---\nroutines: {}\n", 2,
     "YAML syntax error: but found another document (expected a single document in the stream, line 1)"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "line", "problem"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_flow_file_names_file_line_and_problem(
    tmp_path: Path, mod: str, name: str, text: str, line: int, problem: str
) -> None:
    filename = "dup.yaml" if name == "duplicate-connection" else f"{name}.yaml"
    path = write(tmp_path, filename, text.replace("M:", f"{mod}:").replace("M.", f"{mod}."))
    problem = problem.replace("'M:", f"'{mod}:").replace("'M'", f"'{mod}'")
    problem = problem.replace(" M:", f" {mod}:")
    with pytest.raises(FlowFileError) as caught:
        load_flow_file(path)
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert (error.filename, error.line) == (str(path), line), str(error)
    assert str(error).startswith(f"{path}:{line}: "), str(error)
    assert problem in error.problem, str(error)
    if name == "python-tag":  # the module was imported for its class, and nothing ran
        assert sys.modules[mod].EXECUTED == []


def test_a_json_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '{\n  "routines": {\n    "a": {"class": "m:A"}\n  ]\n}\n')
    with pytest.raises(
        FlowFileError,
        match=r"broken\.json:4: YAML syntax error: expected ',' or '}', but got ']' \(while",
    ):
        load_flow_file(path)


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(FlowFileError) as caught:
        load_flow_file(path)
    assert caught.value.line is None
    assert str(caught.value).startswith(f"{path}: cannot read the flow file (")


def test_an_error_while_importing_the_module_is_reported(tmp_path: Path) -> None:
    (tmp_path / "flowfile_broken_module.py").write_text("1 / 0\n", encoding="utf-8")
    path = write(tmp_path, "f.yaml", "routines:\n  a: {class: 'flowfile_broken_module:A'}\n")
    with pytest.raises(FlowFileError) as caught:
        load_flow_file(path)
    assert str(caught.value) == (
        f"{path}:2: routine 'a': importing module 'flowfile_broken_module' for class "
        "'flowfile_broken_module:A' raised ZeroDivisionError: division by zero"
    )


def test_flow_file_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(FlowFileError("f.yaml", 3, "bad")))
    assert (str(error), error.filename, error.line, error.problem) == (
        "f.yaml:3: bad",
        "f.yaml",
        3,
        "bad",
    )
