"""Activation policies: when a routine's logic runs, and with which of its queued data.

Each routine has, per worker, one queue per slot. A message appends to its slot's queue; the
policy then decides whether to *release* data to the logic. ``slot_data`` maps every slot name
to the list of data points released from it (an empty list for a slot that released nothing).

Jobs and batches: when one activation releases data that several jobs posted, the job of the
newest released data point (the one whose arrival triggered the activation, or the newest when a
timer fires) is the current job (``get_current_job()`` and the job ``emit`` carries). The other
jobs count their data as handled once the logic returns; if the logic fails, every job whose
data it consumed fails. Data never waits forever: a partly filled batch is released after the
batch timeout, an interval policy releases at the end of its interval, and whatever is still
queued at shutdown ends its job as cancelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from actorflow._durations import check_seconds
from actorflow.errors import ConfigurationError

__all__ = [
    "ActivationPolicy",
    "Release",
    "all_slots_ready_policy",
    "batch_size_policy",
    "custom_policy",
    "immediate_policy",
    "time_interval_policy",
]


class QueuedItem(NamedTuple):
    """One data point waiting in a slot queue (internal)."""

    data: Any
    job: Any  # JobContext
    arrived_at: float


class Release(NamedTuple):
    """What a policy releases: slot name -> number of oldest items to take, and a message."""

    counts: Mapping[str, int]
    message: Any = None


SlotQueues = Mapping[str, "deque[QueuedItem]"]


class ActivationPolicy:
    """Base class. A policy is a stateless description; ``bind()`` makes per-worker state."""

    name = "policy"

    def bind(self) -> BoundPolicy:
        """Create the per-worker decision state of this policy."""
        return BoundPolicy(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BoundPolicy:
    """Per-worker state of a policy (internal); the default releases on every message."""

    __slots__ = ("spec",)

    def __init__(self, spec: ActivationPolicy) -> None:
        self.spec = spec

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        """A data point arrived in ``slot``: release something, or nothing yet."""
        return Release({slot: len(queues[slot])})

    def on_timer(self, queues: SlotQueues, now: float) -> Release | None:
        """A deadline from :meth:`next_deadline` passed."""
        return None

    def next_deadline(self, queues: SlotQueues, now: float) -> float | None:
        """When :meth:`on_timer` should run next (monotonic seconds), or None."""
        return None

    def released(self, now: float) -> None:
        """Called after an activation ran."""


class _Immediate(ActivationPolicy):
    name = "immediate"


def immediate_policy() -> ActivationPolicy:
    """Run the logic on every message, with that message's data alone (the default)."""
    return _IMMEDIATE


_IMMEDIATE = _Immediate()


class _BatchSize(ActivationPolicy):
    name = "batch_size"

    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout

    def bind(self) -> BoundPolicy:
        return _BoundBatch(self)

    def __repr__(self) -> str:
        return f"batch_size_policy({self.size}, timeout={self.timeout})"


class _WaitsWithTimeout(BoundPolicy):
    """A policy whose queued data is released once its oldest item waited ``spec.timeout``."""

    __slots__ = ()
    spec: _BatchSize | _AllSlotsReady

    def next_deadline(self, queues: SlotQueues, now: float) -> float | None:
        timeout = self.spec.timeout
        if timeout is None:
            return None
        oldest = [queue[0].arrived_at for queue in queues.values() if queue]
        return min(oldest) + timeout if oldest else None


class _BoundBatch(_WaitsWithTimeout):
    __slots__ = ()
    spec: _BatchSize

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        size = self.spec.size
        if len(queues[slot]) >= size:
            return Release({slot: size}, {"reason": "batch", "slot": slot, "size": size})
        return None

    def on_timer(self, queues: SlotQueues, now: float) -> Release | None:
        timeout = self.spec.timeout
        if timeout is None:
            return None
        counts = {
            name: len(queue)
            for name, queue in queues.items()
            if queue and now - queue[0].arrived_at >= timeout
        }
        if not counts:
            return None
        return Release(counts, {"reason": "timeout", "sizes": dict(counts)})


