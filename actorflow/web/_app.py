"""``create_app``: the web app of one runtime, as a Starlette application."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from actorflow.errors import ConfigurationError
from actorflow.web._api import Api
from actorflow.web._auth import BearerToken
from actorflow.web._events import DEFAULT_INTERVAL
from actorflow.web._headers import SecurityHeaders
from actorflow.web._metrics import CONTENT_TYPE, metrics_text, runtime_registry
from actorflow.web._openapi import OpenApi
from actorflow.web._problems import ApiError
from actorflow.web._responses import error_response
from actorflow.web._runtime_api import RuntimeApi
from actorflow.web._validation import DEFAULT_MAX_BODY

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def create_app(
    runtime: RuntimeApi,
    token: str | None = None,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    snapshot_interval: float = DEFAULT_INTERVAL,
) -> Starlette:
    """The web app of ``runtime``: a JSON API, ``/metrics``, server-sent events and the
    monitor page, as an ASGI application to mount in a service or run under uvicorn.

    ``token``: the bearer token that job submission and cancellation require
    (``Authorization: Bearer <token>``); with None those routes answer ``403`` and the app is
    read-only. ``max_body``: the largest request body accepted, in bytes (``413`` beyond).
    ``snapshot_interval``: seconds between two looks at the runtime for ``/api/events`` (at
    least 0.05). ``app.state.actorflow_close()`` ends the open event streams (the server
    of :meth:`actorflow.Runtime.serve_monitor` calls it when it stops).
    """
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ConfigurationError(f"max_body must be an int >= 1 (bytes), got {max_body!r}")
    if not isinstance(snapshot_interval, int | float) or not snapshot_interval >= 0.05:
        raise ConfigurationError(f"snapshot_interval must be >= 0.05 s, got {snapshot_interval!r}")
    api = Api(runtime, BearerToken(token), max_body, float(snapshot_interval))
    registry = runtime_registry(runtime)
    openapi = OpenApi()

    async def page(request: Request) -> Response:
        """The monitor page.
        ---
        summary: Monitor page
        responses:
          200: {description: "text/html", content: {text/html: {}}}
        """
        return FileResponse(STATIC / "monitor.html", media_type="text/html; charset=utf-8")

    async def metrics(request: Request) -> Response:
        """The runtime's figures for Prometheus.
        ---
        summary: Prometheus metrics
        responses:
          200: {description: "the Prometheus text format", content: {text/plain: {}}}
        """
        return Response(metrics_text(registry), media_type=CONTENT_TYPE)

    routes = [
        Route("/", page, name="page"),
        Route("/metrics", metrics, name="metrics"),
        Route("/api/flows", api.flows, name="flows"),
        Route("/api/flows/{flow_id}/jobs", api.submit, methods=["POST"], name="submit"),
        Route("/api/workers", api.workers, name="workers"),
        Route("/api/jobs", api.jobs, name="jobs"),
        Route("/api/jobs/{job_id}", api.job, name="job"),
        Route("/api/jobs/{job_id}/cancel", api.cancel, methods=["POST"], name="cancel"),
        Route("/api/dead-letters", api.dead_letters, name="dead_letters"),
        Route("/api/metrics", api.metrics, name="api_metrics"),
        Route("/api/failures", api.failures, name="failures"),
        Route("/api/events", api.events, name="events"),
        Route("/api/openapi.json", openapi.openapi, name="openapi"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.actorflow_close = api.closing.close
    return app
