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

import builtins
import difflib
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from actorflow.activation_policies import ImmediatePolicy
from actorflow.errors import ActorflowError, ConfigurationError
from actorflow.flow import Flow
from actorflow.routine import Routine

__all__ = ["FlowFileError", "load_flow_file"]

FLOW_KEYS = ("flow", "routines", "connections", "error_strategy", "retry", "job_timeout")
ROUTINE_KEYS = ("class", "config", "error_strategy", "retry", "concurrency")
CONNECTION_KEYS = ("from", "to")
RETRY_KEYS = ("max_retries", "delay", "backoff", "retry_on")
FLOW_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class FlowFileError(ConfigurationError):
    """A flow file that cannot be loaded: ``file:line: problem``.

    Attributes ``filename``, ``line`` (1-based; None when the file could not be read) and
    ``problem`` hold the parts of the message.
    """

    def __init__(self, filename: str, line: int | None, problem: str) -> None:
        self.filename = filename
        self.line = line
        self.problem = problem
        where = filename if line is None else f"{filename}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename, self.line, self.problem))


@dataclass(frozen=True)
class _Entry:
    """One ``key: value`` of a mapping, with the nodes that carry their line numbers."""

    key: str
    key_node: Any
    node: Any


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


class _Reader:
    """Walks the composed YAML document, turning nodes into values and errors into lines."""

    def __init__(self, filename: str, loader: Any) -> None:
        self.filename = filename
        self.loader = loader

    def error(self, node: Any, problem: str) -> FlowFileError:
        return FlowFileError(self.filename, None if node is None else _line(node), problem)

    def value(self, node: Any) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: Any, what: str, allowed: tuple[str, ...]) -> dict[str, _Entry]:
        """The entries of a mapping node; unknown, duplicate or non-string keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, not {_kind(self.value(node))}")
        entries: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be strings, not {_kind(key)}")
            if key in entries:
                first = _line(entries[key].key_node)
                raise self.error(key_node, f"{what}: duplicate key {key!r} (first on line {first})")
            if allowed and key not in allowed:
                raise self.error(
                    key_node,
                    f"{what}: unknown key {key!r} ({_did_you_mean(key, allowed)}"
                    f"valid keys: {', '.join(allowed)})",
                )
            entries[key] = _Entry(key, key_node, value_node)
        return entries

    def string(self, entry: _Entry, what: str) -> str:
        value = self.value(entry.node)
        if not isinstance(value, str) or not value.strip():
            raise self.error(entry.node, f"{what} must be a non-empty string, not {_kind(value)}")
        return value


@contextmanager
def _search_first(directory: Path) -> Iterator[None]:
    """Put ``directory`` at the front of ``sys.path`` while the block runs."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(entry)


def _import_attribute(spec: str) -> tuple[Any, str]:
    """Import ``module:Name`` (or ``module.Name``); returns the object and a problem or ''."""
    module_name, sep, name = spec.partition(":")
    if not sep:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name or ":" in name:
        return None, f"class {spec!r} is not of the form module:Class"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"cannot import module {module_name!r} for class {spec!r} ({exc})"
    except Exception as exc:
        return None, (
            f"importing module {module_name!r} for class {spec!r} raised "
            f"{type(exc).__name__}: {exc}"
        )
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            return None, f"module {module_name!r} has no class {name!r} (class {spec!r})"
        target = getattr(target, part)
    return target, ""


