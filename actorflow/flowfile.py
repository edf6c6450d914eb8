"""Flow files: a flow described in YAML (or JSON, which YAML reads too) instead of Python.

    flow: orders                      # the flow id (default: the file name without suffix)
    job_timeout: 30                   # optional: Flow.set_job_timeout
    error_strategy: stop              # optional: the flow's error strategy
    routines:
      parse:
        class: shop.routines:Parse    # module:Class, imported; must be a Routine subclass
        config: {sep: ","}            # set_config(**config)
        error_strategy: retry         # stop, continue, skip or retry
        retry: {max_retries: 3, delay: 0.1}
      store: {class: shop.routines:Store, concurrency: 2}
      audit: shop.routines:Audit      # shorthand for {class: ...}
    connections:
      - {from: parse.out, to: store.in}   # routine.event -> routine.slot

The file itself is read with ``yaml.SafeLoader``: tags that would construct Python objects are
refused and no value in it is evaluated as code. Loading it does run Python code, though, so
load only flow files you trust, from directories you trust:

* every routine's ``class`` and every ``module:Name`` (or ``module.Name``) in a ``retry_on``
  names a module, which is imported with ``importlib.import_module`` while the flow file's
  directory is first on ``sys.path`` (it is taken off again afterwards). A top-level module is
  looked for in that directory first, then along ``sys.path`` as the program has it (the
  ``actorflow`` command does not add the current directory to it); for ``package.module`` the
  package is found that way and the module inside it. So a ``shop.py`` beside the flow file
  wins over an installed ``shop``;
* a module that is already imported (in ``sys.modules``) is neither searched for nor imported
  again: that module is used, wherever it came from;
* importing a module runs its top-level code, and that of the packages above it and of every
  module it imports;
* each routine class (it must subclass ``Routine``) is then called with no arguments, which runs
  its ``__init__``. A builtin exception name in ``retry_on`` is looked up in ``builtins``.

Every mistake raises :class:`FlowFileError` naming the file, the line and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from actorflow._yaml_source import (
    Entry,
    Reader,
    SourceFileError,
    did_you_mean,
    exception_class,
    import_attribute,
    kind_of,
    read_source,
    search_first,
)
from actorflow.activation_policies import ImmediatePolicy
from actorflow.flow import Flow
from actorflow.routine import Routine

__all__ = ["FlowFileError", "load_flow_file"]

FLOW_KEYS = ("flow", "routines", "connections", "error_strategy", "retry", "job_timeout")
ROUTINE_KEYS = ("class", "config", "error_strategy", "retry", "concurrency")
CONNECTION_KEYS = ("from", "to")
RETRY_KEYS = ("max_retries", "delay", "backoff", "retry_on")
FLOW_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class FlowFileError(SourceFileError):
    """A flow file that cannot be loaded: ``file:line: problem``.

    Attributes ``filename``, ``line`` (1-based; None when the file could not be read) and
    ``problem`` hold the parts of the message.
    """


class _FlowFileLoader:
    def __init__(self, path: Path, reader: Reader) -> None:
        self.path = path
        self.reader = reader

    def load(self, root: Any) -> Flow:
        reader = self.reader
        if root is None:
            raise FlowFileError(
                reader.filename, 1, "the file is empty (a flow file needs routines)"
            )
        top = reader.mapping(root, "the flow file", FLOW_KEYS)
        flow_id = self.path.stem
        if "flow" in top:
            flow_id = reader.string(top["flow"], "flow")
        flow = Flow(flow_id)
        if "routines" not in top:
            raise reader.error(root, "missing key 'routines' (the routines of the flow)")
        routines_entry = top["routines"]
        routines = reader.mapping(routines_entry.node, "routines", ())
        if not routines:
            raise reader.error(routines_entry.node, "routines: the flow has no routines")
        for entry in routines.values():
            self.add_routine(flow, entry)
        if "connections" in top:
            self.connect_all(flow, top["connections"])
        if "error_strategy" in top or "retry" in top:
            anchor = top.get("error_strategy") or top["retry"]
            self.apply_error_strategy(flow, "the flow", top, anchor)
        if "job_timeout" in top:
            entry = top["job_timeout"]
            try:
                flow.set_job_timeout(reader.value(entry.node))
            except (ValueError, TypeError) as exc:
                raise reader.error(entry.node, f"job_timeout: {exc}") from None
        return flow

    # -- routines ----------------------------------------------------------------------
    def add_routine(self, flow: Flow, entry: Entry) -> None:
        reader = self.reader
        routine_id = entry.key
        what = f"routine {routine_id!r}"
        if isinstance(entry.node, yaml.ScalarNode):  # the shorthand  id: module:Class
            fields = {"class": Entry("class", entry.key_node, entry.node)}
        else:
            fields = reader.mapping(entry.node, what, ROUTINE_KEYS)
        if "class" not in fields:
            raise reader.error(entry.key_node, f"{what}: missing key 'class' (module:Class)")
        class_entry = fields["class"]
        routine = self.instantiate(reader.string(class_entry, f"{what}: class"), class_entry, what)
        try:
            flow.add_routine(routine, routine_id)
        except (ValueError, TypeError) as exc:
            raise reader.error(entry.key_node, f"{what}: {exc}") from None
        if "config" in fields:
            config_node = fields["config"].node
            config = reader.value(config_node)
            if config is None:
                config = {}
            if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
                raise reader.error(
                    config_node, f"{what}: config must be a mapping with string keys"
                )
            routine.set_config(**config)
        if "error_strategy" in fields or "retry" in fields:
            anchor = fields.get("error_strategy") or fields["retry"]
            self.apply_error_strategy(routine, what, fields, anchor)
        if "concurrency" in fields:
            node = fields["concurrency"].node
            try:
                routine.set_concurrency(reader.value(node))
            except (ValueError, TypeError) as exc:
                raise reader.error(node, f"{what}: {exc}") from None
            if routine.concurrency > 1 and not isinstance(
                routine.activation_policy, ImmediatePolicy
            ):
                raise reader.error(
                    node,
                    f"{what}: concurrency {routine.concurrency} needs the immediate activation "
                    f"policy, and its class sets {routine.activation_policy!r}",
                )

    def instantiate(self, spec: str, entry: Entry, what: str) -> Routine:
        reader = self.reader
        node = entry.node
        with search_first(self.path.parent):
            cls, problem = import_attribute(spec)
        if problem:
            raise reader.error(node, f"{what}: {problem}")
        if not isinstance(cls, type):
            raise reader.error(node, f"{what}: {spec!r} is {kind_of(cls)}, not a Routine subclass")
        if not issubclass(cls, Routine):
            raise reader.error(node, f"{what}: class {spec!r} is not a Routine subclass")
        try:
            routine = cls()
        except Exception as exc:
            raise reader.error(
                node,
                f"{what}: {spec}() with no arguments raised {type(exc).__name__}: {exc}",
            ) from None
        if routine.get_logic() is None:
            raise reader.error(node, f"{what}: class {spec!r} has no logic (define a logic method)")
        return routine

    def apply_error_strategy(
        self, owner: Routine | Flow, what: str, fields: dict[str, Entry], anchor: Entry
    ) -> None:
        reader = self.reader
        strategy: Any = "retry"
        if "error_strategy" in fields:
            strategy = reader.string(fields["error_strategy"], f"{what}: error_strategy")
        options: dict[str, Any] = {}
        if "retry" in fields:
            retry_node = fields["retry"].node
            if strategy.lower() != "retry":
                raise reader.error(retry_node, f"{what}: retry options need error_strategy: retry")
            for key, option in reader.mapping(retry_node, f"{what}: retry", RETRY_KEYS).items():
                value = reader.value(option.node)
                if key == "retry_on":
                    value = self.exception_types(value, option.node, what)
                options[key] = value
        try:
            owner.set_error_handler(strategy, **options)
        except (ValueError, TypeError) as exc:
            raise reader.error(anchor.node, f"{what}: {exc}") from None

    def exception_types(self, value: Any, node: Any, what: str) -> tuple[type[Exception], ...]:
        """``retry_on``: a builtin exception name, ``module:Name``, or a list of them."""
        names = value if isinstance(value, list) else [value]
        found: list[type[Exception]] = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise self.reader.error(node, f"{what}: retry_on holds {kind_of(name)}, not a name")
            exc_type, problem = exception_class(name, self.path.parent)
            if problem:
                raise self.reader.error(node, f"{what}: retry_on: {problem}")
            assert exc_type is not None  # no problem: the class was found
            found.append(exc_type)
        return tuple(found)

    # -- connections -------------------------------------------------------------------
    def connect_all(self, flow: Flow, entry: Entry) -> None:
        reader = self.reader
        node = entry.node
        if reader.value(node) is None:
            return
        if not isinstance(node, yaml.SequenceNode):
            raise reader.error(
                node, f"connections must be a list, not {kind_of(reader.value(node))}"
            )
        for item in node.value:
            fields = reader.mapping(item, "connection", CONNECTION_KEYS)
            for key in CONNECTION_KEYS:
                if key not in fields:
                    raise reader.error(item, f"connection: missing key {key!r}")
            source, event = self.endpoint(flow, fields["from"], "event")
            target, slot = self.endpoint(flow, fields["to"], "slot")
            try:
                flow.connect(source, event, target, slot)
            except (ValueError, TypeError) as exc:
                raise reader.error(item, f"connection: {exc}") from None

    def endpoint(self, flow: Flow, entry: Entry, kind: str) -> tuple[str, str]:
        """``routine.event`` (from) or ``routine.slot`` (to), checked against the flow."""
        reader = self.reader
        node = entry.node
        text = reader.value(node)
        form = f"routine.{kind}"
        if not isinstance(text, str):
            raise reader.error(
                node, f"connection {entry.key}: write it as {form}, not {kind_of(text)}"
            )
        routine_id, _, name = text.rpartition(".")
        if not routine_id or not name:
            raise reader.error(node, f"connection {entry.key}: {text!r} is not of the form {form}")
        routines = flow.routines
        if routine_id not in routines:
            raise reader.error(
                node,
                f"connection {entry.key}: {text!r} names no routine of the flow "
                f"({did_you_mean(routine_id, routines)}routines: {', '.join(routines)})",
            )
        routine = routines[routine_id]
        declared = routine.events if kind == "event" else routine.slots
        if name not in declared:
            raise reader.error(
                node,
                f"connection {entry.key}: routine {routine_id!r} has no {kind} {name!r} "
                f"({did_you_mean(name, declared)}{kind}s: {', '.join(declared) or 'none'})",
            )
        return routine_id, name


def load_flow_file(path: str | Path) -> Flow:
    """Build the :class:`Flow` a YAML or JSON flow file describes (see the module docs).

    The flow is returned, not registered: register it with ``FlowRegistry`` to run it.
    Raises :class:`FlowFileError` (``file:line: problem``) for any mistake in the file.
    """
    path = Path(path)
    return read_source(
        path,
        "the flow file",
        FlowFileError,
        lambda reader, root: _FlowFileLoader(path, reader).load(root),
    )
