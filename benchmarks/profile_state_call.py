"""Where one WorkerState call's time goes: the layers of an ``increment``, peeled one by one.

A routine's ``worker_state.increment(key, field)`` passes through four layers on the thread
backend: the handle (``WorkerState.increment``: argument and access checks), the worker
(``WorkerCore.state_call``: is the worker still running, may the call be applied on this
thread), the supervisor's turn (``SupervisorCore.apply_now``: take the turn if the supervisor
is idle, dispatch by operation, turn an escaping ``BaseException`` into the caller's error),
and the operation itself (``SupervisorCore._increment``). Each layer is timed alone, called in
a loop on one thread, so each figure is the cost of its layer plus those below it; the
difference between two lines is one layer's own cost. Prints one JSON object: the best of
``--rounds`` loops of ``--calls`` calls each, in microseconds per call, the rounds interleaved.

Run it on an older checkout to see a before: ``PYTHONPATH=old/ python
benchmarks/profile_state_call.py`` (a checkout from before ``apply_now`` is timed through
``call_inline`` with a ``StateCall``, the way it then went).

    python benchmarks/profile_state_call.py [--calls 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine

import actorflow.engine.state_owner as state_owner
from actorflow import Flow, FlowRegistry, Routine, Runtime
from actorflow.worker import WorkerState


class Counter(Routine):
    """A routine whose handle the layers are timed through (its logic never runs here)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")

    def logic(self, slot_data: Any, policy_message: Any, worker_state: Any) -> None:
        """Nothing: only the routine's state handle is used."""


def layers(state: WorkerState) -> dict[str, Callable[[], Any]]:
    """One callable per layer, outermost first, each making the same increment."""
    core: Any = state._core  # the worker: its internal seams are what is timed
    supervisor = core.supervisor_core
    handle = WorkerState(core, "counter")  # a routine's own handle, as its logic gets it
    apply_now = getattr(supervisor, "apply_now", None)
    if apply_now is not None:

        def turn() -> Any:
            return apply_now("increment", "counter", "n", 1)

        def operation() -> Any:
            return supervisor._increment("counter", "n", 1)

    else:  # before apply_now: a StateCall object, call_inline, _apply, the operation

        def turn() -> Any:
            call = state_owner.StateCall("increment", "counter", "n", 1, None)
            return supervisor.call_inline(call)

        def operation() -> Any:
            call = state_owner.StateCall("increment", "counter", "n", 1, None)
            return supervisor._increment(call)

    return {
        "WorkerState.increment": lambda: handle.increment("counter", "n"),
        "WorkerCore.state_call": lambda: core.state_call("increment", "counter", "n", 1),
        "SupervisorCore turn": turn,
        "SupervisorCore._increment": operation,
        "an empty call (the loop's own cost)": lambda: None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    flow = Flow("bench_state_call")
    flow.add_routine(Counter(), "counter")
    FlowRegistry.get_instance().register(flow)
    with Runtime(strict=False) as runtime:
        state = runtime.exec("bench_state_call")
        timed = layers(state)
        best = dict.fromkeys(timed, float("inf"))
        for _ in range(args.rounds):
            for name, call in timed.items():
                seconds = timeit.timeit(call, number=args.calls)
                best[name] = min(best[name], seconds / args.calls * 1e6)
        total = state.get_routine_state("counter")
    counted = (len(timed) - 1) * args.rounds * args.calls
    assert total == {"n": counted}, (total, counted)  # every increment was applied once
    names = list(timed)
    emit(
        {
            "benchmark": "profile_state_call",
            "calls": args.calls,
            "rounds": args.rounds,
            "us_per_call": {name: round(best[name], 3) for name in names},
            "own_us_per_call": {
                name: round(best[name] - best[names[i + 1]], 3) for i, name in enumerate(names[:-1])
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
