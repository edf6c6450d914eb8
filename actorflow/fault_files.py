"""Fault plan files: a :class:`~actorflow.faults.FaultPlan` described in YAML (or JSON).

    seed: 7                       # optional: the plan's seed (an int; default 0)
    lost_message_timeout: 5       # optional: seconds > 0 (default 5)
    faults:                       # the rules, in order; each is one `kind: {fields}`
      - drop: {p: 0.1, routine: charge}
      - delay: {seconds: 0.05, jitter: 0.02, source: order}
      - duplicate: {p: 0.05}
      - reorder: {window: 4, hold: 0.05, routine: ship}
      - raise_in: {routine: charge, error: ConnectionError, message: card network down, p: 0.2}
      - crash: {routine: ship, on_message: 100}
      - partition: {between: [1.0, 2.0], groups: [[order], [charge]]}

The file holds the same plan as the chained calls of ``FaultPlan`` (the example above is the
plan in :mod:`actorflow.faults`' docstring). Each rule is a mapping with one key, the rule's
kind, whose value maps the method's arguments (nothing, or ``{}``, for none):

============  ===========================================================================
kind          fields (a field left out takes the method's default)
============  ===========================================================================
drop          ``p`` (0..1, default 1) and message match keys
delay         ``seconds`` (required), ``jitter``, ``p`` and message match keys
duplicate     ``p`` and message match keys
reorder       ``window`` (an int >= 2, default 2), ``hold`` (seconds) and message match keys
partition     ``groups`` (two lists of routine ids) and ``between`` (``[t0, t1]``), both
              required; no match keys
raise_in      ``routine`` and ``error`` (required), ``message``, exactly one of
              ``on_message`` and ``p``, and ``flow``, ``metadata``
crash         ``routine`` and ``on_message`` (required), and ``flow``, ``metadata``
============  ===========================================================================

Message match keys: ``flow``, ``routine``, ``slot`` (non-empty strings), ``source``,
``event`` (a string, or ``null`` for a message posted with ``runtime.post``), ``metadata``
(a mapping the job's metadata must contain) and ``ordinal`` (an int >= 1, or a list of them).
Durations (``seconds``, ``jitter``, ``hold``, ``lost_message_timeout``) are numbers of
seconds; ``on_message`` is an int >= 1.

``error`` names an ``Exception`` subclass: a builtin one (``ConnectionError``) or
``module:Name`` (or ``module.Name``). With ``message`` every injected fault raises
``error(message)``, without it ``error()``. A ``module:Name`` is imported as a flow file's
classes are (see :mod:`actorflow.flowfile`): with the file's directory first on ``sys.path``,
which runs the module's top-level code, so load only files you trust. Nothing else in the file
runs or imports anything: it is read with ``yaml.SafeLoader`` and no value is evaluated.

Every mistake raises :class:`FaultPlanFileError` naming the file, the line of the offending
node and the problem; an error a ``FaultPlan`` method raises for the values given is reported
at the rule's line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from actorflow._durations import check_seconds
from actorflow._yaml_source import (
    Entry,
    Reader,
    SourceFileError,
    builtin_exception_names,
    did_you_mean,
    exception_class,
    kind_of,
    read_source,
)
from actorflow.errors import ConfigurationError
from actorflow.faults import FaultPlan

__all__ = ["FAULT_KINDS", "FaultPlanFileError", "load_fault_plan"]

PLAN_KEYS = ("seed", "lost_message_timeout", "faults")
MESSAGE_MATCH_KEYS = ("flow", "routine", "source", "slot", "event", "metadata", "ordinal")
LOGIC_MATCH_KEYS = ("flow", "metadata")
RULE_KEYS: dict[str, tuple[str, ...]] = {
    "drop": ("p", *MESSAGE_MATCH_KEYS),
    "delay": ("seconds", "jitter", "p", *MESSAGE_MATCH_KEYS),
    "duplicate": ("p", *MESSAGE_MATCH_KEYS),
    "reorder": ("window", "hold", *MESSAGE_MATCH_KEYS),
    "partition": ("groups", "between"),
    "raise_in": ("routine", "error", "message", "on_message", "p", *LOGIC_MATCH_KEYS),
    "crash": ("routine", "on_message", *LOGIC_MATCH_KEYS),
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "delay": ("seconds",),
    "partition": ("groups", "between"),
    "raise_in": ("routine", "error"),
    "crash": ("routine", "on_message"),
}
FAULT_KINDS = tuple(RULE_KEYS)
"""The rule kinds a fault plan file may hold, in the order the docs list them."""


class FaultPlanFileError(SourceFileError):
    """A fault plan file that cannot be loaded: ``file:line: problem``.

    Attributes ``filename``, ``line`` (1-based; None when the file could not be read) and
    ``problem`` hold the parts of the message.
    """


def _shown(value: Any) -> str:
    """A value in a message: a number as itself, anything else by its kind."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return kind_of(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


