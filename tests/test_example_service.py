"""The order service of ``examples/service/``, run as a real process and driven over HTTP.

The service runs under uvicorn on a free loopback port (``--port 0``; the port is read from
uvicorn's log), started as ``python -m examples.service.app`` and, in the shutdown test, also
as ``python -m uvicorn examples.service.app:app``. Its pricing service is a stub served by
this test process with prices of its own, so a price in an answer can only have come over
HTTP; the stub also counts the calls it got and how many were in flight at once. Requests go
through a real ``httpx`` client; the service is stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (the dev extra)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (the web extra)")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # examples/ is imported from the repository root
    sys.path.insert(0, str(ROOT))

from starlette.applications import Starlette  # noqa: E402

from actorflow.web import WebServer  # noqa: E402
from examples.service.pricing_stub import create_pricing_app  # noqa: E402

TOKEN = "order-service-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 20.0
PRICES = {"pen": 123, "ink": 456, "paper": 789}  # not the stub's own: prices come over HTTP
LATENCY = 0.25  # long enough for concurrent orders to overlap at the stub
RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
LAUNCHERS = {
    # the example's own entry point: a SIGTERM that stopped it cleanly ends it with status 0
    "main": (["-m", "examples.service.app", "--port", "0"], 0),
    # uvicorn's command line: after a clean stop uvicorn raises the signal again, so the
    # status says SIGTERM ended it
    "uvicorn": (
        [
            *["-m", "uvicorn", "examples.service.app:app", "--host", "127.0.0.1", "--port", "0"],
            *["--no-access-log", "--timeout-graceful-shutdown", "5"],
        ],
        -signal.SIGTERM,
    ),
}


@dataclass
class Service:
    """The service's process, where it answers and what it wrote to stderr."""

    process: subprocess.Popen[str]
    url: str
    stderr: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self) -> int:
        """SIGTERM, then the exit code (the process is killed if it does not exit)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(WAIT)
            raise
        finally:
            if self.reader is not None:
                self.reader.join(WAIT)

    @property
    def log(self) -> str:
        return "".join(self.stderr)


def start_service(launcher: str = "main", **env: str) -> Service:
    """The service under uvicorn on a free loopback port, once it answers."""
    environment = {**os.environ, **env}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    process = subprocess.Popen(
        [sys.executable, *LAUNCHERS[launcher][0]],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name="service-stderr", daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=WAIT)
            if line is None:
                pytest.fail(f"the service exited before it served:\n{''.join(stderr)}")
            found = RUNNING.search(line)
            if found is not None:
                return Service(process, found[1], stderr, reader)
    except BaseException:
        process.kill()
        process.wait(WAIT)
        raise


@pytest.fixture(scope="module")
def pricing() -> Iterator[Starlette]:
    """The pricing stub, served from this process on a free loopback port."""
    app = create_pricing_app(PRICES, latency=LATENCY)
    with WebServer(app, thread_name="test-pricing") as server:
        app.state.url = server.url
        yield app


@pytest.fixture(scope="module")
def service(pricing: Starlette) -> Iterator[Service]:
    running = start_service(ACTORFLOW_TOKEN=TOKEN, PRICING_URL=pricing.state.url)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=WAIT) as http:
        yield http


def metric(text: str, family: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name != family:
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.rpartition("}")[0]))
        if all(sample_labels.get(key) == value for key, value in labels.items()):
            total += float(rest.rpartition(" ")[2])
    return total


def expected_result(sku: str, quantity: int) -> dict[str, int]:
    gross = PRICES[sku] * quantity
    discount = gross // 10 if quantity >= 10 else 0
    return {"unit_cents": PRICES[sku], "discount_cents": discount, "total_cents": gross - discount}


async def place_and_await(url: str, orders: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Post ``orders`` concurrently, then wait for each (``?wait=``); the two lists of answers."""
    async with httpx.AsyncClient(base_url=url, timeout=WAIT) as http:
        placed = await asyncio.gather(*(http.post("/orders", json=order) for order in orders))
        assert [answer.status_code for answer in placed] == [202] * len(orders), [
            answer.text for answer in placed
        ]
        done = await asyncio.gather(
            *(http.get(answer.headers["location"], params={"wait": WAIT}) for answer in placed)
        )
    return placed, done


