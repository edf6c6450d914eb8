"""Shared by the web app's tests: a token, a small flow, and what the ``served`` fixture holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from actorflow import Flow, FlowRegistry, JobContext, Routine, Runtime

pytest.importorskip("starlette", reason="starlette is not installed (the web extra)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (the web extra)")

from actorflow.web import WebServer

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 10.0


def orders_flow() -> Flow:
    """``split`` (retries twice, then fails the job) emits one ``line`` per item to ``price``
    (skips what it cannot price: the job goes on, the message is a ``skipped`` dead letter)."""
    split = Routine()
    split.add_slot("order")
    split.add_event("line", ["item"])

    def split_order(slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
        for order in slot_data["order"]:
            if not order:
                raise ValueError("empty order")
            for item in order:
                split.emit("line", item=item)

    split.set_logic(split_order)
    split.set_error_handler("retry", max_retries=2, delay=0.0)
    price = Routine()
    price.add_slot("line")

    def price_line(slot_data: dict[str, list[Any]], policy_message: Any, state: Any) -> None:
        for message in slot_data["line"]:
            if message["item"] == "broken":
                raise ValueError("cannot price 'broken'")

    price.set_logic(price_line)
    price.set_error_handler("skip")
    flow = Flow("orders")
    flow.add_routine(split, "split")
    flow.add_routine(price, "price")
    flow.connect("split", "line", "price", "line")
    FlowRegistry.get_instance().register(flow)
    return flow


@dataclass
class Served:
    """A runtime running the orders flow after three jobs, and its app served with a token."""

    runtime: Runtime
    server: WebServer
    client: httpx.Client
    jobs: list[JobContext]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def worker_id(self) -> str:
        return self.jobs[0].worker_id
