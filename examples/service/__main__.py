"""The order service, run and driven over HTTP: ``python -m examples.service``.

Serves the service with uvicorn on a free loopback port (its lifespan starts the pricing stub
and the runtime), posts orders to it concurrently, waits for their results, reads the mounted
actorflow app, and stops the server, which shuts the runtime and the stub down. The transcript
is the same on every run (no job id or port is printed).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import Counter

import httpx
import uvicorn

from .app import create_service

ORDERS = [
    {"sku": "pen", "quantity": 3, "customer": "ada"},
    {"sku": "paper", "quantity": 12, "customer": "grace"},
    {"sku": "ink", "quantity": 1, "customer": "alan"},
    {"sku": "quill", "quantity": 1, "customer": "ada"},  # the pricing service has no quill
]


async def drive(client: httpx.AsyncClient, token: str) -> None:
    """What clients of the service would do."""
    placed = await asyncio.gather(*(client.post("/orders", json=order) for order in ORDERS))
    print("POST /orders:", [answer.status_code for answer in placed])
    answers = await asyncio.gather(
        *(client.get(answer.headers["location"], params={"wait": 10}) for answer in placed)
    )
    for answer in answers:
        body = answer.json()
        order = body["order"]
        outcome = body["result"] if body["status"] == "completed" else body["error"]
        print(f"  {order['customer']:<5} {order['quantity']:>2} x {order['sku']:<5}", end=" ")
        print(f"{body['status']:<9} {outcome}")

    bad = await client.post("/orders", json={"sku": "pen", "quantity": 0, "customer": "ada"})
    print("a bad order:", bad.status_code, [(e["loc"], e["msg"]) for e in bad.json()["detail"]])
    print("GET /sales:", (await client.get("/sales")).json())

    jobs = (await client.get("/actorflow/api/jobs")).json()
    statuses = Counter(job["status"] for job in jobs["jobs"])
    print("GET /actorflow/api/jobs:", dict(sorted(statuses.items())))
    for line in (await client.get("/actorflow/metrics")).text.splitlines():
        if line.startswith("actorflow_jobs_finished_total{"):
            print(" ", line)

    body = {"routine": "price", "slot": "order", "data": ORDERS[0]}
    refused = await client.post("/actorflow/api/flows/orders/jobs", json=body)
    print("POST /actorflow/api/flows/orders/jobs without the token:", refused.status_code)
    accepted = await client.post(
        "/actorflow/api/flows/orders/jobs",
        json={**body, "metadata": {"order": ORDERS[0]}},
        headers={"Authorization": f"Bearer {token}"},
    )
    order_id = accepted.json()["job_id"]
    done = (await client.get(f"/orders/{order_id}", params={"wait": 10})).json()
    print("  with it:", accepted.status_code, done["status"], done["result"])


async def main() -> None:
    token = secrets.token_urlsafe(16)  # a real service reads it from its environment
    service = create_service(token=token)
    listening = socket.create_server(("127.0.0.1", 0))  # bound and listening: clients may
    port = listening.getsockname()[1]  # connect at once, and are answered after startup
    config = uvicorn.Config(service, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    print("serving the order service on a free loopback port")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        driving = asyncio.create_task(drive(client, token))
        await asyncio.wait({serving, driving}, return_when=asyncio.FIRST_COMPLETED)
        if not driving.done():
            driving.cancel()
            raise SystemExit("the server stopped before the orders were served")
        await driving
    server.should_exit = True
    await serving
    print("stopped; the runtime is closed:", service.state.runtime.closed)


if __name__ == "__main__":
    asyncio.run(main())
