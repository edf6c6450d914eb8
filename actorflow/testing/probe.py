"""Probes: watch what a routine emits and assert on it, as a test kit's test probe does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from actorflow._durations import check_seconds

__all__ = ["Probe", "ProbeMessage"]


class ProbeMessage(NamedTuple):
    """One message a probed routine emitted: its data, job id and worker id."""

    data: Any
    job_id: str
    worker_id: str


class Probe:
    """Records every ``emit(event, ...)`` of one routine (in every worker of a runtime).

    ``expect`` consumes messages in order, like a test kit's probe: the next message not yet
    expected must match, within ``timeout`` seconds (virtual seconds in deterministic mode).
    """

    def __init__(
        self,
        routine_id: str,
        event: str,
        pump: Callable[[Callable[[], bool], float | None], bool] | None = None,
    ) -> None:
        self._pump = pump  # deterministic mode: waiting runs the scheduler
        self.routine_id = routine_id
        self.event = event
        self._received: list[ProbeMessage] = []
        self._cursor = 0
        self._cond = threading.Condition()

    def add(self, data: Any, job_id: str, worker_id: str) -> None:
        """A message the probed routine emitted (the routine cell calls this)."""
        with self._cond:
            self._received.append(ProbeMessage(data, job_id, worker_id))
            self._cond.notify_all()

    @property
    def messages(self) -> list[Any]:
        """The data of every message seen so far, oldest first."""
        with self._cond:
            return [m.data for m in self._received]

    @property
    def received(self) -> list[ProbeMessage]:
        """Every message seen so far with its job and worker ids."""
        with self._cond:
            return list(self._received)

    def _wait_for(self, count: int, timeout: float | None, name: str = "timeout") -> bool:
        timeout = check_seconds("Probe", name, timeout, allow_none=True)

        def arrived() -> bool:
            return len(self._received) >= count

        if self._pump is not None:
            return self._pump(arrived, timeout)
        with self._cond:
            return self._cond.wait_for(arrived, timeout)

    def expect(self, expected: Any = None, timeout: float | None = 1.0) -> Any:
        """Wait for the next message and check it: ``expected`` is a value the data must equal,
        a predicate it must satisfy, or None (any message). Returns the data."""
        wanted = self._cursor + 1
        if not self._wait_for(wanted, timeout):
            raise AssertionError(
                f"probe {self.routine_id}.{self.event}: no message within {timeout} s "
                f"(seen {len(self._received)}, expected {wanted})"
            )
        with self._cond:
            message = self._received[self._cursor]
            self._cursor += 1
        data = message.data
        ok = (
            True if expected is None else expected(data) if callable(expected) else data == expected
        )
        if not ok:
            raise AssertionError(
                f"probe {self.routine_id}.{self.event}: message {wanted} was {data!r}, "
                f"expected {_describe(expected)}"
            )
        return data

    def expect_no_message(self, within: float = 0.1) -> None:
        """Assert that no new message arrives within ``within`` seconds."""
        wanted = self._cursor + 1
        if self._wait_for(wanted, within, "within"):
            with self._cond:
                data = self._received[self._cursor].data
            raise AssertionError(
                f"probe {self.routine_id}.{self.event}: expected no message within {within} s, "
                f"got {data!r}"
            )

    def __repr__(self) -> str:
        return f"Probe({self.routine_id!r}, {self.event!r}, seen={len(self._received)})"


def _describe(expected: Any) -> str:
    if callable(expected):
        return f"a message satisfying {getattr(expected, '__name__', expected)!r}"
    return repr(expected)


ProbeCallback = Callable[[Any, str, str], None]
