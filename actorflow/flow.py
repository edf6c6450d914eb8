"""Flow: routines wired together by connections from events to slots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actorflow._durations import check_seconds
from actorflow.activation_policies import ImmediatePolicy
from actorflow.error_strategies import ErrorStrategy, as_error_strategy
from actorflow.errors import FlowValidationError
from actorflow.routine import Routine, check_name
from actorflow.supervision import Supervision

__all__ = ["Connection", "Flow", "StateGrant"]


@dataclass(frozen=True)
class Connection:
    """``source.event`` delivers to ``target.slot``."""

    source: str
    event: str
    target: str
    slot: str

    def __str__(self) -> str:
        return f"{self.source}.{self.event} -> {self.target}.{self.slot}"


@dataclass(frozen=True)
class StateGrant:
    """Routine ``reader`` may read (and with ``write``, write) routine ``owner``'s state."""

    reader: str
    owner: str
    write: bool = False


class Flow:
    """A graph of routines. Register it (``FlowRegistry``) and run it in a ``Runtime``.

    A worker compiles the flow when it starts; changing the flow afterwards affects workers
    started later, not running ones.
    """

    def __init__(self, flow_id: str) -> None:
        self.flow_id = check_name("flow", flow_id)
        self._routines: dict[str, Routine] = {}
        self._connections: list[Connection] = []
        self._grants: dict[tuple[str, str], StateGrant] = {}
        self._error_handler: ErrorStrategy | None = None
        self.job_timeout: float | None = None
        self.supervision = Supervision()

    # -- building ----------------------------------------------------------------------
    def add_routine(self, routine: Routine, routine_id: str) -> Routine:
        """Add ``routine`` under ``routine_id``; returns the routine."""
        if not isinstance(routine, Routine):
            raise TypeError(f"add_routine needs a Routine, got {type(routine).__name__}")
        check_name("routine", routine_id)
        if routine_id in self._routines:
            raise ValueError(f"flow {self.flow_id!r} already has a routine {routine_id!r}")
        routine.bind(self.flow_id, routine_id)
        self._routines[routine_id] = routine
        return routine

    def connect(self, source_id: str, event: str, target_id: str, slot: str) -> Connection:
        """Connect ``source_id``'s ``event`` to ``target_id``'s ``slot``."""
        source = self._routine_or_error(source_id, "source")
        target = self._routine_or_error(target_id, "target")
        if event not in source.events:
            raise FlowValidationError(
                f"routine {source_id!r} has no event {event!r} "
                f"(declared: {sorted(source.events) or 'none'})"
            )
        if slot not in target.slots:
            raise FlowValidationError(
                f"routine {target_id!r} has no slot {slot!r} "
                f"(declared: {sorted(target.slots) or 'none'})"
            )
        connection = Connection(source_id, event, target_id, slot)
        if connection in self._connections:
            raise ValueError(f"flow {self.flow_id!r} already connects {connection}")
        self._connections.append(connection)
        return connection

    def grant_state_access(self, reader_id: str, owner_id: str, write: bool = False) -> None:
        """Let routine ``reader_id`` read (and, with ``write=True``, write) ``owner_id``'s state."""
        self._routine_or_error(reader_id, "reader")
        self._routine_or_error(owner_id, "owner")
        self._grants[(reader_id, owner_id)] = StateGrant(reader_id, owner_id, bool(write))

    def set_error_handler(self, strategy: Any, **retry_options: Any) -> None:
        """The error strategy of every routine that has none of its own (default STOP)."""
        self._error_handler = as_error_strategy(strategy, **retry_options)

    def error_strategy_for(self, routine_id: str) -> ErrorStrategy:
        """The strategy that applies to ``routine_id``: its own, else the flow's, else STOP."""
        routine = self._routine_or_error(routine_id, "")
        return routine.error_handler or self._error_handler or ErrorStrategy.STOP

    def set_supervision(
        self,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        period: float = 5.0,
        backoff_base: float = 0.0,
        backoff_max: float = 5.0,
    ) -> Supervision:
        """How each worker's supervisor restarts crashed routine actors (see supervision)."""
        self.supervision = Supervision(strategy, max_restarts, period, backoff_base, backoff_max)
        return self.supervision

    def set_job_timeout(self, seconds: float | None) -> None:
        """Default timeout of this flow's jobs (``post(timeout=...)`` overrides it).

        ``seconds`` is None (no timeout) or a finite number of seconds > 0 and at most
        ``threading.TIMEOUT_MAX``; anything else raises ``InvalidDurationError``.
        """
        self.job_timeout = check_seconds(
            "", "job timeout", seconds, allow_none=True, allow_zero=False
        )

    def _routine_or_error(self, routine_id: str, role: str) -> Routine:
        try:
            return self._routines[routine_id]
        except KeyError:
            raise FlowValidationError(
                f"flow {self.flow_id!r} has no {role} routine {routine_id!r} "
                f"(routines: {sorted(self._routines) or 'none'})"
            ) from None

    # -- reading -----------------------------------------------------------------------
    @property
    def routines(self) -> Mapping[str, Routine]:
        """Routines by id (a copy)."""
        return dict(self._routines)

    @property
    def connections(self) -> list[Connection]:
        """Connections in the order they were made (a copy)."""
        return list(self._connections)

    @property
    def state_grants(self) -> list[StateGrant]:
        """State access grants (a copy)."""
        return list(self._grants.values())

    def get_routine(self, routine_id: str) -> Routine:
        """Return the routine ``routine_id`` (``FlowValidationError`` if unknown)."""
        return self._routine_or_error(routine_id, "")

    def slot_limits(self) -> dict[str, dict[str, int]]:
        """Each routine's slots with their ``max_queue_length``, by routine id."""
        return {
            rid: {name: spec.max_queue_length for name, spec in routine.slots.items()}
            for rid, routine in self._routines.items()
        }

    def routes(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """``(source, event) -> [(target, slot), ...]`` in connection order."""
        table: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for c in self._connections:
            table.setdefault((c.source, c.event), []).append((c.target, c.slot))
        return table

    def validate(self) -> None:
        """Raise ``FlowValidationError`` listing every problem; return None if the flow is sound."""
        problems: list[str] = []
        if not self._routines:
            problems.append(f"flow {self.flow_id!r} has no routines")
        for routine_id, routine in self._routines.items():
            if routine.get_logic() is None:
                problems.append(
                    f"routine {routine_id!r} has no logic (call set_logic or define a logic method)"
                )
            if routine.concurrency > 1 and not isinstance(
                routine.activation_policy, ImmediatePolicy
            ):
                problems.append(
                    f"routine {routine_id!r} has concurrency {routine.concurrency} with "
                    f"{routine.activation_policy!r}; only the immediate policy can be spread "
                    "over several actors"
                )
        for c in self._connections:
            source = self._routines.get(c.source)
            target = self._routines.get(c.target)
            if source is None or c.event not in source.events:
                problems.append(f"connection {c}: unknown source or event")
            if target is None or c.slot not in target.slots:
                problems.append(f"connection {c}: unknown target or slot")
        if problems:
            raise FlowValidationError(
                f"flow {self.flow_id!r} is not valid:\n  - " + "\n  - ".join(problems)
            )

    def __repr__(self) -> str:
        return (
            f"Flow({self.flow_id!r}, routines={len(self._routines)}, "
            f"connections={len(self._connections)})"
        )

    def to_mermaid(self) -> str:
        """This flow as a Mermaid flowchart (see :func:`actorflow.graph.flow_to_mermaid`)."""
        from actorflow.graph import flow_to_mermaid  # noqa: PLC0415

        return flow_to_mermaid(self)

    def to_dot(self) -> str:
        """This flow as a Graphviz digraph (see :func:`actorflow.graph.flow_to_dot`)."""
        from actorflow.graph import flow_to_dot  # noqa: PLC0415

        return flow_to_dot(self)
