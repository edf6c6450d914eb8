"""The demo flow: parse -> enrich -> store, in threads with in-memory state.

Each order line is posted as its own job. ``parse`` turns the text into fields, ``enrich``
prices the order (it puts the total in the job's data), ``store`` keeps a running total per
customer in the worker's state. One line is malformed: its job fails in ``parse`` and the
others carry on. Run it with ``./scripts/demo`` or ``python examples/quickstart.py``.
"""

from __future__ import annotations

from typing import Any

from actorflow import Flow, FlowRegistry, Routine, Runtime, get_current_job

PRICES = {"apple": 0.5, "pear": 0.75, "plum": 1.25}


class Parse(Routine):
    """``"alice,3,apple"`` -> ``{"customer": "alice", "quantity": 3, "item": "apple"}``."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("line")
        self.add_event("parsed", ["customer", "quantity", "item"])

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        for line in slot_data["line"]:
            customer, quantity, item = line.split(",")
            self.emit("parsed", customer=customer, quantity=int(quantity), item=item)


class Enrich(Routine):
    """Adds the unit price and the total; both also go into the job's data."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("order")
        self.add_event("priced", ["customer", "item", "total"])
        self.set_config(prices=PRICES)

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        prices = self.get_config("prices")
        for order in slot_data["order"]:
            total = round(prices[order["item"]] * order["quantity"], 2)
            job.set_data("customer", order["customer"])
            job.set_data("total", total)
            self.emit("priced", customer=order["customer"], item=order["item"], total=total)


class Store(Routine):
    """Keeps a total per customer (its own state) and counts orders (a shared ``_`` key)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("order")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: Any
    ) -> None:
        job = get_current_job()
        for order in slot_data["order"]:
            customer, total = order["customer"], order["total"]

            def add(state: dict[str, Any] | None, customer: str = customer, total: float = total):
                state = state or {}
                state[customer] = round(state.get(customer, 0) + total, 2)
                return state

            worker_state.modify_routine_state("store", add)  # atomic read-modify-write
            orders = worker_state.increment("_stats", "orders")
            job.set_data("stored", True)
            job.trace("store", "saved", {"customer": customer, "order_number": orders})


def build_flow() -> Flow:
    flow = Flow("orders")
    flow.add_routine(Parse(), "parse")
    flow.add_routine(Enrich(), "enrich")
    flow.add_routine(Store(), "store")
    flow.connect("parse", "parsed", "enrich", "order")
    flow.connect("enrich", "priced", "store", "order")
    flow.validate()
    return flow


def main() -> None:
    FlowRegistry.get_instance().register(build_flow())
    lines = ["alice,4,apple", "bob,2,pear", "alice,1,plum", "carol,two,pear", "bob,3,plum"]

    with Runtime() as runtime:
        worker_state = runtime.exec("orders")
        # Post every line at once: the jobs run concurrently, each with its own JobContext.
        jobs = [
            runtime.post("orders", "parse", "line", line, metadata={"line": n})[1]
            for n, line in enumerate(lines, start=1)
        ]
        runtime.wait_until_all_jobs_finished(timeout=30)

        print("== jobs ==")
        for job in jobs:
            print(f"line {job.metadata['line']}: {job.status.value}")
            if job.error:
                print(f"  error: {job.error}")
            else:
                print(f"  data: {dict(sorted(job.data.items()))}")
                print(f"  trace: {[(e['routine_id'], e['action']) for e in job.trace_log]}")

        print("== worker state ==")
        for key, state in sorted(worker_state.routine_states.items()):
            print(f"{key}: {dict(sorted(state.items()))}")


if __name__ == "__main__":
    main()
