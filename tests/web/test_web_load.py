"""1,000 jobs submitted over HTTP by 50 concurrent clients, all accounted for."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from web_kit import AUTH, TOKEN, WAIT

from actorflow import Flow, FlowRegistry, Routine, Runtime
from actorflow.web import WebServer, create_app

CLIENTS = 50
JOBS = 1000


def _counting_flow() -> None:
    """``count`` passes each number on to ``tally``, which adds it to the worker's total."""
    count = Routine()
    count.add_slot("in")
    count.add_event("out", ["n"])

    def count_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for n in slot_data["in"]:
            count.emit("out", n=n)

    count.set_logic(count_logic)
    tally = Routine()
    tally.add_slot("in")

    def tally_logic(slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        for item in slot_data["in"]:
            state.increment("sum", "all", item["n"])

    tally.set_logic(tally_logic)
    flow = Flow("counting")
    flow.add_routine(count, "count")
    flow.add_routine(tally, "tally")
    flow.connect("count", "out", "tally", "in")
    FlowRegistry.get_instance().register(flow)


async def _client(url: str, numbers: list[int]) -> list[str]:
    job_ids = []
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        for n in numbers:
            body = {"routine": "count", "slot": "in", "data": n}
            answer = await client.post("/api/flows/counting/jobs", json=body, headers=AUTH)
            assert answer.status_code == 202, answer.text
            job_ids.append(answer.json()["job_id"])
    return job_ids


async def _submit_all(url: str) -> list[str]:
    shares = [list(range(i, JOBS, CLIENTS)) for i in range(CLIENTS)]
    results = await asyncio.gather(*(_client(url, share) for share in shares))
    return [job_id for ids in results for job_id in ids]


@pytest.mark.timeout(300)
def test_a_thousand_jobs_from_fifty_concurrent_clients_are_all_accounted_for() -> None:
    _counting_flow()
    with Runtime(job_retention=2 * JOBS) as runtime:
        state = runtime.exec("counting")
        with WebServer(create_app(runtime, TOKEN)) as server:
            job_ids = asyncio.run(_submit_all(server.url))
            assert len(job_ids) == JOBS and len(set(job_ids)) == JOBS
            assert runtime.wait_until_all_jobs_finished(60)
            with httpx.Client(base_url=server.url, timeout=WAIT) as client:
                metrics = client.get("/api/metrics").json()
                workers = client.get("/api/workers").json()
                completed = client.get("/api/jobs", params={"status": "completed", "limit": 1})
                listed: set[str] = set()
                offset: int | None = 0
                while offset is not None:
                    page = client.get("/api/jobs", params={"limit": 1000, "offset": offset})
                    listed.update(job["job_id"] for job in page.json()["jobs"])
                    offset = page.json()["next_offset"]
        assert metrics["jobs"] == {"active": 0, "completed": JOBS, "failed": 0, "cancelled": 0}
        assert workers[0]["jobs"]["completed"] == JOBS
        assert completed.json()["total"] == JOBS
        assert listed == set(job_ids)
        assert runtime.metrics()["jobs"]["completed"] == JOBS
        assert all(runtime.get_job(job_id).status.value == "completed" for job_id in job_ids)  # type: ignore[union-attr]
        assert state.get_routine_state("sum")["all"] == sum(range(JOBS))
