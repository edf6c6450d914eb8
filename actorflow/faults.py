"""Fault injection: middleware on envelope delivery, driven by a seeded plan.

    plan = (
        FaultPlan(seed=7)
        .drop(p=0.1, routine="charge")             # lose 10% of the messages to "charge"
        .delay(0.05, jitter=0.02, source="order")  # slow down what "order" sends
        .duplicate(p=0.05)                          # deliver some messages twice
        .reorder(window=4, routine="ship")          # shuffle groups of 4 messages to "ship"
        .raise_in("charge", ConnectionError("card network down"), p=0.2)
        .crash("ship", on_message=100)              # crash the actor on its 100th message
        .partition({"order"}, {"charge"}, between=(1.0, 2.0))
    )
    runtime = Runtime(faults=plan)

Message rules match on ``flow``, ``routine`` (the receiving routine), ``source`` (the sending
routine; None for ``post``), ``slot``, ``event``, ``metadata`` (a dict the job's metadata must
contain) and ``ordinal`` (the n-th message to the receiving routine in its worker: an int, a
container or a predicate). Logic rules (``raise_in``, ``crash``) match on their routine, the
activation number, ``flow`` and ``metadata``. Every fault injected is recorded in
``runtime.fault_log()``.

Message rules apply in the order they were added, one after the other: each rule sees what
the rules before it let through, when they let it through. A delayed message meets the next
rule once its delay is over, a reordered one once its group is released, and each copy a
duplicate makes meets every later rule on its own. A logic rule acts when the routine runs,
after every message rule; on one activation the first logic rule that fires raises.

Random choices come from one ``random.Random`` per rule seeded from the plan's seed, made anew
for every runtime: in a deterministic runtime the same seed injects the same faults, even when
one plan object is reused.

Job accounting stays exact: a dropped message leaves its job unfinished, so the job is given
``lost_message_timeout`` (unless it has a timeout already) and ends failed by it; a duplicated
message counts as one more message of its job and is visible in the job's trace.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import cloudpickle

from actorflow._durations import check_seconds
from actorflow.engine.envelope import Envelope, new_envelope
from actorflow.errors import ActorCrash, ConfigurationError
from actorflow.job import JobContext, record_of, with_record

if TYPE_CHECKING:
    from actorflow._clock import Clock
    from actorflow.job import JobRecord

__all__ = ["FaultInjector", "FaultPlan", "FaultRule", "FaultServices", "FaultedWorker"]

_Ready: TypeAlias = "list[tuple[Envelope, Callable[[Any], None]]]"  # passed every rule
_Group: TypeAlias = "list[tuple[_Passage, Envelope, int]]"  # held by a reorder

_MATCH_KEYS = frozenset({"flow", "routine", "source", "slot", "event", "metadata", "ordinal"})


@dataclass
class FaultRule:
    """One rule of a plan (see :class:`FaultPlan`)."""

    index: int
    kind: str
    match: dict[str, Any]
    p: float | None = None
    seconds: float = 0.0
    jitter: float = 0.0
    window: int = 0
    on_message: int | None = None
    exc: Any = None
    groups: tuple[frozenset[str], frozenset[str]] | None = None
    between: tuple[float, float] | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def name(self) -> str:
        return f"{self.index}:{self.kind}"


def _probability(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ConfigurationError(f"a fault probability must be between 0 and 1, got {p!r}")
    return float(p)


class FaultPlan:
    """A seeded set of fault rules, applied to every envelope of a runtime."""

    def __init__(self, seed: int = 0, lost_message_timeout: float = 5.0) -> None:
        """``lost_message_timeout``: a finite number of seconds > 0 and at most
        ``threading.TIMEOUT_MAX`` (else ``InvalidDurationError``)."""
        self.lost_message_timeout = check_seconds(
            "FaultPlan", "lost_message_timeout", lost_message_timeout, allow_zero=False
        )
        self.seed = seed
        self.rules: list[FaultRule] = []

    def _add(self, kind: str, match: Mapping[str, Any], **fields: Any) -> FaultPlan:
        unknown = set(match) - _MATCH_KEYS
        if unknown:
            raise ConfigurationError(
                f"unknown match key(s) {sorted(unknown)} (valid: {sorted(_MATCH_KEYS)})"
            )
        if "metadata" in match and not isinstance(match["metadata"], Mapping):
            raise TypeError("metadata= must be a mapping the job's metadata must contain")
        index = len(self.rules)
        rule = FaultRule(index, kind, dict(match), **fields)
        self.rules.append(rule)
        return self

    def fresh_rules(self, place: str = "") -> list[FaultRule]:
        """The rules with new random generators seeded from the plan's seed: every runtime
        that uses this plan draws the same sequence (a plan object can be reused).

        ``place`` names where the rules are applied when a runtime applies them in several
        places (each routine actor on Ray): each place draws a sequence of its own."""
        fresh = []
        suffix = f":{place}" if place else ""
        for rule in self.rules:
            copy = replace(rule)
            copy.rng = random.Random(f"{self.seed}:{rule.index}:{rule.kind}{suffix}")
            fresh.append(copy)
        return fresh

    # -- message faults ----------------------------------------------------------------
    def drop(self, p: float = 1.0, **match: Any) -> FaultPlan:
        """Lose matching messages with probability ``p``."""
        return self._add("drop", match, p=_probability(p))

    def delay(self, seconds: float, jitter: float = 0.0, p: float = 1.0, **match: Any) -> FaultPlan:
        """Deliver matching messages ``seconds`` (plus up to ``jitter``) later.

        ``seconds``, ``jitter`` and their sum are finite numbers of seconds >= 0 and at most
        ``threading.TIMEOUT_MAX`` (else ``InvalidDurationError``).
        """
        seconds = check_seconds("delay", "seconds", seconds)
        jitter = check_seconds("delay", "jitter", jitter)
        check_seconds("delay", "seconds + jitter", seconds + jitter)
        return self._add("delay", match, p=_probability(p), seconds=seconds, jitter=jitter)

    def duplicate(self, p: float = 1.0, **match: Any) -> FaultPlan:
        """Deliver matching messages twice with probability ``p``."""
        return self._add("duplicate", match, p=_probability(p))

    def reorder(self, window: int = 2, hold: float = 0.05, **match: Any) -> FaultPlan:
        """Hold matching messages in groups of ``window`` and deliver each group shuffled; a
        group still short after ``hold`` seconds is delivered (shuffled) anyway. ``hold`` is a
        finite number of seconds >= 0 and at most ``threading.TIMEOUT_MAX`` (else
        ``InvalidDurationError``)."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigurationError(f"reorder: window must be an int >= 2, got {window!r}")
        hold = check_seconds("reorder", "hold", hold)
        return self._add("reorder", match, window=window, seconds=hold)

    def partition(
        self, group_a: Collection[str], group_b: Collection[str], between: tuple[float, float]
    ) -> FaultPlan:
        """Drop every message between a routine of ``group_a`` and one of ``group_b`` (either
        way) while the runtime's clock is within ``between`` (seconds since it started)."""
        t0, t1 = between
        if not 0 <= t0 <= t1:
            raise ConfigurationError(
                f"partition: between must be (t0, t1) with 0 <= t0 <= t1, got {between}"
            )
        groups = (frozenset(group_a), frozenset(group_b))
        if not groups[0] or not groups[1]:
            raise ConfigurationError("partition: both groups need at least one routine")
        return self._add("partition", {}, groups=groups, between=(float(t0), float(t1)))

    # -- logic faults ------------------------------------------------------------------
    def raise_in(
        self,
        routine: str,
        exc: BaseException | type[BaseException],
        on_message: int | None = None,
        p: float | None = None,
        **match: Any,
    ) -> FaultPlan:
        """Make ``routine``'s logic raise ``exc`` on its ``on_message``-th activation (in each
        worker) or with probability ``p``. The routine's error strategy handles it."""
        if (on_message is None) == (p is None):
            raise ConfigurationError("raise_in needs exactly one of on_message= or p=")
        _check_logic_match("raise_in", match)
        if not (
            isinstance(exc, BaseException)
            or (isinstance(exc, type) and issubclass(exc, BaseException))
        ):
            raise TypeError(f"raise_in needs an exception instance or class, got {exc!r}")
        _check_ordinal("raise_in", on_message)
        return self._add(
            "raise", {**match, "routine": routine}, on_message=on_message,
            p=None if p is None else _probability(p), exc=exc,
        )  # fmt: skip

    def crash(self, routine: str, on_message: int, **match: Any) -> FaultPlan:
        """Crash ``routine``'s actor on its ``on_message``-th activation (in each worker); the
        supervisor restarts it."""
        _check_ordinal("crash", on_message)
        _check_logic_match("crash", match)
        return self._add("crash", {**match, "routine": routine}, on_message=on_message)

    def __repr__(self) -> str:
        return f"FaultPlan(seed={self.seed}, rules={[r.name for r in self.rules]})"


