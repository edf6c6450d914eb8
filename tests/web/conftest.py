"""Fixtures of the web app's tests: a runtime's app served by uvicorn on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from web_kit import TOKEN, WAIT, Served, orders_flow

from actorflow import Runtime


@pytest.fixture
def served(runtime: Runtime) -> Iterator[Served]:
    """Jobs: completed, completed (one line skipped), failed (after 3 tries)."""
    orders_flow()
    server = runtime.serve_monitor(token=TOKEN)
    jobs = [
        runtime.post("orders", "split", "order", order)[1]
        for order in (["pen", "ink"], ["pen", "broken"], [])
    ]
    for job in jobs:
        assert job.wait(WAIT)
    assert runtime.wait_until_all_jobs_finished(WAIT)
    assert [job.status.value for job in jobs] == ["completed", "completed", "failed"]
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        yield Served(runtime, server, client, jobs)
    server.close()
