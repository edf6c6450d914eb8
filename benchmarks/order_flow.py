"""An order flow as a new user writes it: fan-out, a per-job join, WorkerState calls and a
retrying branch; with and without its state calls, side by side.

    receive -> price ---+
            -> stock ---+-> confirm          (confirm joins price and stock of the same job)

``receive`` counts the order, ``price`` reads the price list, ``stock`` takes the item from the
stock, ``confirm`` counts the confirmation and adds to the revenue: 5 WorkerState calls per
job. ``price`` fails the first try of 5% of the orders with ``ConnectionError`` and retries
(``ErrorStrategy.RETRY``, no delay). The variant without state calls does the same work with
the same retries but touches no WorkerState. Every run checks that each job completed with its
own order's price and quantity (no job mixed) and, with state calls, that the counters are
exact. Jobs are posted all at once, as a new user would: ``post`` waits while the messages in
the worker could fill the join's mailbox (``confirm``, the slowest routine), so no emit into
it is refused.

Prints one JSON object: jobs/s and CPU microseconds per job of each variant (medians of
interleaved rounds) and their ratio.

    python benchmarks/order_flow.py [--jobs 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, interleave, machine, ratio

from actorflow import (
    ErrorStrategy,
    Flow,
    FlowRegistry,
    Routine,
    Runtime,
    all_slots_ready_policy,
    get_current_job,
)

PRICES = {"pen": 3, "ink": 7, "pad": 5}
RETRY_EVERY = 20  # one order in 20 (5%) fails its first price lookup


def build(flow_id: str, with_state: bool) -> None:
    receive = Routine()
    receive.add_slot("order")
    receive.add_event("accepted")

    def receive_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        order = slot_data["order"][0]
        if with_state:
            state.increment("_orders", "received")
        receive.emit("accepted", **order)

    receive.set_logic(receive_logic)

    price = Routine()
    price.add_slot("order")
    price.add_event("priced")

    def price_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        order = slot_data["order"][0]
        job = get_current_job()
        assert job is not None
        if order["n"] % RETRY_EVERY == 0 and not job.data.get("tried"):
            job.set_data("tried", True)
            raise ConnectionError("price service busy")
        prices = state.get_routine_state("_prices") if with_state else PRICES
        price.emit("priced", n=order["n"], amount=prices[order["item"]] * order["quantity"])

    price.set_logic(price_logic)
    price.set_error_handler(ErrorStrategy.RETRY(max_retries=2, delay=0.0))

    stock = Routine()
    stock.add_slot("order")
    stock.add_event("reserved")

    def stock_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        order = slot_data["order"][0]
        if with_state:
            state.increment("_stock", order["item"], -order["quantity"])
        stock.emit("reserved", n=order["n"], quantity=order["quantity"])

    stock.set_logic(stock_logic)

    confirm = Routine()
    confirm.add_slot("priced")
    confirm.add_slot("reserved")
    confirm.set_activation_policy(all_slots_ready_policy())

    def confirm_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        priced, reserved = slot_data["priced"][0], slot_data["reserved"][0]
        job = get_current_job()
        assert job is not None
        if with_state:
            state.increment("_orders", "confirmed")
            state.increment("_orders", "revenue", priced["amount"])
        job.set_data("confirmed", [priced["n"], reserved["n"], priced["amount"]])

    confirm.set_logic(confirm_logic)

    flow = Flow(flow_id)
    for name, routine in (
        ("receive", receive),
        ("price", price),
        ("stock", stock),
        ("confirm", confirm),
    ):
        flow.add_routine(routine, name)
    flow.connect("receive", "accepted", "price", "order")
    flow.connect("receive", "accepted", "stock", "order")
    flow.connect("price", "priced", "confirm", "priced")
    flow.connect("stock", "reserved", "confirm", "reserved")
    FlowRegistry.get_instance().register(flow)


def order(n: int) -> dict[str, Any]:
    item = ("pen", "ink", "pad")[n % 3]
    return {"n": n, "item": item, "quantity": 1 + n % 4}


def run(flow_id: str, with_state: bool, jobs: int) -> dict[str, float]:
    with Runtime(strict=False) as runtime:
        state = runtime.exec(flow_id)
        if with_state:
            state.update_routine_state("_prices", PRICES)
        cpu0, t0 = time.process_time(), time.perf_counter()
        posted = [runtime.post(flow_id, "receive", "order", order(n))[1] for n in range(jobs)]
        runtime.wait_until_all_jobs_finished()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        revenue = 0
        for n, job in enumerate(posted):
            expected = order(n)
            amount = PRICES[expected["item"]] * expected["quantity"]
            assert job.status.value == "completed", (n, job.status, job.error)
            assert job.data["confirmed"] == [n, n, amount], (n, job.data["confirmed"])
            revenue += amount
        if with_state:
            assert state.get_routine_state("_orders") == {
                "received": jobs,
                "confirmed": jobs,
                "revenue": revenue,
            }
    return {"jobs_per_s": jobs / wall, "cpu_us_per_job": cpu / jobs * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    build("bench_orders_state", with_state=True)
    build("bench_orders_plain", with_state=False)
    figures = interleave(
        args.rounds,
        {
            "with_state": lambda: run("bench_orders_state", True, args.jobs),
            "without_state": lambda: run("bench_orders_plain", False, args.jobs),
        },
    )
    state, plain = figures["with_state"], figures["without_state"]
    emit(
        {
            "benchmark": "order_flow",
            "jobs": args.jobs,
            "rounds": args.rounds,
            "with_state_jobs_per_s": round(state["jobs_per_s"]),
            "with_state_cpu_us_per_job": round(state["cpu_us_per_job"], 1),
            "without_state_jobs_per_s": round(plain["jobs_per_s"]),
            "without_state_cpu_us_per_job": round(plain["cpu_us_per_job"], 1),
            "ratio_with_to_without_state": ratio(state["jobs_per_s"], plain["jobs_per_s"]),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