def test_twenty_concurrent_orders_are_priced_over_http_and_seen_by_the_mounted_app(
    service: Service, client: httpx.Client, pricing: Starlette
) -> None:
    skus = ["pen", "ink", "paper"]
    orders = [
        {"sku": skus[n % 3], "quantity": n + 1, "customer": f"customer-{n}"} for n in range(20)
    ]
    metrics_before = client.get("/actorflow/metrics").text
    sales_before = client.get("/sales").json()
    calls_before = len(pricing.state.calls)

    placed, done = asyncio.run(place_and_await(service.url, orders))

    ids = [answer.json()["order_id"] for answer in placed]
    assert len(set(ids)) == 20
    assert [answer.headers["location"] for answer in placed] == [f"/orders/{i}" for i in ids]
    for order, order_id, answer in zip(orders, ids, done, strict=True):
        assert answer.status_code == 200
        assert answer.json() == {
            "order_id": order_id,
            "status": "completed",
            "order": order,
            "result": expected_result(order["sku"], order["quantity"]),
            "error": None,
        }
    calls = pricing.state.calls[calls_before:]
    assert Counter(calls) == Counter(order["sku"] for order in orders)
    assert pricing.state.most_in_flight > 1, "the async routine never had two calls in flight"

    sales = client.get("/sales").json()
    assert sales["orders"] - sales_before["orders"] == 20
    assert sales["cents"] - sales_before["cents"] == sum(
        expected_result(order["sku"], order["quantity"])["total_cents"] for order in orders
    )

    listed = client.get("/actorflow/api/jobs", params={"flow": "orders", "limit": 1000}).json()
    statuses = {job["job_id"]: job["status"] for job in listed["jobs"]}
    assert {order_id: statuses.get(order_id) for order_id in ids} == dict.fromkeys(ids, "completed")
    one = client.get(f"/actorflow/api/jobs/{ids[0]}").json()
    assert [(step["routine_id"], step["outcome"]) for step in one["timeline"]] == [
        ("price", "ok"),
        ("total", "ok"),
    ]
    assert one["data"]["result"] == expected_result(orders[0]["sku"], orders[0]["quantity"])

    metrics_after = client.get("/actorflow/metrics").text
    for family, labels in [
        ("actorflow_jobs_finished_total", {"status": "completed", "flow": "orders"}),
        ("actorflow_routine_handled_total", {"routine": "price"}),
        ("actorflow_routine_handled_total", {"routine": "total"}),
    ]:
        counted = metric(metrics_after, family, **labels) - metric(metrics_before, family, **labels)
        assert counted == 20, (family, labels, counted)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"sku": "pen", "quantity": 1}, ["body", "customer"]),
        ({"sku": "pen", "quantity": "3", "customer": "ada"}, ["body", "quantity"]),
        ({"sku": "pen", "quantity": True, "customer": "ada"}, ["body", "quantity"]),
        ({"sku": "pen", "quantity": 0, "customer": "ada"}, ["body", "quantity"]),
        ({"sku": "pen", "quantity": 1001, "customer": "ada"}, ["body", "quantity"]),
        ({"sku": "../admin", "quantity": 1, "customer": "ada"}, ["body", "sku"]),
        ({"sku": "pen", "quantity": 1, "customer": "ada", "x": 1}, ["body", "x"]),
        (["pen", 1, "ada"], ["body"]),
        (b'{"sku": "pen",', ["body", 14]),
    ],
    ids=[
        "missing",
        "string-number",
        "bool-number",
        "zero",
        "too-many",
        "bad-sku",
        "extra-field",
        "not-an-object",
        "not-json",
    ],
)
def test_a_bad_order_gets_422_and_posts_no_job(
    client: httpx.Client, body: Any, where: list[Any]
) -> None:
    before = client.get("/actorflow/api/jobs").json()["total"]
    if isinstance(body, bytes):
        answer = client.post("/orders", content=body, headers={"Content-Type": "application/json"})
    else:
        answer = client.post("/orders", json=body)
    assert answer.status_code == 422, answer.text
    assert where in [error["loc"] for error in answer.json()["detail"]], answer.json()
    assert client.get("/actorflow/api/jobs").json()["total"] == before


def test_an_unknown_sku_fails_its_order_with_what_the_pricing_service_said(
    service: Service,
) -> None:
    orders = [
        {"sku": "quill", "quantity": 1, "customer": "ada"},
        {"sku": "pen", "quantity": 2, "customer": "ada"},
    ]
    _, done = asyncio.run(place_and_await(service.url, orders))
    failed, completed = (answer.json() for answer in done)
    assert (failed["status"], failed["result"]) == ("failed", None)
    assert failed["error"] == "LookupError: no price for 'quill'"
    assert (completed["status"], completed["result"]) == ("completed", expected_result("pen", 2))


def test_an_unknown_order_is_404(client: httpx.Client) -> None:
    answer = client.get("/orders/job-nope-1")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "no order 'job-nope-1'"}
    assert client.get("/orders/job-nope-1", params={"wait": -1}).status_code == 422


def test_the_mounted_app_posts_only_with_the_token(client: httpx.Client) -> None:
    order = {"sku": "ink", "quantity": 2, "customer": "ada"}
    body = {"routine": "price", "slot": "order", "data": order, "metadata": {"order": order}}
    url = "/actorflow/api/flows/orders/jobs"
    assert client.post(url, json=body).status_code == 401
    wrong = client.post(url, json=body, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    accepted = client.post(url, json=body, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"].startswith("/actorflow/api/jobs/")
    order_id = accepted.json()["job_id"]
    done = client.get(f"/orders/{order_id}", params={"wait": WAIT}).json()
    assert (done["status"], done["result"]) == ("completed", expected_result("ink", 2))
    cancel = client.post(f"/actorflow/api/jobs/{order_id}/cancel")
    assert cancel.status_code == 401


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_sigterm_stops_the_service_its_runtime_and_its_own_pricing_stub(launcher: str) -> None:
    running = start_service(launcher, ACTORFLOW_TOKEN=TOKEN)  # no PRICING_URL: its own stub
    try:
        with httpx.Client(base_url=running.url, timeout=WAIT) as http:
            order = {"sku": "paper", "quantity": 10, "customer": "ada"}
            location = http.post("/orders", json=order).headers["location"]
            done = http.get(location, params={"wait": WAIT}).json()
            assert done["status"] == "completed"
            assert done["result"] == {  # the stub's own price of paper: 899
                "unit_cents": 899,
                "discount_cents": 899,
                "total_cents": 8091,
            }
            # a monitor page left open: its event stream must not keep the service alive
            with http.stream("GET", "/actorflow/api/events") as events:
                assert next(line for line in events.iter_lines() if line.startswith("data:"))
                code = running.stop()
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(WAIT)
    assert code == LAUNCHERS[launcher][1], running.log
    assert "Traceback" not in running.log, running.log
    assert "Application shutdown complete." in running.log, running.log