_LOGIC_MATCH_KEYS = frozenset({"flow", "metadata"})


def _check_logic_match(where: str, match: Mapping[str, Any]) -> None:
    """Logic faults happen inside a routine, after slots and senders are behind it."""
    unknown = set(match) - _LOGIC_MATCH_KEYS
    if unknown:
        raise ConfigurationError(
            f"{where} matches on {sorted(_LOGIC_MATCH_KEYS)} (and its routine and message "
            f"number); {sorted(unknown)} cannot apply to a logic fault"
        )


def _check_ordinal(where: str, on_message: int | None) -> None:
    if on_message is not None and (
        isinstance(on_message, bool) or not isinstance(on_message, int) or on_message < 1
    ):
        raise ConfigurationError(f"{where}: on_message must be an int >= 1, got {on_message!r}")


class FaultedWorker(Protocol):
    """What the injector needs of a worker whose envelopes it handles."""

    @property
    def worker_id(self) -> str: ...
    @property
    def flow_id(self) -> str: ...
    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None: ...


class FaultServices(Protocol):
    """What an injector needs where it runs: a runtime's services on threads, a routine
    actor's on Ray."""

    @property
    def now(self) -> float:
        """Seconds since the runtime started."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def timers(self) -> Any: ...

    def job_record(self, job_id: str) -> JobRecord | None:
        """The record of a job this process keeps (None if it keeps none)."""
        ...

    def message_lost(self, job_id: str, seconds: float) -> None:
        """A message of the job was lost: unless it has a timeout, it ends by one."""
        ...


class FaultInjector:
    """Applies a plan inside one runtime (or one Ray routine actor) and keeps its log
    (internal)."""

    def __init__(self, plan: FaultPlan, services: FaultServices, place: str = "") -> None:
        self.plan = plan
        self.services = services
        self._lock = threading.RLock()
        self._log: list[dict[str, Any]] = []
        self._ordinals: dict[tuple[str, str], int] = {}
        self._activations: dict[tuple[str, str, str], int] = {}
        self._held: dict[tuple[int, str, str], _Group] = {}
        rules = plan.fresh_rules(place)
        self.message_rules = [r for r in rules if r.kind not in ("raise", "crash")]
        self.logic_rules = [r for r in rules if r.kind in ("raise", "crash")]

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def take_log(self) -> list[dict[str, Any]]:
        """The entries logged since the last call (a Ray routine actor sends them on)."""
        with self._lock:
            entries, self._log = self._log, []
            return entries

    def extend_log(self, entries: list[dict[str, Any]]) -> None:
        """Add entries logged elsewhere (by the routine actors of a Ray runtime)."""
        with self._lock:
            self._log.extend(entries)

    def _record(self, rule: FaultRule, job_id: str | None, **where: Any) -> None:
        entry = {"rule": rule.name, "fault": rule.kind, "job_id": job_id, **where}
        entry["time"] = round(self.services.now, 6)
        self._log.append(entry)

    def snapshot(self) -> dict[str, Any]:
        """What a successor needs to go on where this injector stopped: the counts of
        messages and activations and each rule's random state (a Ray routine actor's process
        killed by a ``crash`` keeps them for the process Ray starts in its place)."""
        with self._lock:
            return {
                "ordinals": dict(self._ordinals),
                "activations": dict(self._activations),
                "random": [rule.rng.getstate() for rule in self.message_rules + self.logic_rules],
            }

    def resume(self, snapshot: Mapping[str, Any]) -> None:
        """Go on from a :meth:`snapshot` of the injector this one replaces."""
        with self._lock:
            self._ordinals.update(snapshot["ordinals"])
            self._activations.update(snapshot["activations"])
            for rule, state in zip(
                self.message_rules + self.logic_rules, snapshot["random"], strict=True
            ):
                rule.rng.setstate(state)

    # -- matching ----------------------------------------------------------------------
    def _job_of(self, envelope: Envelope) -> JobContext:
        if envelope.blob is not None:  # strict mode: link the copy back to the job's record
            job: JobContext = cloudpickle.loads(envelope.blob)
            record = self.services.job_record(job.job_id)
            return job if record is None else with_record(job, record)
        view = envelope.job
        assert view is not None  # an envelope is sealed (blob) or carries its job
        return view

    def _matches(
        self, rule: FaultRule, facts: Mapping[str, Any], job: Callable[[], JobContext]
    ) -> bool:
        for key, wanted in rule.match.items():
            if key == "metadata":
                metadata = job().metadata
                if any(metadata.get(k, _MISSING) != v for k, v in wanted.items()):
                    return False
            elif key == "ordinal":
                ordinal = facts["ordinal"]
                if callable(wanted):
                    if not wanted(ordinal):
                        return False
                elif isinstance(wanted, int):
                    if ordinal != wanted:
                        return False
                elif ordinal not in wanted:
                    return False
            elif facts.get(key) != wanted:
                return False
        return True

    # -- message faults ----------------------------------------------------------------
    def wrap(
        self, worker: FaultedWorker, source: str | None, event: str | None, target: str, slot: str,
        put: Callable[[Any], None],
    ) -> Callable[[Any], None]:  # fmt: skip
        """A send function for one route that passes each envelope through the plan."""

        def send(envelope: Any) -> None:
            self.send(worker, source, event, target, slot, envelope, put)

        return send

    def send(
        self, worker: FaultedWorker, source: str | None, event: str | None, target: str, slot: str,
        envelope: Any, put: Callable[[Any], None],
    ) -> None:  # fmt: skip
        """Pass one envelope through the message rules, in the order they were added."""
        if type(envelope) is not Envelope or not self.message_rules:
            put(envelope)
            return
        ready: _Ready = []
        with self._lock:
            key = (worker.worker_id, target)
            ordinal = self._ordinals.get(key, 0) + 1
            self._ordinals[key] = ordinal
            passage = _Passage(self, worker, source, event, target, slot, ordinal, envelope, put)
            self._advance(passage, envelope, 0, ready)
        for item, deliver in ready:
            deliver(item)

    def _advance(self, passage: _Passage, envelope: Envelope, start: int, ready: _Ready) -> None:
        """Take ``envelope`` through the message rules from position ``start`` on (lock held).

        A rule that lets it through hands it to the next rule; a delay or a reorder hands it
        on later (from a timer or when its group is released), a duplicate hands on the
        original then its copy. What passes the last rule is appended to ``ready``.
        """
        rules = self.message_rules
        for position in range(start, len(rules)):
            rule = rules[position]
            kind = rule.kind
            if kind == "partition":
                assert rule.groups is not None and rule.between is not None
                a, b = rule.groups
                t0, t1 = rule.between
                source, target = passage.source, passage.target
                crosses = (source in a and target in b) or (source in b and target in a)
                if crosses and t0 <= self.services.now < t1:
                    self._lose(rule, passage)
                    return
                continue
            if not self._matches(rule, passage.facts, passage.job):
                continue
            if rule.p is not None and rule.p < 1.0 and rule.rng.random() >= rule.p:
                continue
            if kind == "drop":
                self._lose(rule, passage)
                return
            if kind == "delay":
                seconds = rule.seconds + (rule.rng.uniform(0, rule.jitter) if rule.jitter else 0.0)
                self._record(rule, passage.job_id(), **passage.where, seconds=seconds)
                if seconds > 0:
                    self._later(seconds, passage, envelope, position + 1)
                    return
            elif kind == "duplicate":
                rec = record_of(passage.job())
                rec.add_inflight(1)
                rec.add_trace(
                    passage.target,
                    "duplicated",
                    {"slot": passage.slot, "source": passage.source, "fault": rule.name},
                )
                self._record(rule, rec.job_id, **passage.where)
                self._advance(passage, envelope, position + 1, ready)  # the original first,
                envelope = _copy(envelope)  # then the copy, through the same rules
            elif kind == "reorder":
                self._record(rule, passage.job_id(), **passage.where)
                self._hold(rule, passage, envelope, position + 1, ready)
                return
        ready.append((envelope, passage.put))

    def _resume(self, passage: _Passage, envelope: Envelope, start: int) -> None:
        """Take a held envelope on through the rules from ``start``, then deliver it."""
        ready: _Ready = []
        with self._lock:
            self._advance(passage, envelope, start, ready)
        for item, deliver in ready:
            deliver(item)

    def _later(self, seconds: float, passage: _Passage, envelope: Envelope, start: int) -> None:
        resume = self._resume
        self.services.timers.call_at(
            self.services.clock.monotonic() + seconds, lambda: resume(passage, envelope, start)
        )

    def _lose(self, rule: FaultRule, passage: _Passage) -> None:
        job_id = passage.job_id()
        self._record(rule, job_id, **passage.where)
        passage.worker.dead_letter(job_id, passage.target, passage.slot, f"lost ({rule.kind})")
        self.services.message_lost(job_id, self.plan.lost_message_timeout)

    def _hold(
        self, rule: FaultRule, passage: _Passage, envelope: Envelope, start: int, ready: _Ready
    ) -> None:
        """Add ``envelope`` to its reorder group; a full group is released at once, a group
        still short ``rule.seconds`` after it opened is released by its timer."""
        key = (rule.index, passage.worker.worker_id, passage.target)
        group = self._held.get(key)
        if group is None:
            group = self._held[key] = []
            expire, opened = self._expire, group
            self.services.timers.call_at(
                self.services.clock.monotonic() + rule.seconds, lambda: expire(rule, key, opened)
            )
        group.append((passage, envelope, start))
        if len(group) >= rule.window:
            del self._held[key]
            self._release(rule, group, ready)

    def _release(self, rule: FaultRule, group: _Group, ready: _Ready) -> None:
        rule.rng.shuffle(group)
        for passage, envelope, start in group:
            self._advance(passage, envelope, start, ready)

    def _expire(self, rule: FaultRule, key: tuple[int, str, str], group: _Group) -> None:
        """The hold time of ``group`` is over: release it, unless it filled up already."""
        ready: _Ready = []
        with self._lock:
            if self._held.get(key) is not group:
                return  # released when it filled up; a newer group has a timer of its own
            del self._held[key]
            self._release(rule, group, ready)
        for item, deliver in ready:
            deliver(item)

    # -- logic faults ------------------------------------------------------------------
    def before_logic(self, worker: FaultedWorker, routine_id: str, job: JobContext | None) -> None:
        """Raise the exception a ``raise_in``/``crash`` rule injects into this activation.

        Activations are counted per worker and routine, across actor restarts.
        """
        if not self.logic_rules:
            return
        with self._lock:
            key = ("logic", worker.worker_id, routine_id)
            ordinal = self._activations.get(key, 0) + 1
            self._activations[key] = ordinal
        facts = {"flow": worker.flow_id, "routine": routine_id, "ordinal": ordinal}
        for rule in self.logic_rules:
            if not self._matches(rule, facts, lambda: job):  # type: ignore[arg-type, return-value]
                continue
            if rule.on_message is not None:
                if ordinal != rule.on_message:
                    continue
            else:
                with self._lock:
                    if rule.p is None or rule.rng.random() >= rule.p:
                        continue
            job_id = None if job is None else job.job_id
            with self._lock:
                self._record(
                    rule, job_id, worker=worker.worker_id, routine=routine_id, ordinal=ordinal
                )
            if rule.kind == "crash":
                crash = ActorCrash(
                    f"injected crash of {routine_id!r} on message {ordinal} ({rule.name})"
                )
                crash.fault_rule = rule.name  # type: ignore[attr-defined]  # a host may act on it
                raise crash
            exc = rule.exc
            raise exc() if isinstance(exc, type) else copy.copy(exc)  # one per fault


class _Missing:
    pass


_MISSING = _Missing()


class _Passage:
    """One message on its way through the message rules, with its copies (internal).

    What the rules match on is fixed when the message is sent; every copy a duplicate makes,
    and every release from a delay or a reorder, is matched on the same facts.
    """

    __slots__ = ("_injector", "_job", "envelope", "facts", "put", "slot", "source", "target",
                 "where", "worker")  # fmt: skip

    def __init__(
        self, injector: FaultInjector, worker: FaultedWorker, source: str | None,
        event: str | None, target: str, slot: str, ordinal: int, envelope: Envelope,
        put: Callable[[Any], None],
    ) -> None:  # fmt: skip
        self._injector = injector
        self._job: JobContext | None = None
        self.worker = worker
        self.source = source
        self.target = target
        self.slot = slot
        self.envelope = envelope
        self.put = put
        self.facts = {
            "flow": worker.flow_id, "routine": target, "source": source, "slot": slot,
            "event": event, "ordinal": ordinal,
        }  # fmt: skip
        self.where = {"worker": worker.worker_id, "routine": target, "slot": slot,
                      "source": source, "ordinal": ordinal}  # fmt: skip

    def job(self) -> JobContext:
        """The message's job (opened once, only when a rule needs it)."""
        if self._job is None:
            self._job = self._injector._job_of(self.envelope)
        return self._job

    def job_id(self) -> str:
        return self.job().job_id


def _copy(envelope: Envelope) -> Envelope:
    """A second, independent delivery of the same message."""
    return new_envelope(
        envelope.target,
        envelope.slot,
        envelope.payload,
        envelope.rec,
        envelope.data,
        envelope.depth,
        envelope.blob,
        envelope.headers,
    )
