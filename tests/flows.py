"""Small routines and flows shared by the tests."""

from __future__ import annotations

from typing import Any

from actorflow import Flow, FlowRegistry, Routine, get_current_job


class Relay(Routine):
    """Passes its input on as ``out`` (adds its id to ``path`` in the payload and the job)."""

    def __init__(self, slots: tuple[str, ...] = ("in",)) -> None:
        super().__init__()
        for slot in slots:
            self.add_slot(slot)
        self.add_event("out")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        assert job is not None
        me = self._owner[1] if self._owner else "?"
        seen = list(job.get_data("path", []))
        seen.append(me)
        job.set_data("path", seen)
        for items in slot_data.values():
            for item in items:
                self.emit("out", value=item.get("value") if isinstance(item, dict) else item)


def pipeline(flow_id: str = "pipe", length: int = 3, register: bool = True) -> Flow:
    flow = Flow(flow_id)
    for i in range(length):
        flow.add_routine(Relay(), f"r{i}")
    for i in range(length - 1):
        flow.connect(f"r{i}", "out", f"r{i + 1}", "in")
    if register:
        FlowRegistry.get_instance().register(flow)
    return flow
