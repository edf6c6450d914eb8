"""A web app for a :class:`~actorflow.Runtime`: a JSON API, a live monitor page and ``/metrics``.

``create_app(runtime, token=None)`` returns an ASGI application (built on Starlette) that a
service mounts under a path of its own, or that ``actorflow serve`` and
``runtime.serve_monitor()`` run under uvicorn. It needs the ``web`` extra::

    pip install 'actorflow[web]'

Routes (see ``/api/openapi.json`` for the full description):

| method and path | answer |
| --- | --- |
| ``GET /`` | the monitor page (static files under ``/static/``) |
| ``GET /api/flows`` | each running flow: routines, connections, Mermaid text |
| ``GET /api/workers`` | every worker: flow, status, restarts, jobs by status |
| ``GET /api/jobs`` | jobs, newest first: filters ``status``, ``flow``, ``worker``; paging
  ``limit`` and ``offset`` |
| ``GET /api/jobs/{job_id}`` | one job: its data, metadata, trace, errors and timeline |
| ``POST /api/flows/{flow_id}/jobs`` | post a job (bearer token) → ``202 {"job_id": ...}`` |
| ``POST /api/jobs/{job_id}/cancel`` | cancel a job (bearer token) |
| ``GET /api/dead-letters`` | dead letters: total, by reason, the recent ones |
| ``GET /api/metrics`` | ``runtime.metrics()`` |
| ``GET /api/failures`` | failures by routine: raised, retried, jobs failed there |
| ``GET /api/events`` | server-sent events: a snapshot whenever something changed |
| ``GET /api/openapi.json`` | the OpenAPI description |
| ``GET /metrics`` | the Prometheus text format (``prometheus_client``) |
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"actorflow.web needs starlette and uvicorn ({exc}); install them with "
        "pip install 'actorflow[web]'"
    ) from exc

from actorflow.web._app import create_app
from actorflow.web._server import WebServer

__all__ = ["WebServer", "create_app"]
