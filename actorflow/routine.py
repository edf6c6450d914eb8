"""Routine: a unit of logic with input slots and output events, run as an actor."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actorflow.activation_policies import ActivationPolicy, immediate_policy
from actorflow.error_strategies import ErrorStrategy, as_error_strategy
from actorflow.errors import ConfigurationError, FlowValidationError
from actorflow.job import CURRENT_ACTIVATION

__all__ = ["EventSpec", "Logic", "Routine", "SlotSpec", "is_async_logic"]

Logic = Callable[[dict[str, list[Any]], Any, Any], Any]
"""``logic(slot_data, policy_message, worker_state)``."""

DEFAULT_MAX_QUEUE_LENGTH = 10_000


@dataclass(frozen=True)
class SlotSpec:
    """An input slot: where connected events (or posts) deliver data."""

    name: str
    max_queue_length: int = DEFAULT_MAX_QUEUE_LENGTH


@dataclass(frozen=True)
class EventSpec:
    """An output event: ``emit(name, **data)`` sends ``data`` to every connected slot."""

    name: str
    output_params: tuple[str, ...] = field(default=())


def is_async_logic(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` function or method, or an
    object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return call is not None and inspect.iscoroutinefunction(call)


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
    if not name or not name.strip():
        raise ConfigurationError(f"{kind} name must not be empty")
    return name


class Routine:
    """A unit of logic: declare slots and events, then give it logic.

    Logic is either passed to :meth:`set_logic` or defined by a subclass as a ``logic``
    method; it is called as ``logic(slot_data, policy_message, worker_state)`` where
    ``slot_data`` maps each slot name to the list of data points the activation policy
    released. Inside logic, :meth:`emit` sends data downstream as part of the current job.
    Logic defined with ``async def`` is awaited on its worker's event loop (see
    :attr:`is_async` and ``docs/services.md``).

    A routine object is a *definition*: each worker runs it in its own actor, so attributes
    set on the routine are shared by every worker and must be treated as configuration.
    State belongs in the ``worker_state`` handle (long-lived) or the job (per request).
    """

    def __init__(self) -> None:
        self._slots: dict[str, SlotSpec] = {}
        self._events: dict[str, EventSpec] = {}
        self._fields: dict[str, frozenset[str]] = {}  # events that declare their fields
        self._logic: Logic | None = None
        self._policy: ActivationPolicy = immediate_policy()
        self._config: dict[str, Any] = {}
        self._concurrency = 1
        self._error_handler: Any = None
        self._owner: tuple[str, str] | None = None  # (flow_id, routine_id) once added

    # -- declaration -------------------------------------------------------------------
    def add_slot(self, name: str, max_queue_length: int = DEFAULT_MAX_QUEUE_LENGTH) -> SlotSpec:
        """Declare an input slot; ``max_queue_length`` bounds the data waiting in it."""
        check_name("slot", name)
        if name in self._slots:
            raise ValueError(f"slot {name!r} is already declared on {self!r}")
        if isinstance(max_queue_length, bool) or not isinstance(max_queue_length, int):
            raise TypeError("max_queue_length must be an int")
        if max_queue_length < 1:
            raise ConfigurationError(f"max_queue_length must be >= 1, got {max_queue_length}")
        spec = SlotSpec(name, max_queue_length)
        self._slots[name] = spec
        return spec

    def add_event(
        self, name: str, output_params: list[str] | tuple[str, ...] | None = None
    ) -> EventSpec:
        """Declare an output event; ``output_params`` names the fields it emits.

        An event declared with fields refuses, at :meth:`emit`, a field it does not declare;
        an event declared without any accepts every field.
        """
        check_name("event", name)
        if name in self._events:
            raise ValueError(f"event {name!r} is already declared on {self!r}")
        params = tuple(output_params or ())
        for param in params:
            if not isinstance(param, str):
                raise TypeError(f"output_params of event {name!r} must be str, got {param!r}")
        spec = EventSpec(name, params)
        self._events[name] = spec
        if params:
            self._fields[name] = frozenset(params)
        return spec

    def bind(self, flow_id: str, routine_id: str) -> None:
        """Record that this routine is ``routine_id`` in flow ``flow_id`` (``Flow.add_routine``
        calls it). A routine object belongs to one place in one flow: binding it again raises
        ``ValueError``."""
        if self._owner is not None:
            existing_flow, existing_id = self._owner
            raise ValueError(
                f"this routine object is already {existing_id!r} in flow {existing_flow!r}; "
                "create a new instance for each place it is used"
            )
        self._owner = (flow_id, routine_id)

    @property
    def routine_id(self) -> str | None:
        """The id this routine was added to its flow under (None before ``add_routine``)."""
        return None if self._owner is None else self._owner[1]

    @property
    def slots(self) -> Mapping[str, SlotSpec]:
        """Declared slots by name."""
        return dict(self._slots)

    @property
    def events(self) -> Mapping[str, EventSpec]:
        """Declared events by name."""
        return dict(self._events)

    # -- behaviour ---------------------------------------------------------------------
    def set_logic(self, fn: Logic) -> None:
        """Set the function run when the activation policy releases data.

        An ``async def`` function (or an object whose ``__call__`` is one) is awaited on the
        worker's event loop instead of being called on an actor thread.
        """
        if not callable(fn):
            raise TypeError(f"logic must be callable, got {type(fn).__name__}")
        self._logic = fn

    def get_logic(self) -> Logic | None:
        """The logic set with :meth:`set_logic`, else a subclass's ``logic`` method, else None."""
        if self._logic is not None:
            return self._logic
        method = getattr(self, "logic", None)
        return method if callable(method) else None

    @property
    def is_async(self) -> bool:
        """Whether the logic is ``async def`` (awaited on the worker's event loop)."""
        logic = self.get_logic()
        return logic is not None and is_async_logic(logic)

    def set_activation_policy(self, policy: ActivationPolicy) -> None:
        """Choose when the logic runs (default: :func:`immediate_policy`)."""
        if not isinstance(policy, ActivationPolicy):
            raise TypeError(
                "set_activation_policy needs a policy from actorflow.activation_policies, "
                f"got {type(policy).__name__}"
            )
        self._policy = policy

    @property
    def activation_policy(self) -> ActivationPolicy:
        """The routine's activation policy."""
        return self._policy

    def set_concurrency(self, actors: int) -> None:
        """Run this routine as ``actors`` actors behind one mailbox (stateless routines only).

        Only the immediate activation policy can be spread over several actors, since other
        policies keep per-worker queues that one actor must own.

        For async logic this is how many messages may be in flight at once on the worker's
        event loop (one actor, no extra thread); the messages of one job are still handled
        one at a time, in order.
        """
        if isinstance(actors, bool) or not isinstance(actors, int):
            raise TypeError("concurrency must be an int")
        if actors < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {actors}")
        self._concurrency = actors

    @property
    def concurrency(self) -> int:
        """Number of actors that run this routine in each worker."""
        return self._concurrency

    def set_error_handler(self, strategy: Any, **retry_options: Any) -> None:
        """Choose what an exception from the logic does (see :mod:`actorflow.error_strategies`).

        ``strategy`` is an ``ErrorStrategy`` or one of ``"stop"``, ``"continue"``, ``"skip"``,
        ``"retry"`` (with ``max_retries``, ``delay``, ``backoff``, ``retry_on`` as keywords).
        Without one the flow's handler applies, and without that ``ErrorStrategy.STOP``.
        """
        self._error_handler = as_error_strategy(strategy, **retry_options)

    @property
    def error_handler(self) -> ErrorStrategy | None:
        """The routine's own error strategy, or None (the flow's applies)."""
        handler: ErrorStrategy | None = self._error_handler
        return handler

    # -- configuration -----------------------------------------------------------------
    def set_config(self, **config: Any) -> None:
        """Set configuration values (merged with those set before)."""
        self._config.update(config)

    def get_config(self, key: str, default: Any = None) -> Any:
        """Return a configuration value, or ``default``."""
        return self._config.get(key, default)

    @property
    def config(self) -> Mapping[str, Any]:
        """A copy of the configuration."""
        return dict(self._config)

    # -- lifecycle hooks (run in the routine's actor) -----------------------------------
    def on_start(self) -> None:
        """Run in each of the routine's actors before it handles its first message.

        The place to open resources that cannot be serialized (connections, pools); keep them
        on the actor side, e.g. in a dict keyed by ``threading.get_ident()`` or through a
        per-actor attribute set here, and close them in :meth:`on_stop`.
        """

    def on_stop(self) -> None:
        """Run in each of the routine's actors after it handled its last message."""

    # -- inside logic ------------------------------------------------------------------
    def emit(self, event: str, /, **data: Any) -> None:
        """Send ``data`` to every slot connected to ``event``, as part of the current job.

        Only valid inside this routine's logic. Emitting an event with no connections does
        nothing; emitting an undeclared event raises ``ValueError``, and a field the event
        does not declare (when it declares its fields) raises ``FlowValidationError``. Either
        goes through the routine's error strategy like any exception of its logic.
        """
        activation = CURRENT_ACTIVATION.get()
        try:
            # The common case, without a call: this routine's own connected event that declares
            # no fields, while its logic runs. The fields are checked below, and the activation
            # checks everything else (and raises) in emit_for.
            if activation.routine is self:  # type: ignore[union-attr]
                outbox = activation.outbox  # type: ignore[union-attr]
                if outbox is not None:
                    if event in activation.direct_events:  # type: ignore[union-attr]
                        outbox.append((event, data))
                        return
                    if event in activation.silent_events and not activation.probes:  # type: ignore[union-attr]
                        return  # declared, connected nowhere, and nobody is watching
            emit = activation.emit_for  # type: ignore[union-attr]
        except AttributeError:
            raise RuntimeError(
                f"{self!r}.emit({event!r}) called outside routine logic: "
                "emit only works while the routine handles a message"
            ) from None
        fields = self._fields.get(event)
        if fields is not None and not fields.issuperset(data):
            undeclared = sorted(set(data) - fields)
            raise FlowValidationError(
                f"{self!r} emitted {event!r} with undeclared field(s) {undeclared} "
                f"(declared: {sorted(fields)})"
            )
        emit(self, event, data)

    def __repr__(self) -> str:
        if self._owner is not None:
            return f"<{type(self).__name__} {self._owner[1]!r} in flow {self._owner[0]!r}>"
        return f"<{type(self).__name__} (not in a flow)>"