class _FlowFileLoader:
    def __init__(self, path: Path, reader: _Reader) -> None:
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
    def add_routine(self, flow: Flow, entry: _Entry) -> None:
        reader = self.reader
        routine_id = entry.key
        what = f"routine {routine_id!r}"
        if isinstance(entry.node, yaml.ScalarNode):  # the shorthand  id: module:Class
            fields = {"class": _Entry("class", entry.key_node, entry.node)}
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

    def instantiate(self, spec: str, entry: _Entry, what: str) -> Routine:
        reader = self.reader
        node = entry.node
        with _search_first(self.path.parent):
            cls, problem = _import_attribute(spec)
        if problem:
            raise reader.error(node, f"{what}: {problem}")
        if not isinstance(cls, type):
            raise reader.error(node, f"{what}: {spec!r} is {_kind(cls)}, not a Routine subclass")
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
        self, owner: Routine | Flow, what: str, fields: dict[str, _Entry], anchor: _Entry
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
                raise self.reader.error(node, f"{what}: retry_on holds {_kind(name)}, not a name")
            if ":" in name or "." in name:
                with _search_first(self.path.parent):
                    exc_type, problem = _import_attribute(name)
            else:
                exc_type = getattr(builtins, name, None)
                problem = "" if exc_type is not None else f"no builtin exception {name!r}"
            if problem:
                raise self.reader.error(node, f"{what}: retry_on: {problem}")
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                raise self.reader.error(
                    node, f"{what}: retry_on: {name!r} is not an Exception subclass"
                )
            found.append(exc_type)
        return tuple(found)

    # -- connections -------------------------------------------------------------------
    def connect_all(self, flow: Flow, entry: _Entry) -> None:
        reader = self.reader
        node = entry.node
        if reader.value(node) is None:
            return
        if not isinstance(node, yaml.SequenceNode):
            raise reader.error(node, f"connections must be a list, not {_kind(reader.value(node))}")
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

    def endpoint(self, flow: Flow, entry: _Entry, kind: str) -> tuple[str, str]:
        """``routine.event`` (from) or ``routine.slot`` (to), checked against the flow."""
        reader = self.reader
        node = entry.node
        text = reader.value(node)
        form = f"routine.{kind}"
        if not isinstance(text, str):
            raise reader.error(
                node, f"connection {entry.key}: write it as {form}, not {_kind(text)}"
            )
        routine_id, _, name = text.rpartition(".")
        if not routine_id or not name:
            raise reader.error(node, f"connection {entry.key}: {text!r} is not of the form {form}")
        routines = flow.routines
        if routine_id not in routines:
            raise reader.error(
                node,
                f"connection {entry.key}: {text!r} names no routine of the flow "
                f"({_did_you_mean(routine_id, routines)}routines: {', '.join(routines)})",
            )
        routine = routines[routine_id]
        declared = routine.events if kind == "event" else routine.slots
        if name not in declared:
            raise reader.error(
                node,
                f"connection {entry.key}: routine {routine_id!r} has no {kind} {name!r} "
                f"({_did_you_mean(name, declared)}{kind}s: {', '.join(declared) or 'none'})",
            )
        return routine_id, name


def load_flow_file(path: str | Path) -> Flow:
    """Build the :class:`Flow` a YAML or JSON flow file describes (see the module docs).

    The flow is returned, not registered: register it with ``FlowRegistry`` to run it.
    Raises :class:`FlowFileError` (``file:line: problem``) for any mistake in the file.
    """
    path = Path(path)
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowFileError(filename, None, f"cannot read the flow file ({exc})") from None
    if path.suffix.lower() == ".json":
        # JSON allows tabs between tokens, YAML does not; a JSON string holds no raw tab.
        text = text.replace("\t", " ")
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else int(mark.line) + 1
            problem = exc.problem or "invalid YAML"
            if exc.context:
                context_mark = exc.context_mark
                where = "" if context_mark is None else f", line {int(context_mark.line) + 1}"
                problem += f" ({exc.context}{where})"
            raise FlowFileError(filename, line, f"YAML syntax error: {problem}") from None
        except yaml.YAMLError as exc:
            raise FlowFileError(filename, 1, f"YAML syntax error: {exc}") from None
        reader = _Reader(filename, loader)
        try:
            return _FlowFileLoader(path, reader).load(root)
        except yaml.YAMLError as exc:  # a value that cannot be constructed (e.g. a bad tag)
            mark = getattr(exc, "problem_mark", None)
            line = None if mark is None else int(mark.line) + 1
            raise FlowFileError(filename, line, f"YAML error: {exc}") from None
        except FlowFileError:
            raise
        except ActorflowError as exc:
            raise FlowFileError(filename, _line(root), str(exc)) from None
    finally:
        loader.dispose()
