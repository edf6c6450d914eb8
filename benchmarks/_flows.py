"""Routines and flows the benchmark scripts share."""

from __future__ import annotations

from typing import Any

from actorflow import Flow, FlowRegistry, Routine


class Step(Routine):
    """Passes each data point on as ``out`` (the lightest routine that still emits)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")
        self.add_event("out")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        self.emit("out", value=slot_data["in"][0])


class Sink(Routine):
    """Takes each data point and does nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        return None


def register_pipeline(flow_id: str, length: int = 3) -> Flow:
    """Register ``s0 -> s1 -> ... -> s<length-1>`` made of :class:`Step` routines."""
    flow = Flow(flow_id)
    for i in range(length):
        flow.add_routine(Step(), f"s{i}")
    for i in range(length - 1):
        flow.connect(f"s{i}", "out", f"s{i + 1}", "in")
    FlowRegistry.get_instance().register(flow)
    return flow
