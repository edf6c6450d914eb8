"""What each JSON route answers, read from the runtime's public methods (internal).

Pure functions of a runtime: no web framework here. A bad query value raises
:class:`~actorflow.web._problems.ApiError` (400).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actorflow.graph import flow_to_mermaid
from actorflow.job import JobContext, JobStatus
from actorflow.web._problems import ApiError
from actorflow.web._runtime_api import RuntimeApi

if TYPE_CHECKING:
    from actorflow.flow import Flow

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "dead_letters_view",
    "failures_view",
    "flows_view",
    "job_detail",
    "job_summary",
    "jobs_view",
    "workers_view",
]

DEFAULT_LIMIT = 100
"""How many jobs (or dead letters) a list answers without ``limit``."""

MAX_LIMIT = 1000
"""The largest ``limit`` a list accepts."""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _failed_in(job: JobContext) -> str | None:
    """The routine whose error failed the job (its last ``failed`` trace entry), if any."""
    if job.status is not JobStatus.FAILED:
        return None
    for entry in reversed(job.trace_log):
        if entry.get("action") == "failed":
            routine = entry.get("routine_id")
            return None if routine is None else str(routine)
    return None


def job_summary(job: JobContext) -> dict[str, Any]:
    """One job in a list: ids, status, error, times (ISO 8601, UTC) and duration."""
    created, completed = job.created_at, job.completed_at
    duration = None if completed is None else (completed - created).total_seconds() * 1000
    return {
        "job_id": job.job_id,
        "flow_id": job.flow_id,
        "worker_id": job.worker_id,
        "status": job.status.value,
        "error": job.error,
        "failed_in": _failed_in(job),
        "created_at": _iso(created),
        "completed_at": _iso(completed),
        "duration_ms": None if duration is None else round(duration, 3),
    }


def job_detail(job: JobContext) -> dict[str, Any]:
    """One job in full: its summary, ``metadata``, ``data``, ``trace``, ``errors``,
    ``timeline`` (which routine handled it when, for how long) and ``timeline_dropped``."""
    return {
        **job_summary(job),
        "metadata": dict(job.metadata),
        "data": dict(job.data),
        "trace": job.trace_log,
        "errors": job.errors,
        "timeline": job.timeline,
        "timeline_dropped": job.timeline_dropped,
    }


def _status(value: str | None) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        choices = ", ".join(status.value for status in JobStatus)
        raise ApiError(400, f"unknown status {value!r} (choose {choices})") from None


def _count(name: str, value: str | None, default: int, most: int | None = None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0 or (most is not None and number > most):
        top = "" if most is None else f" and <= {most}"
        raise ApiError(400, f"{name} must be an int >= 0{top}, got {value!r}")
    return number


def jobs_view(runtime: RuntimeApi, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /api/jobs``: known jobs (running and retained), newest first.

    Filters: ``status``, ``flow``, ``worker``. Paging: ``limit`` (default 100, at most 1000)
    and ``offset`` (how many of the newest matching jobs to pass over). Answers ``jobs``,
    ``total`` (how many match), ``limit``, ``offset`` and ``next_offset`` (the offset of the
    next page, or null on the last one). Jobs posted meanwhile shift later pages.
    """
    wanted = _status(query.get("status"))
    flow, worker = query.get("flow") or None, query.get("worker") or None
    limit = _count("limit", query.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    offset = _count("offset", query.get("offset"), 0)
    jobs = [
        job
        for job in reversed(runtime.list_jobs(wanted))
        if (flow is None or job.flow_id == flow) and (worker is None or job.worker_id == worker)
    ]
    page = jobs[offset : offset + limit]
    following = offset + limit
    return {
        "jobs": [job_summary(job) for job in page],
        "total": len(jobs),
        "limit": limit,
        "offset": offset,
        "next_offset": following if following < len(jobs) else None,
    }


def workers_view(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``GET /api/workers``: one object per worker, in start order (``worker_id``,
    ``flow_id``, ``status``, ``restarts``, ``jobs``: active and finished by status)."""
    return [
        {
            "worker_id": worker_id,
            "flow_id": worker["flow_id"],
            "status": worker["status"],
            "restarts": worker["restarts"],
            "jobs": dict(worker["jobs"]),
        }
        for worker_id, worker in metrics["workers"].items()
    ]


def dead_letters_view(runtime: RuntimeApi, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /api/dead-letters``: ``total`` and ``by_reason`` (exact) and ``recent``, up to
    ``limit`` of the dead letters the runtime keeps, newest first."""
    limit = _count("limit", query.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    counts = runtime.dead_letter_counts()
    entries = runtime.dead_letters()
    recent = entries[len(entries) - limit :] if limit else []
    return {
        "total": sum(counts.values()),
        "by_reason": dict(sorted(counts.items())),
        "recent": list(reversed(recent)),
    }


def _flow_description(flow: Flow, worker_ids: list[str]) -> dict[str, Any]:
    routines = [
        {
            "routine_id": routine_id,
            "slots": list(flow.routines[routine_id].slots),
            "events": list(flow.routines[routine_id].events),
        }
        for routine_id in sorted(flow.routines)
    ]
    connections = [
        {"source": c.source, "event": c.event, "target": c.target, "slot": c.slot}
        for c in sorted(flow.connections, key=lambda c: (c.source, c.event, c.target, c.slot))
    ]
    return {
        "flow_id": flow.flow_id,
        "workers": worker_ids,
        "routines": routines,
        "connections": connections,
        "mermaid": flow_to_mermaid(flow),
    }


def flows_view(runtime: RuntimeApi) -> list[dict[str, Any]]:
    """``GET /api/flows``: each flow with a running worker, in the order its first one
    started: ``flow_id``, ``workers``, ``routines`` (id, slots, events), ``connections``
    (source, event, target, slot) and ``mermaid``."""
    flows: dict[str, tuple[Flow, list[str]]] = {}
    for worker in runtime.list_workers():
        if worker.status != "running":
            continue
        if worker.flow_id not in flows:
            flow = runtime.flow_of(worker.worker_id)
            if flow is None:
                continue
            flows[worker.flow_id] = (flow, [])
        flows[worker.flow_id][1].append(worker.worker_id)
    return [_flow_description(flow, worker_ids) for flow, worker_ids in flows.values()]


def failures_view(runtime: RuntimeApi, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``GET /api/failures``: per flow and routine, ``raised`` (runs whose logic raised, each
    try counted), ``retried`` (of those, tries followed by a retry) and ``jobs_failed`` (jobs
    the routine's error failed, among the jobs the runtime still keeps). Only routines with
    something to show."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for worker_id, routines in metrics["routines"].items():
        flow_id = str(metrics["workers"].get(worker_id, {}).get("flow_id"))
        for routine_id, figures in routines.items():
            row = totals.setdefault(
                (flow_id, routine_id),
                {"flow_id": flow_id, "routine_id": routine_id, "raised": 0, "retried": 0},
            )
            row["raised"] += int(figures["failed"])
            row["retried"] += int(figures["retried"])
    failed: dict[tuple[str, str], int] = {}
    for job in runtime.list_jobs(JobStatus.FAILED):
        routine = _failed_in(job)
        if routine is not None:
            key = (job.flow_id, routine)
            failed[key] = failed.get(key, 0) + 1
    rows = []
    for key, row in totals.items():
        row["jobs_failed"] = failed.get(key, 0)
        if row["raised"] or row["jobs_failed"]:
            rows.append(row)
    return sorted(rows, key=lambda row: (row["flow_id"], row["routine_id"]))
