"""Each routine is an actor: one message at a time, in mailbox order, on its own thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actorflow import ConfigurationError, Flow, FlowRegistry, FlowValidationError, Routine, Runtime

ROUNDS = 200
BASES = (0, 1000, 2000, 3000)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_a_routine_handles_one_message_at_a_time_in_mailbox_order(strict: bool) -> None:
    """Four threads post in lock-step rounds (a barrier between rounds), so their messages
    interleave in the mailbox; the actor holds the first message until every message is
    posted, so a second actor on the mailbox, if there were one, would run meanwhile."""
    active = 0
    overlaps = 0
    order: list[int] = []
    threads: set[int] = set()
    all_posted = threading.Event()

    def logic(slot_data: Any, msg: Any, ws: Any) -> None:
        nonlocal active, overlaps
        active += 1
        if active > 1:
            overlaps += 1
        order.append(slot_data["in"][0])
        threads.add(threading.get_ident())
        if len(order) == 1:
            assert all_posted.wait(10)
        active -= 1

    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(logic)
    flow = Flow("serial")
    flow.add_routine(routine, "only")
    FlowRegistry.get_instance().register(flow)
    rounds = threading.Barrier(len(BASES), timeout=10)
    with Runtime(strict=strict) as runtime:

        def post_rounds(base: int) -> None:
            for i in range(ROUNDS):
                rounds.wait()  # every poster has posted its message of the round before
                runtime.post("serial", "only", "in", base + i)

        posters = [threading.Thread(target=post_rounds, args=(base,)) for base in BASES]
        for t in posters:
            t.start()
        for t in posters:
            t.join(30)
        all_posted.set()
        assert runtime.wait_until_all_jobs_finished(20)
    assert overlaps == 0
    assert len(threads) == 1 and threading.get_ident() not in threads
    # mailbox order: round i's four messages, in any order among them, before round i + 1's
    count = len(BASES)
    rounds_seen = [sorted(order[i * count : (i + 1) * count]) for i in range(ROUNDS)]
    assert rounds_seen == [[base + i for base in BASES] for i in range(ROUNDS)]


def test_on_start_and_on_stop_run_in_the_actor_thread() -> None:
    events: list[tuple[str, int]] = []

    class Hooked(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.add_slot("in")

        def on_start(self) -> None:
            events.append(("start", threading.get_ident()))

        def on_stop(self) -> None:
            events.append(("stop", threading.get_ident()))

        def logic(self, slot_data: Any, msg: Any, ws: Any) -> None:
            events.append(("logic", threading.get_ident()))

    flow = Flow("hooks")
    flow.add_routine(Hooked(), "h")
    FlowRegistry.get_instance().register(flow)
    with Runtime() as runtime:
        runtime.post("hooks", "h", "in", 1)[1].wait(10)
    assert [e[0] for e in events] == ["start", "logic", "stop"]
    assert len({e[1] for e in events}) == 1 and events[0][1] != threading.get_ident()


def test_routine_declaration_errors() -> None:
    routine = Routine()
    routine.add_slot("in")
    routine.add_event("out")
    with pytest.raises(ValueError, match="slot 'in' is already declared"):
        routine.add_slot("in")
    with pytest.raises(ValueError, match="event 'out' is already declared"):
        routine.add_event("out")
    with pytest.raises(TypeError):
        routine.add_slot(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        routine.add_slot("x", max_queue_length=0)
    with pytest.raises(TypeError):
        routine.set_logic("not callable")  # type: ignore[arg-type]
    routine.set_config(a=1)
    routine.set_config(b=2)
    assert routine.get_config("a") == 1 and routine.get_config("missing", 9) == 9


def test_flow_errors_name_what_is_unknown() -> None:
    a, b = Routine(), Routine()
    a.add_event("out")
    b.add_slot("in")
    flow = Flow("f")
    flow.add_routine(a, "a")
    flow.add_routine(b, "b")
    with pytest.raises(ValueError, match="'ghost'"):
        flow.connect("ghost", "out", "b", "in")
    with pytest.raises(ValueError, match="'nope'"):
        flow.connect("a", "nope", "b", "in")
    with pytest.raises(ValueError, match="'wrong'"):
        flow.connect("a", "out", "b", "wrong")
    with pytest.raises(ValueError, match="already has a routine 'a'"):
        flow.add_routine(Routine(), "a")
    with pytest.raises(ValueError, match="already 'a' in flow 'f'"):
        Flow("g").add_routine(a, "x")
    flow.connect("a", "out", "b", "in")
    with pytest.raises(ValueError, match="already connects"):
        flow.connect("a", "out", "b", "in")
    with pytest.raises(FlowValidationError, match="no logic"):
        flow.validate()
    a.set_logic(lambda sd, m, ws: None)
    b.set_logic(lambda sd, m, ws: None)
    flow.validate()
    FlowRegistry.get_instance().register(flow)
    assert FlowRegistry.get_instance().list() == ["f"]


def test_registry_api() -> None:
    registry = __import__(
        "actorflow.monitoring.flow_registry", fromlist=["FlowRegistry"]
    ).FlowRegistry
    reg = registry.get_instance()
    assert reg is FlowRegistry.get_instance()
    flow = Flow("x")
    reg.register_by_name("alias", flow)
    assert reg.get("alias") is flow and reg.get("x") is None
    assert reg.unregister("alias") is True and reg.unregister("alias") is False
    with pytest.raises(TypeError):
        reg.register("not a flow")  # type: ignore[arg-type]
