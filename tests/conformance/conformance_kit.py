"""What the conformance tests share: the backends, a gate that holds a logic, flow builders.

The tests of this directory are written once and run on every backend (see ``conftest.py``).
They observe only what every backend reports to the driver: job status, error, data and
trace, the WorkerState, ``runtime.metrics()`` and the dead letters. Nothing a routine writes
to a Python object of the test survives on Ray (the routine runs in another process), so a
routine never appends to a list of the test.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from actorflow import Flow, FlowRegistry, Routine, Runtime
from actorflow.activation_policies import ActivationPolicy

__all__ = [
    "BACKENDS",
    "Backend",
    "actorflow_threads",
    "append",
    "backend_params",
    "defects",
    "make_routine",
    "register",
]

# -- the backends ------------------------------------------------------------------------

DETERMINISTIC_SEED = 7
"""The deterministic backend's seed (any seed must pass; a fixed one keeps runs repeatable)."""


def _threads(**options: Any) -> Runtime:
    return Runtime(**{"strict": False, **options})


def _threads_strict(**options: Any) -> Runtime:
    return Runtime(**{"strict": True, **options})


def _deterministic(**options: Any) -> Runtime:
    from actorflow.testing import DeterministicRuntime

    options.pop("deterministic", None)  # it is
    return DeterministicRuntime(**{"seed": DETERMINISTIC_SEED, "strict": False, **options})


def _ray(**options: Any) -> Runtime:
    return Runtime(backend="ray", **options)


BACKENDS: dict[str, Callable[..., Runtime]] = {
    "threads": _threads,
    "threads-strict": _threads_strict,
    "deterministic": _deterministic,
    "ray": _ray,
}
"""Every backend the suite runs on: its name (the test id) and how to make its runtime."""

WAIT_SECONDS = {"threads": 10.0, "threads-strict": 10.0, "deterministic": 60.0, "ray": 10.0}
"""How long a test waits for a job (virtual seconds on the deterministic backend, where a wait
moves virtual time through the pending timers and costs nothing)."""

REFUSED: dict[str, frozenset[str]] = {
    "threads": frozenset(),
    "threads-strict": frozenset(),
    "deterministic": frozenset(),
    "ray": frozenset({"deterministic", "store_object"}),
}
"""Features a backend refuses by design, each with ``ConfigurationError`` (docs/ray.md)."""

_MARKS: dict[str, tuple[Any, ...]] = {"ray": (pytest.mark.ray, pytest.mark.timeout(180))}


def backend_params(known_defects: dict[str, str] | None = None) -> list[Any]:
    """One ``pytest.param`` per backend, with its marks (and a strict xfail per known defect)."""
    known_defects = known_defects or {}
    unknown = set(known_defects) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)} (backends: {list(BACKENDS)})")
    params = []
    for name in BACKENDS:
        marks = list(_MARKS.get(name, ()))
        reason = known_defects.get(name)
        if reason is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def defects(**reasons: str) -> pytest.MarkDecorator:
    """Mark the backends on which a test fails because of a known defect there.

    ``@defects(ray="what is wrong")`` runs the test on every backend as usual, and on Ray as a
    strict xfail: the test stays as written, fails there today, and turns red (XPASS) the
    moment the defect is fixed, so the mark must go with the fix. Keyword names are backend
    names with ``_`` for ``-`` (``threads_strict=...``).
    """
    known = {name.replace("_", "-"): reason for name, reason in reasons.items()}
    return pytest.mark.parametrize("backend", backend_params(known), indirect=True)


def actorflow_threads() -> list[threading.Thread]:
    """The live threads actorflow started in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("actorflow-") and t.is_alive()]


class Backend:
    """One backend, for one test: makes its runtimes and gates and cleans them up after."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.wait = WAIT_SECONDS[name]
        self.refused = REFUSED[name]
        self._make = BACKENDS[name]
        self._runtimes: list[Runtime] = []
        self._gates: list[Any] = []

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"

    @property
    def is_deterministic(self) -> bool:
        return self.name == "deterministic"

    def refuses(self, feature: str) -> bool:
        """Whether this backend refuses ``feature`` by design (the test then asserts that)."""
        return feature in self.refused

    def runtime(self, **options: Any) -> Runtime:
        """A new runtime of this backend; the test's teardown shuts it down if it is open."""
        runtime = self._make(**options)
        self._runtimes.append(runtime)
        return runtime

    def gate(self) -> Any:
        """A gate that holds a routine's logic while the test acts (see :class:`ThreadGate`)."""
        seconds = self.wait
        gate: Any
        if self.is_ray:
            gate = RayGate(seconds)
        elif self.is_deterministic:
            gate = InlineGate()
        else:
            gate = ThreadGate(seconds)
        self._gates.append(gate)
        return gate

    def settle(self, runtime: Runtime) -> None:
        """Deliver every message that can be delivered now.

        The deterministic scheduler delivers only when told (a wait, ``run_until_idle``); the
        other backends deliver by themselves, so there is nothing to do.
        """
        if self.is_deterministic:
            runtime.run_until_idle()

    def state_store(self, path: Path) -> Any:
        """A SQLite state store at ``path`` in the form the backend takes: a store object,
        or on Ray a zero-argument function that makes it in the supervisor's process."""
        from actorflow.store import create_store

        if self.is_ray:
            return functools.partial(create_store, "sqlite", path=str(path))
        return create_store("sqlite", path=str(path))

    def close(self) -> None:
        for gate in self._gates:
            gate.close()
        for runtime in self._runtimes:
            if not runtime.closed:
                runtime.shutdown(wait=False)
        for gate in self._gates:
            gate.dispose()


