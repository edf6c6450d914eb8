"""Activation policies: when a routine's logic runs, and with which of its queued data.

Each routine has, per worker, one queue per slot. A message appends to its slot's queue; the
policy then decides whether to *release* data to the logic. ``slot_data`` maps every slot name
to the list of data points released from it (an empty list for a slot that released nothing).

Joins keep jobs apart: ``all_slots_ready_policy()`` runs the logic when every slot holds data
*of the same job*, and that job is the current job. A join's data never waits forever: when
nothing else of its job is in flight (the other branch failed, was skipped or emitted nothing),
or when the job ends, the data leaves the join at once; a timeout bounds the wait as well.

Jobs and batches: when one activation releases data that several jobs posted (a batch, an
interval, a custom policy, a join correlated by ``key=``), the job of the newest released data
point (the one whose arrival triggered the activation, or the newest when a timer fires) is the
current job (``get_current_job()`` and the job ``emit`` carries). The other jobs count their
data as handled once the logic returns; if the logic fails, every job whose data it consumed
fails. Data never waits forever: a partly filled batch is released after the batch timeout, an
interval policy releases at the end of its interval, and whatever is still queued at shutdown
ends its job as cancelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from actorflow._durations import check_seconds
from actorflow.errors import ConfigurationError, IncompleteJoinError

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
    job: Any  # what the host needs to account for the data's job (a JobContext on threads)
    arrived_at: float
    key: Any = None  # the correlation key of a join (BoundPolicy.key_of)
    seq: int = 0  # arrival order in its routine actor (breaks ties of arrived_at)


class Release(NamedTuple):
    """What a policy releases (internal).

    ``counts``: slot name -> number of oldest items to take; or, when ``picks`` is given,
    slot name -> positions (in the slot's queue) of the items to take. ``message`` is the
    ``policy_message`` given to the logic. With ``fail`` set, the logic does not run: the
    released data leaves an incomplete join and its jobs fail (``message`` says why).
    """

    counts: Mapping[str, int]
    message: Any = None
    picks: Mapping[str, Sequence[int]] | None = None
    fail: bool = False


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
    """Per-worker state of a policy (internal); the default releases on every message.

    ``parks``: data waits for more data of its own job (a job-correlated join); the host
    tells the job so, and calls :meth:`on_stalled` when nothing else of the job is in flight.
    ``drains``: after a shutdown flush, later arrivals run at once (False: they keep waiting).
    """

    __slots__ = ("spec",)
    parks = False
    drains = True

    def __init__(self, spec: ActivationPolicy) -> None:
        self.spec = spec

    def key_of(self, data: Any, job_id: str) -> Any:
        """The correlation key of a data point (stored in its :class:`QueuedItem`)."""
        return None

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

    def on_stalled(self, queues: SlotQueues, key: Any) -> Release | None:
        """Nothing else of the job whose key is ``key`` is in flight (parking policies)."""
        return None

    def on_flush(self, queues: SlotQueues) -> Release | None:
        """Shutdown: what to release now (called until it returns None)."""
        counts = {name: len(queue) for name, queue in queues.items() if queue}
        return Release(counts, {"reason": "flush"}) if counts else None


class ImmediatePolicy(ActivationPolicy):
    name = "immediate"


def immediate_policy() -> ActivationPolicy:
    """Run the logic on every message, with that message's data alone (the default)."""
    return _IMMEDIATE


_IMMEDIATE = ImmediatePolicy()


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


IncompleteOutcome = Literal["fail", "run"]
_INCOMPLETE_OUTCOMES = ("fail", "run")


class _AllSlotsReady(ActivationPolicy):
    name = "all_slots_ready"

    def __init__(
        self,
        timeout: float | None,
        key: Callable[[Any], Hashable] | None,
        on_incomplete: IncompleteOutcome,
    ) -> None:
        self.timeout = timeout
        self.key = key
        self.on_incomplete = on_incomplete

    def bind(self) -> BoundPolicy:
        return _BoundAllSlots(self)

    def __repr__(self) -> str:
        key = "" if self.key is None else f", key={getattr(self.key, '__name__', self.key)!r}"
        return (
            f"all_slots_ready_policy(timeout={self.timeout}{key}, "
            f"on_incomplete={self.on_incomplete!r})"
        )


def _first(queue: deque[QueuedItem], key: Any) -> int | None:
    """Position of the oldest item of ``queue`` whose key is ``key``."""
    for index, item in enumerate(queue):
        if item.key == key:
            return index
    return None


class _BoundAllSlots(_WaitsWithTimeout):
    __slots__ = ()
    spec: _AllSlotsReady

    @property
    def parks(self) -> bool:  # type: ignore[override]
        return self.spec.key is None

    @property
    def drains(self) -> bool:  # type: ignore[override]
        return False

    def key_of(self, data: Any, job_id: str) -> Any:
        key = self.spec.key
        return job_id if key is None else key(data)

    def on_message(self, queues: SlotQueues, slot: str, now: float) -> Release | None:
        queue = queues[slot]
        key = queue[-1].key
        picks: dict[str, list[int]] = {}
        for name, other in queues.items():
            if name == slot:
                continue
            position = _first(other, key)
            if position is None:
                return None
            picks[name] = [position]
        mine = _first(queue, key)  # an older data point of the key in this slot goes first
        assert mine is not None
        picks[slot] = [mine]
        return Release({}, {"reason": "all_slots_ready"}, picks)

    def _incomplete(self, queues: SlotQueues, key: Any, reason: str, every: bool) -> Release:
        """Release the waiting data of ``key`` (the oldest per slot, or ``every`` item)."""
        picks: dict[str, list[int]] = {}
        missing = []
        for name, queue in queues.items():
            positions = [i for i, item in enumerate(queue) if item.key == key]
            if not positions:
                missing.append(name)
            else:
                picks[name] = positions if every else positions[:1]
        message = {"reason": reason, "missing": sorted(missing)}
        return Release({}, message, picks, self.spec.on_incomplete == "fail")

    def on_timer(self, queues: SlotQueues, now: float) -> Release | None:
        timeout = self.spec.timeout
        if timeout is None:
            return None
        heads = [queue[0] for queue in queues.values() if queue]
        if not heads:
            return None
        oldest = min(heads, key=lambda item: item.arrived_at)
        if now - oldest.arrived_at < timeout:
            return None
        return self._incomplete(queues, oldest.key, "timeout", every=False)

    def on_stalled(self, queues: SlotQueues, key: Any) -> Release | None:
        if not any(item.key == key for queue in queues.values() for item in queue):
            return None
        return self._incomplete(queues, key, "incomplete", every=True)

    def on_flush(self, queues: SlotQueues) -> Release | None:
        if self.spec.key is None:
            return None  # a job's join ends with its job: nothing to hurry at shutdown
        heads = [queue[0] for queue in queues.values() if queue]
        if not heads:
            return None
        oldest = min(heads, key=lambda item: item.arrived_at)
        return self._incomplete(queues, oldest.key, "flush", every=False)


def all_slots_ready_policy(
    timeout: float | None = None,
    *,
    key: Callable[[Any], Hashable] | None = None,
    on_incomplete: IncompleteOutcome = "fail",
) -> ActivationPolicy:
    """Run the logic with one data point from every slot once each slot holds one of the
    same job (a join); that job is the current job.

    A join's data never waits forever. When no other message of its job is in flight (the
    other branch failed, was skipped, or emitted nothing), when ``timeout`` seconds pass, or
    at shutdown, the data leaves the join incomplete: with ``on_incomplete="fail"`` (the
    default) the logic does not run and the job fails with ``IncompleteJoinError`` naming the
    missing slots; with ``on_incomplete="run"`` the logic runs with what arrived (the missing
    slots' lists are empty, and ``policy_message`` is
    ``{"reason": "incomplete" | "timeout" | "flush", "missing": [...]}``). When the job ends
    otherwise (failed, cancelled, timed out), its waiting data leaves the join as a dead
    letter.

    ``key``: correlate data points across jobs instead: ``key(data)`` of one data point per
    slot must be equal (``key=lambda data: data["order_id"]``; ``lambda data: None`` pairs the
    oldest of each slot whatever their job). The current job is then the job of the data point
    that completed the join; the other jobs count their data as handled when the logic returns,
    and fail if it raises. Only ``timeout`` and shutdown end such a wait.
    """
    check_seconds("all_slots_ready_policy", "timeout", timeout, allow_none=True)
    if key is not None and not callable(key):
        raise TypeError(f"all_slots_ready_policy: key must be a callable, got {key!r}")
    if on_incomplete not in _INCOMPLETE_OUTCOMES:
        raise ConfigurationError(
            f"all_slots_ready_policy: on_incomplete must be 'fail' or 'run', got {on_incomplete!r}"
        )
    return _AllSlotsReady(timeout, key, on_incomplete)


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


def incomplete_join_error(
    routine_id: str, job_id: str, slot: str, message: Mapping[str, Any], timeout: float | None
) -> IncompleteJoinError:
    """The error an incomplete join fails its job with (internal, shared by every host)."""
    missing = ", ".join(message.get("missing", ())) or "none"
    why = {
        "incomplete": "can no longer arrive (nothing else of the job is in flight)",
        "timeout": f"did not arrive within {timeout} s",
        "flush": "had not arrived when the runtime shut down",
    }.get(message.get("reason", ""), "did not arrive")
    return IncompleteJoinError(
        f"routine {routine_id!r} holds data of job {job_id} in slot {slot!r}, but slot(s) "
        f"{missing} {why}"
    )


def take_released(queues: SlotQueues, release: Release) -> dict[str, list[QueuedItem]]:
    """Remove what ``release`` names from ``queues``: slot -> items, oldest first (internal,
    shared by every host of a routine)."""
    taken: dict[str, list[QueuedItem]] = {}
    if release.picks is None:
        for name, count in release.counts.items():
            queue = queues[name]
            taken[name] = [queue.popleft() for _ in range(count)]
        return taken
    for name, positions in release.picks.items():
        queue = queues[name]
        items = []
        for position in sorted(positions, reverse=True):
            items.append(queue[position])
            del queue[position]
        items.reverse()
        taken[name] = items
    return taken
