"""An order service: FastAPI in front, an actorflow runtime inside.

``POST /orders`` validates an order with pydantic and posts it as a job (``202`` with the
order id); ``GET /orders/{order_id}`` answers its status and, once priced, its result
(``?wait=N`` waits up to N seconds for it first); ``GET /sales`` reads the worker's state.
The flow has two routines: ``price``, async, asks a pricing service over HTTP (it awaits the
call on the worker's event loop and holds no thread meanwhile), then ``total``, a plain sync
routine, works out the total. ``actorflow.web`` is mounted under ``/actorflow``: the monitor
page, the JSON API and ``/actorflow/metrics``.

Run it from the repository root (see README.md)::

    ACTORFLOW_TOKEN=change-me python -m uvicorn examples.service.app:app --port 8000 \\
        --timeout-graceful-shutdown 5
    ACTORFLOW_TOKEN=change-me python -m examples.service.app --port 8000

Settings come from the environment: ``ACTORFLOW_TOKEN``, the bearer token of the mounted
app's state-changing routes (unset: they are off), and ``PRICING_URL``, the pricing service
(unset: the service starts the stub of ``pricing_stub.py`` on a free loopback port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from actorflow import Flow, FlowRegistry, Routine, Runtime, WorkerState, get_current_job
from actorflow.errors import QueueFullError, RuntimeClosedError
from actorflow.web import create_app

from .pricing_stub import start_pricing_stub

FLOW = "orders"
BULK = 10
"""From this many items on, an order gets 10 % off."""


# -- the flow ---------------------------------------------------------------------------------
class PriceOrder(Routine):
    """Asks the pricing service for the unit price of the order's SKU (async logic)."""

    def __init__(self, pricing_url: str) -> None:
        super().__init__()
        self.pricing_url = pricing_url
        self.add_slot("order")
        self.add_event("priced", ["order", "unit_cents"])
        self.set_concurrency(50)  # up to 50 calls in flight, all on one event loop thread

    async def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: WorkerState
    ) -> None:
        # One client per message keeps the example short; a busy service keeps one per loop.
        async with httpx.AsyncClient(base_url=self.pricing_url, timeout=5.0) as client:
            for order in slot_data["order"]:
                answer = await client.get(f"/prices/{order['sku']}")
                if answer.status_code == 404:
                    raise LookupError(f"no price for {order['sku']!r}")
                answer.raise_for_status()
                self.emit("priced", order=order, unit_cents=answer.json()["unit_cents"])


class TotalOrder(Routine):
    """Works out the total (plain sync logic) and adds it to the day's sales."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("priced")

    def logic(
        self, slot_data: dict[str, list[Any]], policy_message: Any, worker_state: WorkerState
    ) -> None:
        job = get_current_job()
        for message in slot_data["priced"]:
            order, unit_cents = message["order"], message["unit_cents"]
            gross = unit_cents * order["quantity"]
            discount = gross // 10 if order["quantity"] >= BULK else 0
            total = gross - discount
            job.set_data(
                "result",
                {"unit_cents": unit_cents, "discount_cents": discount, "total_cents": total},
            )
            worker_state.increment("sales", "orders")
            worker_state.increment("sales", "cents", total)


def order_flow(pricing_url: str) -> Flow:
    """``price`` (async, calls the pricing service) → ``total`` (sync)."""
    flow = Flow(FLOW)
    flow.add_routine(PriceOrder(pricing_url), "price")
    flow.add_routine(TotalOrder(), "total")
    flow.connect("price", "priced", "total", "priced")
    return flow


# -- the HTTP API -----------------------------------------------------------------------------
class Order(BaseModel):
    """An order as posted: JSON, checked field by field (``422`` otherwise)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=r"^[a-z0-9-]{1,40}$")
    quantity: int = Field(ge=1, le=1000)
    customer: str = Field(min_length=1, max_length=100)


class Accepted(BaseModel):
    """The answer to ``POST /orders``."""

    order_id: str
    status: str


class Priced(BaseModel):
    """What ``total`` worked out."""

    unit_cents: int
    discount_cents: int
    total_cents: int


class OrderStatus(BaseModel):
    """The answer to ``GET /orders/{order_id}``."""

    order_id: str
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    order: Order
    result: Priced | None
    error: str | None


class Sales(BaseModel):
    """The answer to ``GET /sales``."""

    orders: int
    cents: int


def get_runtime(request: Request) -> Runtime:
    """The service's runtime (a FastAPI dependency)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
router = APIRouter()


@router.post("/orders", status_code=202)
async def place_order(order: Order, runtime: RuntimeDep, response: Response) -> Accepted:
    """Post the order as a job; it is priced in the background."""
    try:
        _, job = await runtime.post_async(
            FLOW, "price", "order", order.model_dump(), metadata={"order": order.model_dump()}
        )
    except (QueueFullError, RuntimeClosedError) as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    response.headers["Location"] = f"/orders/{job.job_id}"
    return Accepted(order_id=job.job_id, status=job.status.value)


@router.get("/orders/{order_id}")
async def get_order(
    order_id: str,
    runtime: RuntimeDep,
    wait: Annotated[float, Query(ge=0, le=30, description="seconds to wait for the result")] = 0,
) -> OrderStatus:
    """The order's status, and its result once priced."""
    job = runtime.get_job(order_id)
    if job is None or job.flow_id != FLOW:
        raise HTTPException(404, f"no order {order_id!r}")
    if wait and not job.done:
        with contextlib.suppress(TimeoutError):  # not done yet: answer what it is now
            await asyncio.wait_for(job, timeout=wait)
    result = job.get_data("result")
    return OrderStatus(
        order_id=job.job_id,
        status=job.status.value,
        order=Order.model_validate(job.metadata["order"]),
        result=None if result is None else Priced(**result),
        error=job.error,
    )


@router.get("/sales")
async def sales(request: Request) -> Sales:
    """Orders priced so far and their sum, from the worker's state."""
    state: WorkerState = request.app.state.worker
    figures = await state.aio.get_routine_state("sales") or {}
    return Sales(orders=figures.get("orders", 0), cents=figures.get("cents", 0))


# -- the service ------------------------------------------------------------------------------
def create_service(token: str | None = None, pricing_url: str | None = None) -> FastAPI:
    """The order service. ``token``: the bearer token of the mounted actorflow app's
    state-changing routes (None: they are off). ``pricing_url``: the pricing service (None:
    the lifespan starts the stub on a free loopback port and stops it at the end)."""
    registry = FlowRegistry()
    runtime = Runtime(registry=registry, post_timeout=5)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            url = pricing_url
            if url is None:
                stub = stack.enter_context(start_pricing_stub())
                url = stub.url
            registry.register(order_flow(url))
            await stack.enter_async_context(runtime)  # shuts the runtime down at the end
            app.state.worker = runtime.exec(FLOW)
            yield

    app = FastAPI(title="orders", lifespan=lifespan)
    app.state.runtime = runtime
    app.include_router(router)
    app.mount("/actorflow", create_app(runtime, token=token))
    return app


app = create_service(
    token=os.environ.get("ACTORFLOW_TOKEN") or None,
    pricing_url=os.environ.get("PRICING_URL") or None,
)
"""The service configured from the environment: ``uvicorn examples.service.app:app``."""


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main() -> None:
    """``python -m examples.service.app [--host H] [--port N]`` (``--port 0``: a free port)."""
    parser = argparse.ArgumentParser(description="the order service")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # On SIGTERM uvicorn stops serving, runs the lifespan's end (the runtime shuts down, the
    # stub stops), then raises SIGTERM again: this handler makes that an exit status of 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
