"""Supervision of a worker's routine actors, in the manner of an OTP supervisor.

A supervisor is plain data: a strategy, a restart intensity (``max_restarts`` within
``period`` seconds) and an optional exponential backoff. When a routine actor crashes (a
``BaseException`` from its logic, a failing ``on_start``, an injected crash), the worker's
supervisor restarts:

* ``one_for_one`` (default): only the crashed actor;
* ``one_for_all``: every routine actor of the worker;
* ``rest_for_one``: the crashed routine's actors and those of every routine added after it.

A restarted actor gets a fresh routine activation (``on_start`` runs again) and takes over the
mailbox and queued slot data of the one it replaces, in order: no message is lost. The message
being handled when the crash happened fails its job. Past the intensity the worker fails: its
unfinished jobs fail, its actors stop, and ``worker_state.status == "failed"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorflow._durations import check_seconds

__all__ = ["STRATEGIES", "RestartDecision", "RestartIntensity", "Supervision"]

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True)
class Supervision:
    """Restart policy of a worker's routine actors.

    ``period`` is a finite number of seconds > 0, ``backoff_base`` and ``backoff_max`` finite
    numbers of seconds >= 0, each at most ``threading.TIMEOUT_MAX``; other values raise
    ``InvalidDurationError`` (``TypeError`` if they are no number).
    """

    strategy: str = "one_for_one"
    max_restarts: int = 3
    period: float = 5.0
    backoff_base: float = 0.0
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown supervision strategy {self.strategy!r} (choose {', '.join(STRATEGIES)})"
            )
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int):
            raise TypeError("max_restarts must be an int")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        for name in ("period", "backoff_base", "backoff_max"):
            check_seconds("Supervision", name, getattr(self, name), allow_zero=name != "period")

    def restart_delay(self, restarts_in_period: int) -> float:
        """Backoff before the n-th restart within the period (0 without backoff)."""
        if self.backoff_base <= 0:
            return 0.0
        doublings = min(max(restarts_in_period - 1, 0), 1023)  # 2.0**1024 overflows a float
        return float(min(self.backoff_max, self.backoff_base * 2.0**doublings))


@dataclass(frozen=True)
class RestartDecision:
    """What a worker does about one crash (see :class:`RestartIntensity`)."""

    failure: str | None  # the worker fails with this reason (past the intensity); else restart
    siblings: tuple[str, ...]  # other routines whose actors restart too (the strategy)
    delay: float  # seconds before the crashed actor's successor starts (backoff)


class RestartIntensity:
    """The supervision policy of one worker, applied the same way on every backend.

    It counts restarts within the period, fails the worker past ``max_restarts``, names the
    routines the strategy restarts with the crashed one (in start order), and the backoff.
    Not thread-safe: the worker's supervisor calls it one crash at a time.
    """

    def __init__(self, supervision: Supervision, order: list[str]) -> None:
        self.supervision = supervision
        self.order = list(order)
        self._restarts: list[float] = []
        self.count = 0  # restarts so far

    def crashed(self, worker_id: str, routine_id: str, error: str, now: float) -> RestartDecision:
        """Decide about a crash of ``routine_id`` (``error``: "Type: message") at monotonic
        time ``now``."""
        supervision = self.supervision
        self._restarts = [t for t in self._restarts if now - t < supervision.period]
        self._restarts.append(now)
        if len(self._restarts) > supervision.max_restarts:
            return RestartDecision(
                f"worker {worker_id!r} failed: routine {routine_id!r} crashed "
                f"({error}); more than {supervision.max_restarts} "
                f"restarts within {supervision.period} s",
                (),
                0.0,
            )
        self.count += 1
        if supervision.strategy == "one_for_all":
            siblings = [other for other in self.order if other != routine_id]
        elif supervision.strategy == "rest_for_one":
            siblings = self.order[self.order.index(routine_id) + 1 :]
        else:
            siblings = []
        return RestartDecision(
            None, tuple(siblings), supervision.restart_delay(len(self._restarts))
        )