# -- holding a logic while the test acts ---------------------------------------------------


def _outcome(action: Callable[[], Any] | None) -> tuple[bool, Any]:
    try:
        return True, None if action is None else action()
    except Exception as exc:
        return False, exc


class ThreadGate:
    """Holds a routine's logic until the test has done something (threads backends).

    The logic calls :meth:`block`; the test calls :meth:`during` with what it wants done while
    a logic is held (``during`` waits until one is), then reads what that returned or raised
    with :meth:`result`. Every later ``block`` returns at once.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._entered = threading.Event()
        self._opened = threading.Event()
        self._outcome: tuple[bool, Any] | None = None

    def block(self) -> None:
        self._entered.set()
        if not self._opened.wait(self._seconds):
            raise AssertionError("the gate was never opened")

    def during(self, action: Callable[[], Any] | None = None) -> None:
        try:
            if not self._entered.wait(self._seconds):
                raise AssertionError("no routine reached the gate")
            self._outcome = _outcome(action)
        finally:
            self._opened.set()

    def result(self) -> Any:
        if self._outcome is None:
            raise AssertionError("the gate's action has not run")
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._opened.set()

    def dispose(self) -> None:
        pass


class InlineGate(ThreadGate):
    """The deterministic backend's gate: every logic runs on the test's own thread, inside a
    wait, so the action given to :meth:`during` runs there, from the first :meth:`block`.

    Call ``during`` before waiting (nothing is delivered before a wait), and ``result`` after.
    """

    def __init__(self) -> None:
        super().__init__(0.0)
        self._action: Callable[[], Any] | None = None
        self._armed = False

    def block(self) -> None:
        if self._armed:
            self._armed = False
            self._outcome = _outcome(self._action)

    def during(self, action: Callable[[], Any] | None = None) -> None:
        self._action = action
        self._armed = True


class _GateActor:
    """The Ray backend's gate, an asyncio Ray actor both processes can reach."""

    def __init__(self) -> None:
        import asyncio

        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def block(self, seconds: float) -> bool:
        import asyncio

        self.entered.set()
        try:
            await asyncio.wait_for(self.opened.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def wait_entered(self, seconds: float) -> bool:
        import asyncio

        try:
            await asyncio.wait_for(self.entered.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def open(self) -> None:
        self.opened.set()


class RayGate(ThreadGate):
    """A gate whose :meth:`block` runs in a routine actor's process (Ray backend)."""

    def __init__(self, seconds: float) -> None:
        import ray

        super().__init__(seconds)
        self._actor: Any = ray.remote(_GateActor).remote()

    def __getstate__(self) -> dict[str, Any]:
        return {"_seconds": self._seconds, "_actor": self._actor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._seconds = state["_seconds"]
        self._actor = state["_actor"]
        self._outcome = None

    def block(self) -> None:
        import ray

        if not ray.get(self._actor.block.remote(self._seconds)):
            raise AssertionError("the gate was never opened")

    def during(self, action: Callable[[], Any] | None = None) -> None:
        import ray

        try:
            if not ray.get(self._actor.wait_entered.remote(self._seconds)):
                raise AssertionError("no routine reached the gate")
            self._outcome = _outcome(action)
        finally:
            self.close()

    def close(self) -> None:
        import ray

        ray.get(self._actor.open.remote())

    def dispose(self) -> None:
        import ray

        ray.kill(self._actor)


# -- building flows ------------------------------------------------------------------------

Logic = Callable[[dict[str, list[Any]], Any, Any], Any]


def make_routine(
    logic: Logic,
    *,
    slots: Sequence[str] = ("in",),
    events: Iterable[str | tuple[str, Sequence[str]]] = (),
    policy: ActivationPolicy | None = None,
    strategy: Any = None,
    concurrency: int = 1,
    max_queue_length: int | None = None,
) -> Routine:
    """A routine with ``logic``; an event given as ``(name, fields)`` declares its fields."""
    routine = Routine()
    for slot in slots:
        if max_queue_length is None:
            routine.add_slot(slot)
        else:
            routine.add_slot(slot, max_queue_length=max_queue_length)
    for event in events:
        if isinstance(event, tuple):
            routine.add_event(event[0], list(event[1]))
        else:
            routine.add_event(event)
    if policy is not None:
        routine.set_activation_policy(policy)
    if strategy is not None:
        routine.set_error_handler(strategy)
    if concurrency != 1:
        routine.set_concurrency(concurrency)
    routine.set_logic(logic)
    return routine


def register(
    flow_id: str,
    routines: dict[str, Routine],
    connections: Iterable[tuple[str, str, str, str]] = (),
) -> Flow:
    """Register a flow of ``routines`` (in this order) wired by ``(source, event, target,
    slot)`` connections."""
    flow = Flow(flow_id)
    for routine_id, routine in routines.items():
        flow.add_routine(routine, routine_id)
    for source, event, target, slot in connections:
        flow.connect(source, event, target, slot)
    FlowRegistry.get_instance().register(flow)
    return flow


def append(worker_state: Any, key: str, value: Any) -> list[Any]:
    """Append ``value`` to the list stored under ``key``, atomically; the new list."""
    result: list[Any] = worker_state.modify_routine_state(key, lambda old: [*(old or []), value])
    return result


# What this module defines travels to Ray's processes by value, so they need not import it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