class _FaultPlanLoader:
    def __init__(self, path: Path, reader: Reader) -> None:
        self.path = path
        self.reader = reader

    def load(self, root: Any) -> FaultPlan:
        reader = self.reader
        if root is None:
            raise reader.error_type(
                reader.filename, 1, "the file is empty (a fault plan file needs faults)"
            )
        top = reader.mapping(root, "the fault plan file", PLAN_KEYS)
        if "faults" not in top:
            raise reader.error(root, "missing key 'faults' (the list of fault rules)")
        seed = 0
        if "seed" in top:
            node = top["seed"].node
            seed = reader.value(node)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise reader.error(node, f"seed must be an int, not {_shown(seed)}")
        timeout = 5.0
        if "lost_message_timeout" in top:
            timeout = self.seconds(top["lost_message_timeout"], "", allow_zero=False)
        plan = FaultPlan(seed=seed, lost_message_timeout=timeout)
        faults_node = top["faults"].node
        faults = reader.value(faults_node)
        if faults is None:
            return plan
        if not isinstance(faults_node, yaml.SequenceNode):
            raise reader.error(
                faults_node, f"faults must be a list of rules, not {kind_of(faults)}"
            )
        for item in faults_node.value:
            self.add_rule(plan, item)
        return plan

    # -- rules -------------------------------------------------------------------------
    def add_rule(self, plan: FaultPlan, item: Any) -> None:
        reader = self.reader
        one_key = f"one key, its kind ({', '.join(FAULT_KINDS)}), mapped to its fields"
        if not isinstance(item, yaml.MappingNode):
            raise reader.error(
                item, f"a fault rule is a mapping with {one_key}, not {kind_of(reader.value(item))}"
            )
        entries = reader.mapping(item, "fault rule", ())
        if len(entries) != 1:
            found = ", ".join(entries) or "none"
            hint = " (indent the fields under the kind)" if len(entries) > 1 else ""
            raise reader.error(
                item, f"a fault rule has {one_key}; found {len(entries)} keys: {found}{hint}"
            )
        (entry,) = entries.values()
        kind = entry.key
        if kind not in RULE_KEYS:
            raise reader.error(
                entry.key_node,
                f"unknown fault kind {kind!r} ({did_you_mean(kind, FAULT_KINDS)}"
                f"kinds: {', '.join(FAULT_KINDS)})",
            )
        fields: dict[str, Entry] = {}
        if reader.value(entry.node) is not None:
            fields = reader.mapping(entry.node, kind, RULE_KEYS[kind])
        for key in REQUIRED_KEYS.get(kind, ()):
            if key not in fields:
                raise reader.error(entry.key_node, f"{kind}: missing key {key!r}")
        arguments = {key: self.field(kind, field) for key, field in fields.items()}
        if "message" in arguments:
            arguments["error"] = self.instantiate(
                arguments["error"], arguments.pop("message"), fields["error"], kind
            )
        try:
            self.add(plan, kind, arguments)
        except (ConfigurationError, TypeError) as exc:  # InvalidDurationError is one too
            raise reader.error(entry.key_node, str(exc)) from None

    @staticmethod
    def add(plan: FaultPlan, kind: str, arguments: dict[str, Any]) -> None:
        """Add the rule with the ``FaultPlan`` method of its kind."""
        if kind == "partition":
            group_a, group_b = arguments["groups"]
            plan.partition(group_a, group_b, between=arguments["between"])
        elif kind == "raise_in":
            plan.raise_in(arguments.pop("routine"), arguments.pop("error"), **arguments)
        elif kind == "crash":
            plan.crash(arguments.pop("routine"), arguments.pop("on_message"), **arguments)
        else:
            method: Callable[..., FaultPlan] = getattr(plan, kind)
            method(**arguments)

    def field(self, kind: str, entry: Entry) -> Any:
        """The value of one field of a rule, checked (``error`` resolved to its class)."""
        reader = self.reader
        key, node = entry.key, entry.node
        value = reader.value(node)
        what = f"{kind}: {key}"
        if key == "p":
            if not _is_number(value) or not 0 <= value <= 1:
                raise reader.error(
                    node, f"{what} must be a number between 0 and 1, not {_shown(value)}"
                )
            return float(value)
        if key in ("seconds", "jitter", "hold"):
            return self.seconds(entry, kind)
        if key == "window":
            if not _is_int(value, 2):
                raise reader.error(node, f"{what} must be an int >= 2, not {_shown(value)}")
            return value
        if key == "on_message":
            if not _is_int(value, 1):
                raise reader.error(node, f"{what} must be an int >= 1, not {_shown(value)}")
            return value
        if key in ("flow", "routine", "slot"):
            return reader.string(entry, what)
        if key in ("source", "event"):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise reader.error(
                    node, f"{what} must be a non-empty string or null, not {_shown(value)}"
                )
            return value
        if key == "metadata":
            items = reader.mapping(node, what, ())
            return {name: reader.value(item.node) for name, item in items.items()}
        if key == "ordinal":
            return self.ordinal(value, node, what)
        if key == "groups":
            return self.groups(value, node, what)
        if key == "between":
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(_is_number(t) for t in value)
                or not 0 <= value[0] <= value[1]
            ):
                shown = repr(value) if isinstance(value, list) else kind_of(value)
                raise reader.error(
                    node, f"{what} must be [t0, t1], numbers with 0 <= t0 <= t1, not {shown}"
                )
            return (float(value[0]), float(value[1]))
        if key == "message":
            if not isinstance(value, str):
                raise reader.error(node, f"{what} must be a string, not {_shown(value)}")
            return value
        assert key == "error", key
        return self.exception(entry, kind)

    def seconds(self, entry: Entry, where: str, *, allow_zero: bool = True) -> float:
        try:
            return check_seconds(
                where, entry.key, self.reader.value(entry.node), allow_zero=allow_zero
            )
        except (ConfigurationError, TypeError) as exc:
            raise self.reader.error(entry.node, str(exc)) from None

    def ordinal(self, value: Any, node: Any, what: str) -> int | list[int]:
        if _is_int(value, 1):
            return int(value)
        if isinstance(value, list) and value and all(_is_int(n, 1) for n in value):
            return [int(n) for n in value]
        shown = repr(value) if isinstance(value, list) else _shown(value)
        raise self.reader.error(
            node, f"{what} must be an int >= 1 or a non-empty list of them, not {shown}"
        )

    def groups(self, value: Any, node: Any, what: str) -> tuple[list[str], list[str]]:
        def routine_ids(group: Any) -> bool:
            return (
                isinstance(group, list)
                and bool(group)
                and all(isinstance(r, str) and r.strip() for r in group)
            )

        if not isinstance(value, list) or len(value) != 2 or not all(map(routine_ids, value)):
            shown = repr(value) if isinstance(value, list) else kind_of(value)
            raise self.reader.error(
                node, f"{what} must be two non-empty lists of routine ids, not {shown}"
            )
        return value[0], value[1]

    def exception(self, entry: Entry, kind: str) -> type[Exception]:
        """``error``: the exception class it names."""
        reader = self.reader
        name = reader.string(entry, f"{kind}: error")
        exc_type, problem = exception_class(name, self.path.parent)
        if exc_type is None:
            if ":" not in name and "." not in name:
                suggestion = did_you_mean(name, builtin_exception_names()).strip()
                problem += f" ({suggestion})" if suggestion else ""
            raise reader.error(entry.node, f"{kind}: error: {problem}")
        return exc_type

    def instantiate(
        self, exc_type: type[Exception], message: str, entry: Entry, kind: str
    ) -> Exception:
        """``exc_type(message)``: the exception a ``raise_in`` with a ``message`` injects."""
        try:
            return exc_type(message)
        except Exception as exc:
            raise self.reader.error(
                entry.node,
                f"{kind}: error: {exc_type.__name__}({message!r}) raised "
                f"{type(exc).__name__}: {exc}",
            ) from None


def load_fault_plan(path: str | Path) -> FaultPlan:
    """Build the :class:`~actorflow.faults.FaultPlan` a YAML or JSON fault plan file describes
    (see the module docs).

    Raises :class:`FaultPlanFileError` (``file:line: problem``) for any mistake in the file.
    """
    path = Path(path)
    return read_source(
        path,
        "the fault plan file",
        FaultPlanFileError,
        lambda reader, root: _FaultPlanLoader(path, reader).load(root),
    )
