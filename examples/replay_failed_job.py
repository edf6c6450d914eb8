"""A failed job, turned into a test: record it in the service, replay it on a laptop.

The service runs with ``Runtime(record=True)``. An order fails in ``total`` (its total is above
the customer's limit); the service exports that job's recording as JSON. A developer replays
it on the deterministic runtime: the same failure comes back, with the prices the routines read
from the worker state at the time (the replay's own state is empty). After a change to the
discount, the replay says where the new run first goes another way.

Run it with:  python examples/replay_failed_job.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job
from actorflow.testing import replay


def build(discount: float) -> Flow:
    quote = Routine()
    quote.add_slot("order")
    quote.add_event("quoted")

    def quote_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        order = slot_data["order"][0]
        prices = state.get_routine_state("_prices")
        quote.emit("quoted", amount=prices[order["item"]] * order["quantity"])

    quote.set_logic(quote_logic)
    total = Routine()
    total.add_slot("quoted")

    def total_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        amount = slot_data["quoted"][0]["amount"] * (1 - discount)
        job = get_current_job()
        assert job is not None
        job.set_data("total", amount)
        if amount > job.metadata["limit"]:
            raise ValueError(f"total {amount:g} is above the limit {job.metadata['limit']}")

    total.set_logic(total_logic)
    flow = Flow("pricing")
    flow.add_routine(quote, "quote")
    flow.add_routine(total, "total")
    flow.connect("quote", "quoted", "total", "quoted")
    return flow


def main() -> None:
    FlowRegistry.get_instance().register(build(discount=0.1))
    with Runtime(record=True) as runtime:  # the service
        state = runtime.exec("pricing", worker_id="shop")
        state.update_routine_state("_prices", {"pen": 30})
        order = {"item": "pen", "quantity": 4}
        _, job = runtime.post("pricing", "quote", "order", order, {"limit": 100}, job_id="order-7")
        job.wait(10)
        print(f"in the service: {job.job_id} {job.status.value} ({job.error})")
        recording = runtime.recording("order-7")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "order-7.json"
        path.write_text(json.dumps(recording), encoding="utf-8")
        print(f"recorded {len(recording['steps'])} steps:")
        for step in recording["steps"]:
            calls = [f"{call['op']} {call['key']}" for call in step["state_calls"]]
            error = step["error"]["type"] if step["error"] else "no error"
            print(f"  {step['routine']}: state calls {calls}, {error}")
        same = replay(path, build(discount=0.1))  # the developer's machine, same code
        print(same.summary())
        try:
            same.reraise()
        except ValueError as exc:
            print(f"reraised: ValueError: {exc}")
        changed = replay(path, build(discount=0.2))  # after a change to the discount
        print(changed.summary())


if __name__ == "__main__":
    main()
