"""The JSON routes of the web app (internal).

Each endpoint's docstring ends with its OpenAPI description (YAML after ``---``), which
``/api/openapi.json`` collects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from actorflow.errors import (
    FlowValidationError,
    QueueFullError,
    RuntimeClosedError,
    SerializationError,
    UnknownFlowError,
    WorkerFailedError,
)
from actorflow.web._auth import BearerToken
from actorflow.web._events import Closing, SharedSnapshot, event_stream
from actorflow.web._posting import post_job
from actorflow.web._problems import ApiError
from actorflow.web._responses import json_response
from actorflow.web._runtime_api import RuntimeApi
from actorflow.web._validation import read_json, submission
from actorflow.web._views import (
    dead_letters_view,
    failures_view,
    flows_view,
    job_detail,
    job_summary,
    jobs_view,
    workers_view,
)

__all__ = ["Api"]

_EVENT_JOBS = {"limit": "25"}
_EVENT_DEAD = {"limit": "8"}


class Api:
    """The endpoints, bound to one runtime, its token and body limit."""

    def __init__(
        self,
        runtime: RuntimeApi,
        token: BearerToken,
        max_body: int,
        snapshot_interval: float,
    ) -> None:
        self.runtime = runtime
        self.token = token
        self.max_body = max_body
        self.closing = Closing()
        self.snapshot = SharedSnapshot(self._snapshot, snapshot_interval)

    def _snapshot(self) -> dict[str, Any]:
        runtime = self.runtime
        metrics = runtime.metrics()
        return {
            "metrics": metrics,
            "workers": workers_view(metrics),
            "flows": flows_view(runtime),
            "jobs": jobs_view(runtime, _EVENT_JOBS),
            "dead_letters": dead_letters_view(runtime, _EVENT_DEAD),
            "failures": failures_view(runtime, metrics),
            "can_submit": self.token.configured,
        }

    # -- reading ------------------------------------------------------------------------
    async def flows(self, request: Request) -> Response:
        """Each flow with a running worker.
        ---
        summary: Flows with a running worker
        description: Each flow's id, running workers, routines (id, slots, events),
          connections (source, event, target, slot) and Mermaid text.
        responses:
          200: {description: "a JSON array of flows"}
        """
        return json_response(flows_view(self.runtime))

    async def workers(self, request: Request) -> Response:
        """Every worker.
        ---
        summary: Workers
        description: Every worker in start order, with its flow, status, restarts and jobs
          (active, completed, failed, cancelled).
        responses:
          200: {description: "a JSON array of workers"}
        """
        return json_response(workers_view(self.runtime.metrics()))

    async def jobs(self, request: Request) -> Response:
        """Known jobs, newest first, filtered and paged.
        ---
        summary: Jobs
        description: Known jobs (running and retained), newest first. Filter by status, flow
          and worker; page with limit and offset (next_offset is the next page's offset, or
          null on the last page).
        parameters:
          - {name: status, in: query, schema: {type: string,
             enum: [pending, running, completed, failed, cancelled]}}
          - {name: flow, in: query, schema: {type: string}}
          - {name: worker, in: query, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 1000,
             default: 100}}
          - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
        responses:
          200: {description: "jobs, total, limit, offset and next_offset"}
          400: {description: "a bad filter or paging value"}
        """
        return json_response(jobs_view(self.runtime, request.query_params))

    async def job(self, request: Request) -> Response:
        """One job in full.
        ---
        summary: One job
        description: The job's ids, status, error, times, metadata, data, trace, errors and
          timeline (which routine handled it when, and for how long).
        parameters:
          - {name: job_id, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: "the job"}
          404: {description: "no such job (or no longer retained)"}
        """
        job_id = request.path_params["job_id"]
        job = self.runtime.get_job(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (unknown, or no longer retained)")
        return json_response(job_detail(job))

    async def dead_letters(self, request: Request) -> Response:
        """Dead letters.
        ---
        summary: Dead letters
        description: Messages that were never run, counted by reason, and the recent ones.
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 1000,
             default: 100}}
        responses:
          200: {description: "total, by_reason and recent"}
          400: {description: "a bad limit"}
        """
        return json_response(dead_letters_view(self.runtime, request.query_params))

    async def metrics(self, request: Request) -> Response:
        """The runtime's counters.
        ---
        summary: Metrics as JSON
        description: runtime.metrics() (jobs, workers, routines, dead letters, timers).
        responses:
          200: {description: "the counters"}
        """
        return json_response(self.runtime.metrics())

    async def failures(self, request: Request) -> Response:
        """Failures by routine.
        ---
        summary: Failures by routine
        description: Per flow and routine, the runs that raised, how many of them were retried,
          and the jobs the routine's error failed (among retained jobs).
        responses:
          200: {description: "a JSON array of routines"}
        """
        runtime = self.runtime
        return json_response(failures_view(runtime, runtime.metrics()))

    async def events(self, request: Request) -> Response:
        """Live snapshots as server-sent events.
        ---
        summary: Live snapshots (server-sent events)
        description: A text/event-stream of 'snapshot' events (JSON with metrics, workers,
          flows, recent jobs, dead letters and failures), sent when something changed, at
          most four times a second.
        responses:
          200: {description: "text/event-stream", content: {text/event-stream: {}}}
        """
        runtime = self.runtime
        stream = event_stream(self.snapshot, self.closing, lambda: runtime.closed)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- changing -----------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        """Post a job.
        ---
        summary: Post a job (bearer token)
        description: >-
          Delivers data to a routine's slot in a new job of the flow. Needs
          "Authorization: Bearer <token>"; off when the app has no token.
        security: [{bearer: []}]
        parameters:
          - {name: flow_id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [routine, slot]
                additionalProperties: false
                properties:
                  routine: {type: string, minLength: 1}
                  slot: {type: string, minLength: 1}
                  data: {description: "any JSON value"}
                  metadata: {type: object}
        responses:
          202: {description: "posted; the body is {job_id}"}
          400: {description: "the body is not JSON"}
          401: {description: "no bearer token, or another one"}
          403: {description: "the app has no token: submission is off"}
          404: {description: "no such flow"}
          413: {description: "the body is too large"}
          415: {description: "the body is not application/json"}
          422: {description: "a field is missing or of the wrong type, or no such
            routine or slot"}
          503: {description: "the routine's mailbox is full, or the runtime is closed"}
        """
        self.token.require(request)
        flow_id = request.path_params["flow_id"]
        body = submission(await read_json(request, self.max_body))
        try:
            job = await post_job(
                self.runtime, flow_id, body.routine, body.slot, body.data, body.metadata
            )
        except UnknownFlowError as exc:
            raise ApiError(404, str(exc)) from None
        except (FlowValidationError, SerializationError, TypeError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None
        except QueueFullError as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        except (RuntimeClosedError, WorkerFailedError) as exc:
            raise ApiError(503, str(exc)) from None
        location = str(request.url_for("job", job_id=job.job_id).path)
        return json_response(
            {"job_id": job.job_id, "status": job.status.value},
            202,
            {"Location": location},
        )

    async def cancel(self, request: Request) -> Response:
        """Cancel a job.
        ---
        summary: Cancel a job (bearer token)
        description: >-
          No routine runs for the job afterwards; cancelled is false when the job had
          already ended. Needs "Authorization: Bearer <token>".
        security: [{bearer: []}]
        parameters:
          - {name: job_id, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: "{job_id, cancelled, job}"}
          401: {description: "no bearer token, or another one"}
          403: {description: "the app has no token: cancellation is off"}
          404: {description: "no such job"}
        """
        self.token.require(request)
        job_id = request.path_params["job_id"]
        runtime = self.runtime
        if runtime.get_job(job_id) is None:
            raise ApiError(404, f"no job {job_id!r} (unknown, or no longer retained)")
        cancelled = await asyncio.to_thread(runtime.cancel_job, job_id)  # Ray waits for actors
        job = runtime.get_job(job_id)
        return json_response(
            {
                "job_id": job_id,
                "cancelled": cancelled,
                "job": None if job is None else job_summary(job),
            }
        )
