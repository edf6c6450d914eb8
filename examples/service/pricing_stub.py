"""A stand-in for a pricing service: ``GET /prices/{sku}`` answers a unit price in cents.

The order service (``app.py``) calls it over HTTP from an async routine. Each answer takes
``latency`` seconds, like a service across a network. ``start_pricing_stub()`` serves it with
uvicorn from a background thread on a free loopback port (the order service does this when it
is given no ``PRICING_URL``); ``python -m examples.service.pricing_stub --port 8001`` serves
it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from actorflow.web import WebServer

PRICES: Mapping[str, int] = {"pen": 150, "ink": 420, "paper": 899}
"""Unit prices in cents, by SKU."""

LATENCY = 0.05
"""Seconds each answer takes."""


def create_pricing_app(prices: Mapping[str, int] = PRICES, latency: float = LATENCY) -> Starlette:
    """The pricing service as an ASGI app. ``app.state.calls`` lists the SKUs asked for, and
    ``app.state.most_in_flight`` is the most calls it was answering at once."""

    async def price(request: Request) -> JSONResponse:
        state = request.app.state
        sku = request.path_params["sku"]
        state.calls.append(sku)
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            await asyncio.sleep(latency)
        finally:
            state.in_flight -= 1
        if sku not in prices:
            return JSONResponse({"error": f"no price for {sku!r}"}, status_code=404)
        return JSONResponse({"sku": sku, "unit_cents": prices[sku]})

    app = Starlette(routes=[Route("/prices/{sku}", price)])
    app.state.calls = []
    app.state.in_flight = 0
    app.state.most_in_flight = 0
    return app


def start_pricing_stub(
    prices: Mapping[str, int] = PRICES, latency: float = LATENCY, port: int = 0
) -> WebServer:
    """Serve the pricing app on loopback from a background thread (``port=0``: a free port).

    The result's ``url`` says where; ``close()`` stops it.
    """
    return WebServer(create_pricing_app(prices, latency), port=port, thread_name="pricing-stub")


def main() -> None:
    """``python -m examples.service.pricing_stub [--host H] [--port N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_pricing_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