def batch_size_policy(size: int, timeout: float | None = 1.0) -> ActivationPolicy:
    """Run the logic with ``size`` data points as soon as one slot has that many queued.

    A partly filled batch is released when its oldest data point has waited ``timeout``
    seconds (default 1 s), so its jobs still end; ``timeout=None`` waits for a full batch (data
    left over is cancelled at shutdown).
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"batch_size_policy: size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ConfigurationError(f"batch_size_policy: size must be >= 1, got {size}")
    check_seconds("batch_size_policy", "timeout", timeout, allow_none=True)
    return _BatchSize(size, timeout)


class _AllSlotsReady(ActivationPolicy):
    name = "all_slots_ready"

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout

    def bind(self) -> BoundPolicy:
        return _BoundAllSlots(self)

    def __repr__(self) -> str:
        return f"all_slots_ready_policy(timeout={self.timeout})"


class _BoundAllSlots(_WaitsWithTimeout):
    __slots__ = ()
    spec: _AllSlotsReady

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        if all(queues.values()):
            return Release(dict.fromkeys(queues, 1), {"reason": "all_slots_ready"})
        return None

    def on_timer(self, queues: SlotQueues, now: float) -> Release | None:
        timeout = self.spec.timeout
        if timeout is None:
            return None
        oldest = [queue[0].arrived_at for queue in queues.values() if queue]
        if not oldest or now - min(oldest) < timeout:
            return None
        counts = {name: 1 for name, queue in queues.items() if queue}
        missing = sorted(name for name, queue in queues.items() if not queue)
        return Release(counts, {"reason": "timeout", "missing": missing})


def all_slots_ready_policy(timeout: float | None = None) -> ActivationPolicy:
    """Run the logic with one data point from every slot once each slot has one.

    With ``timeout`` set, data that waited that long is released with whatever the other
    slots hold (the missing slots' lists are empty; the policy message names them).
    """
    check_seconds("all_slots_ready_policy", "timeout", timeout, allow_none=True)
    return _AllSlotsReady(timeout)


class _TimeInterval(ActivationPolicy):
    name = "time_interval"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def bind(self) -> BoundPolicy:
        return _BoundInterval(self)

    def __repr__(self) -> str:
        return f"time_interval_policy({self.seconds})"


class _BoundInterval(BoundPolicy):
    __slots__ = ("last",)
    spec: _TimeInterval

    def __init__(self, spec: ActivationPolicy) -> None:
        super().__init__(spec)
        self.last: float | None = None

    def _all(self, queues: SlotQueues) -> Release:
        counts = {name: len(queue) for name, queue in queues.items() if queue}
        return Release(counts, {"reason": "interval", "sizes": dict(counts)})

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        if self.last is None or now - self.last >= self.spec.seconds:
            return self._all(queues)
        return None

    def on_timer(self, queues: SlotQueues, now: float) -> Release | None:
        if any(queues.values()) and (self.last is None or now - self.last >= self.spec.seconds):
            return self._all(queues)
        return None

    def next_deadline(self, queues: SlotQueues, now: float) -> float | None:
        if self.last is None or not any(queues.values()):
            return None
        return self.last + self.spec.seconds

    def released(self, now: float) -> None:
        self.last = now


def time_interval_policy(seconds: float) -> ActivationPolicy:
    """Run the logic at most once every ``seconds``, with everything queued since the last run.

    The first data point runs at once; data arriving within the interval waits and is released
    when the interval ends.
    """
    seconds = check_seconds("time_interval_policy", "seconds", seconds, allow_zero=False)
    return _TimeInterval(seconds)


PolicyFunction = Callable[[Mapping[str, Sequence[Any]]], Any]


class _Custom(ActivationPolicy):
    name = "custom"

    def __init__(self, fn: PolicyFunction) -> None:
        self.fn = fn

    def bind(self) -> BoundPolicy:
        return _BoundCustom(self)

    def __repr__(self) -> str:
        return f"custom_policy({getattr(self.fn, '__name__', self.fn)!r})"


class _BoundCustom(BoundPolicy):
    __slots__ = ()
    spec: _Custom

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        view = {name: [item.data for item in queue] for name, queue in queues.items()}
        decision = self.spec.fn(view)
        if isinstance(decision, tuple):
            if len(decision) != 3:
                raise TypeError(
                    "custom_policy function must return a bool or "
                    "(should_activate, counts_or_None, policy_message)"
                )
            activate, counts, message = decision
        else:
            activate, counts, message = decision, None, None
        if not activate:
            return None
        if counts is None:
            counts = {name: len(queue) for name, queue in queues.items()}
        for name, count in counts.items():
            if name not in queues:
                raise KeyError(f"custom_policy released unknown slot {name!r}")
            if not isinstance(count, int) or not 0 <= count <= len(queues[name]):
                raise ValueError(
                    f"custom_policy released {count!r} items from slot {name!r}, "
                    f"which holds {len(queues[name])}"
                )
        return Release(counts, message)


def custom_policy(fn: PolicyFunction) -> ActivationPolicy:
    """Let ``fn`` decide, after each message, whether the logic runs.

    ``fn(slots)`` receives a mapping of slot name to the list of queued data points (oldest
    first) and returns either a bool (True releases everything queued) or a tuple
    ``(should_activate, counts, policy_message)`` where ``counts`` maps slot names to how many
    of the oldest data points to release (None releases everything) and ``policy_message`` is
    passed to the logic.
    """
    if not callable(fn):
        raise TypeError(f"custom_policy needs a callable, got {type(fn).__name__}")
    return _Custom(fn)
