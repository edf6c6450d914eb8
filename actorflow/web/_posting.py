"""Posting a job from the event loop without blocking it (internal).

``Runtime.post_async`` awaits room in a full mailbox (the ``block`` overflow policy) instead of
blocking a thread, so the loop goes on meanwhile.
"""

from __future__ import annotations

from typing import Any

from actorflow.job import JobContext
from actorflow.web._runtime_api import RuntimeApi

__all__ = ["post_job"]


async def post_job(
    runtime: RuntimeApi,
    flow_id: str,
    routine_id: str,
    slot: str,
    data: Any,
    metadata: dict[str, Any] | None,
) -> JobContext:
    """Post a job and return its context, awaiting the post instead of blocking the loop."""
    _, job = await runtime.post_async(flow_id, routine_id, slot, data, metadata)
    return job
