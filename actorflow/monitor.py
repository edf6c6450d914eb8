"""A small HTTP monitoring endpoint for a :class:`~actorflow.Runtime`, on the standard library.

Start it with ``runtime.serve_monitor(port=0, host="127.0.0.1")``: it listens on loopback by
default, serves from one daemon thread named ``actorflow-monitor`` (each request on a short
daemon thread of its own) and is stopped by ``runtime.shutdown()``. Nothing polls the runtime:
every answer is computed when it is asked for.

| path | answer |
| --- | --- |
| ``/api/workers`` | every worker: id, flow, status, restarts, jobs by status (and active) |
| ``/api/jobs?status=&limit=`` | recent jobs, newest first, and how many match in total |
| ``/api/metrics`` | ``runtime.metrics()`` |
| ``/api/dead-letters?limit=`` | dead letters: total, counts by reason, the recent ones |
| ``/api/flows`` | each running flow: its routines, connections and Mermaid text |
| ``/metrics`` | the same figures in the Prometheus text exposition format |
| ``/`` | one HTML page: the flow graphs and live counts, refreshed every second |

Every other path answers ``404`` and every other method ``405``, both with a JSON body
``{"error": ...}``. ``/metrics`` is written by ``prometheus_client`` when it is installed (the
``metrics`` extra), else by this module in the same text format.
"""

from __future__ import annotations

import contextlib
import json
import math
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from actorflow.errors import ConfigurationError
from actorflow.graph import flow_to_mermaid
from actorflow.job import JobContext, JobStatus

if TYPE_CHECKING:
    from actorflow.flow import Flow
    from actorflow.worker import WorkerState


class Runtime(Protocol):
    """What the monitor reads of a runtime (its public methods)."""

    def metrics(self) -> dict[str, Any]: ...
    def list_jobs(self, status: str | JobStatus | None = None) -> list[JobContext]: ...
    def list_workers(self) -> list[WorkerState]: ...
    def flow_of(self, worker_id: str) -> Flow | None: ...
    def dead_letters(self) -> list[dict[str, Any]]: ...
    def dead_letter_counts(self) -> dict[str, int]: ...


__all__ = [
    "DEFAULT_JOB_LIMIT",
    "MonitorServer",
    "dead_letters_payload",
    "flows_payload",
    "jobs_payload",
    "prometheus_text",
    "workers_payload",
]

DEFAULT_JOB_LIMIT = 100
"""How many jobs ``/api/jobs`` (and dead letters ``/api/dead-letters``) list without ``limit``."""

STOP_TIMEOUT = 5.0
"""Seconds ``MonitorServer.stop`` waits for the serving thread and requests in flight."""

REQUEST_TIMEOUT = 10.0
"""Seconds a client may take to send its request before its connection is closed."""

JSON_TYPE = "application/json; charset=utf-8"
PROMETHEUS_TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

FINISHED = ("completed", "failed", "cancelled")


# -- the JSON answers ------------------------------------------------------------------------
def _active_by_worker(metrics: Mapping[str, Any]) -> dict[str, int]:
    """Unfinished jobs per worker id (from ``runtime.metrics()``)."""
    return {
        worker_id: int(worker["jobs"].get("active", 0))
        for worker_id, worker in metrics["workers"].items()
    }


def workers_payload(
    runtime: Runtime, metrics: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``/api/workers``: one object per worker, in start order.

    Each has ``worker_id``, ``flow_id``, ``status``, ``restarts`` and ``jobs`` (``active`` and
    the finished ones by status: exact counts, not limited by job retention).
    """
    figures = runtime.metrics() if metrics is None else metrics
    active = _active_by_worker(figures)
    workers: list[dict[str, Any]] = []
    for worker_id, worker in figures["workers"].items():
        workers.append(
            {
                "worker_id": worker_id,
                "flow_id": worker["flow_id"],
                "status": worker["status"],
                "restarts": worker["restarts"],
                "jobs": {"active": active.get(worker_id, 0), **worker["jobs"]},
            }
        )
    return workers


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _job(job: JobContext) -> dict[str, Any]:
    created, completed = job.created_at, job.completed_at
    duration = None if completed is None else (completed - created).total_seconds() * 1000
    return {
        "job_id": job.job_id,
        "flow_id": job.flow_id,
        "worker_id": job.worker_id,
        "status": job.status.value,
        "error": job.error,
        "created_at": _iso(created),
        "completed_at": _iso(completed),
        "duration_ms": None if duration is None else round(duration, 3),
    }


def _status(value: str | None) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        choices = ", ".join(status.value for status in JobStatus)
        raise ValueError(f"unknown status {value!r} (choose {choices})") from None


def _limit(value: str | int | None) -> int:
    if value is None or value == "":
        return DEFAULT_JOB_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"limit must be an int >= 0, got {value!r}") from None
    if limit < 0:
        raise ValueError(f"limit must be an int >= 0, got {value!r}")
    return limit


def jobs_payload(
    runtime: Runtime, status: str | None = None, limit: str | int | None = None
) -> dict[str, Any]:
    """``/api/jobs``: ``{"jobs": [...], "total": n}``.

    ``jobs`` holds the ``limit`` most recent known jobs (running and retained), newest first,
    each with ``job_id``, ``flow_id``, ``worker_id``, ``status``, ``error``, ``created_at``
    and ``completed_at`` (ISO 8601, UTC) and ``duration_ms``; ``total`` is how many known jobs
    match ``status`` (any status when empty). A bad ``status`` or ``limit`` raises ValueError.
    """
    wanted = _status(status)
    count = _limit(limit)
    jobs = runtime.list_jobs(wanted)
    recent = jobs[len(jobs) - count :] if count else []
    return {"jobs": [_job(job) for job in reversed(recent)], "total": len(jobs)}


def dead_letters_payload(runtime: Runtime, limit: str | int | None = None) -> dict[str, Any]:
    """``/api/dead-letters``: ``{"total": n, "by_reason": {...}, "recent": [...]}``.

    ``total`` and ``by_reason`` are exact; ``recent`` holds up to ``limit`` of the dead letters
    the runtime still keeps (job, worker, routine, slot, reason), newest first.
    """
    count = _limit(limit)
    counts = runtime.dead_letter_counts()
    entries = runtime.dead_letters()
    recent = entries[len(entries) - count :] if count else []
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


def flows_payload(runtime: Runtime) -> list[dict[str, Any]]:
    """``/api/flows``: each flow that has a running worker, in the order its first one started.

    Each has ``flow_id``, ``workers`` (the running workers' ids), ``routines`` (id, slots,
    events), ``connections`` (source, event, target, slot) and ``mermaid`` (the text of
    :func:`actorflow.graph.flow_to_mermaid`), as the flow's first running worker has it.
    """
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


# -- Prometheus ------------------------------------------------------------------------------
@dataclass
class _Family:
    """One metric family: ``name`` without the ``_total`` of counters."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    # counters and gauges: (labels, value); histograms: (labels, (cumulative buckets, sum))
    samples: list[tuple[dict[str, str], Any]] = field(default_factory=list)


def _families(runtime: Runtime) -> list[_Family]:
    metrics = runtime.metrics()
    active = _active_by_worker(metrics)
    jobs_active = _Family("actorflow_jobs_active", "gauge", "Jobs posted and not finished yet.")
    jobs = _Family("actorflow_jobs_finished", "counter", "Jobs finished, by worker and status.")
    up = _Family("actorflow_worker_running", "gauge", "1 while the worker runs, else 0.")
    restarts = _Family("actorflow_worker_restarts", "counter", "Actor restarts of the worker.")
    handled = _Family("actorflow_routine_handled", "counter", "Messages a routine handled.")
    failed = _Family("actorflow_routine_failed", "counter", "Messages whose logic raised.")
    retried = _Family("actorflow_routine_retried", "counter", "Retries a routine ran.")
    depth = _Family(
        "actorflow_routine_mailbox_depth", "gauge", "Messages waiting in a routine's mailbox."
    )
    seconds = _Family(
        "actorflow_routine_handling_seconds", "histogram", "Seconds a routine's logic took."
    )
    dead = _Family("actorflow_dead_letters", "counter", "Messages never run, by reason.")
    for worker_id, worker in metrics["workers"].items():
        labels = {"worker": worker_id, "flow": str(worker["flow_id"])}
        jobs_active.samples.append((labels, active.get(worker_id, 0)))
        for status in FINISHED:
            jobs.samples.append(({**labels, "status": status}, worker["jobs"].get(status, 0)))
        up.samples.append((labels, 1 if worker["status"] == "running" else 0))
        restarts.samples.append((labels, worker["restarts"]))
        for routine_id, figures in metrics["routines"].get(worker_id, {}).items():
            routine = {**labels, "routine": routine_id}
            handled.samples.append((routine, figures["handled"]))
            failed.samples.append((routine, figures["failed"]))
            retried.samples.append((routine, figures["retried"]))
            depth.samples.append((routine, figures["mailbox_depth"]))
            histogram = figures["handling_seconds"]
            running = 0
            buckets: list[tuple[str, int]] = []
            for bound, count in histogram["buckets"].items():
                running += int(count)
                buckets.append((bound, running))
            seconds.samples.append((routine, (buckets, float(histogram["sum"]))))
    for reason, count in sorted(metrics["dead_letters"]["by_reason"].items()):
        dead.samples.append(({"reason": reason}, count))
    return [jobs_active, jobs, up, restarts, handled, failed, retried, depth, seconds, dead]


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (Go's float formatting)."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}\n"
    text = ",".join(f'{key}="{_label_value(labels[key])}"' for key in sorted(labels))
    return f"{name}{{{text}}} {_number(value)}\n"


def _render_text(families: Iterable[_Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4), written here."""
    out: list[str] = []
    for family in families:
        name = family.name + ("_total" if family.kind == "counter" else "")
        doc = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.kind}\n")
        for labels, value in family.samples:
            if family.kind != "histogram":
                out.append(_sample(name, labels, value))
                continue
            buckets, total = value
            for bound, count in buckets:
                out.append(_sample(f"{name}_bucket", {**labels, "le": bound}, count))
            out.append(_sample(f"{name}_count", labels, buckets[-1][1] if buckets else 0))
            out.append(_sample(f"{name}_sum", labels, total))
    return "".join(out)


def _render_with_client(families: list[_Family]) -> tuple[str, str]:
    """The same families written by ``prometheus_client`` (text and content type)."""
    from prometheus_client import (  # noqa: PLC0415
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client.core import (  # noqa: PLC0415
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )

    metrics: list[Metric] = []
    for family in families:
        names = sorted({key for labels, _ in family.samples for key in labels})
        metric: Any
        if family.kind == "counter":
            metric = CounterMetricFamily(family.name, family.help, labels=names)
        elif family.kind == "gauge":
            metric = GaugeMetricFamily(family.name, family.help, labels=names)
        else:
            metric = HistogramMetricFamily(family.name, family.help, labels=names)
        for labels, value in family.samples:
            label_values = [labels[name] for name in names]
            if family.kind == "histogram":
                buckets, total = value
                metric.add_metric(label_values, buckets=buckets, sum_value=total)
            else:
                metric.add_metric(label_values, value)
        metrics.append(metric)

    class _Snapshot:
        def collect(self) -> Iterable[Metric]:
            return metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return generate_latest(registry).decode("utf-8"), str(CONTENT_TYPE_LATEST)


def _have_prometheus_client() -> bool:
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def prometheus_text(runtime: Runtime, *, use_client: bool | None = None) -> tuple[str, str]:
    """``/metrics``: the runtime's figures as Prometheus text, and its content type.

    Families (counters end in ``_total``; labels ``worker``, ``flow``, ``routine``):
    ``actorflow_jobs_active`` (gauge), ``actorflow_jobs_finished_total{status}``,
    ``actorflow_worker_running`` (gauge), ``actorflow_worker_restarts_total``,
    ``actorflow_routine_handled_total``, ``actorflow_routine_failed_total``,
    ``actorflow_routine_retried_total``, ``actorflow_routine_mailbox_depth`` (gauge),
    ``actorflow_routine_handling_seconds`` (histogram) and
    ``actorflow_dead_letters_total{reason}``.

    ``use_client``: True writes it with ``prometheus_client`` (ImportError if missing), False
    with this module's own writer, None (default) with ``prometheus_client`` when installed.
    """
    families = _families(runtime)
    if use_client is None:
        use_client = _have_prometheus_client()
    if use_client:
        return _render_with_client(families)
    return _render_text(families), PROMETHEUS_TEXT_TYPE


# -- the server ------------------------------------------------------------------------------
class _Reply(Exception):
    """Ends a request early with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, or None."""
    values = query.get(name)
    return None if not values else values[-1]


def _api(runtime: Runtime, path: str, query: Mapping[str, list[str]]) -> Any:
    """The JSON answer of an ``/api/...`` path (``_Reply`` for a bad query or path)."""
    try:
        if path == "/api/workers":
            return workers_payload(runtime)
        if path == "/api/jobs":
            return jobs_payload(runtime, _one(query, "status"), _one(query, "limit"))
        if path == "/api/metrics":
            return runtime.metrics()
        if path == "/api/dead-letters":
            return dead_letters_payload(runtime, _one(query, "limit"))
        if path == "/api/flows":
            return flows_payload(runtime)
    except ValueError as exc:
        raise _Reply(400, str(exc)) from None
    raise _Reply(404, f"no such path: {path}")


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose request threads are named and joined on stop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], runtime: Runtime) -> None:
        self.runtime = runtime
        self.requests: dict[threading.Thread, socket.socket] = {}
        self.requests_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address),
            name="actorflow-monitor-request",
            daemon=True,
        )
        with self.requests_lock:
            self.requests[thread] = request
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.requests_lock:
                self.requests.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that broke (the client went away, ...) is logged, not printed."""
        logger.opt(exception=True).debug("monitor: request from {} failed", client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Answers GET for the page, ``/metrics`` and the API; JSON errors for everything else."""

    server: _Server
    server_version = "actorflow-monitor"
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        runtime = self.server.runtime
        try:
            if path == "/":
                status, content_type, body = 200, HTML_TYPE, PAGE.encode("utf-8")
            elif path == "/metrics":
                text, content_type = prometheus_text(runtime)
                status, body = 200, text.encode("utf-8")
            else:
                status, content_type, body = 200, JSON_TYPE, _json_body(_api(runtime, path, query))
        except _Reply as reply:
            status, content_type, body = (
                reply.status,
                JSON_TYPE,
                _json_body({"error": reply.message}),
            )
        except Exception as exc:
            logger.opt(exception=exc).warning("monitor: GET {} failed", self.path)
            error = {"error": f"{type(exc).__name__}: {exc}"}
            status, content_type, body = 500, JSON_TYPE, _json_body(error)
        self._send(status, content_type, body)

    def _not_allowed(self) -> None:
        error = {"error": f"method {self.command} not allowed (only GET)"}
        self._send(405, JSON_TYPE, _json_body(error), {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _send(
        self, status: int, content_type: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("monitor: {} {}", self.address_string(), format % args)


class MonitorServer:
    """The monitoring endpoint of one runtime (see the module's documentation).

    Made by :meth:`actorflow.Runtime.serve_monitor`, which binds ``host:port`` (``port=0``
    picks a free one) before it returns, so the endpoint answers as soon as you have it.

    Attributes:
        url: where it answers, e.g. ``http://127.0.0.1:8080`` (no trailing slash; a wildcard
            host shows as loopback).
        port: the port it listens on.
        host: the address it was asked to listen on.
    """

    def __init__(self, runtime: Runtime, port: int = 0, host: str = "127.0.0.1") -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(host, str):
            raise ConfigurationError(f"host must be a str, got {host!r}")
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), runtime)
        except OSError as exc:
            raise ConfigurationError(f"the monitor cannot listen on {host}:{port}: {exc}") from exc
        # accept only when the selector says a connection waits, and never block in accept
        # (a client that gives up in between must not hold the serving thread)
        self._server.socket.setblocking(False)
        self.host = host
        self.port: int = int(self._server.server_address[1])
        shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = (
            f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        )
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="actorflow-monitor", daemon=True)
        self._thread.start()
        logger.info("monitor serving at {}", self.url)

    @property
    def running(self) -> bool:
        """True until :meth:`stop`."""
        return not self._stopped

    def _serve(self) -> None:
        """Accept connections until woken by :meth:`stop` (blocks; no timeout, no polling)."""
        server = self._server
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ, "accept")
            selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in selector.select():
                    if key.data == "wake":
                        return
                    self._accept()

    def _accept(self) -> None:
        server = self._server
        try:
            request, client_address = server.get_request()
        except OSError:  # nothing to accept after all (BlockingIOError), or out of descriptors
            return
        request.setblocking(True)
        if not server.verify_request(request, client_address):
            server.shutdown_request(request)
            return
        try:
            server.process_request(request, client_address)
        except Exception:
            server.handle_error(request, client_address)
            server.shutdown_request(request)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving: close the listening socket and wait (up to ``timeout`` seconds) for
        the serving thread and the requests in flight. Calling it again does nothing."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._wake_writer.send(b"x")
        current = threading.current_thread()
        if current is not self._thread:
            self._thread.join(timeout)
        self._server.server_close()
        with self._server.requests_lock:
            requests = [item for item in self._server.requests.items() if item[0] is not current]
        for _, connection in requests:
            # a client still to send its request gets none read (its handler ends at once);
            # answers being written go out in full
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        for thread, _ in requests:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._wake_reader.close()
        self._wake_writer.close()
        logger.info("monitor at {} stopped", self.url)

    def __enter__(self) -> MonitorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MonitorServer({self.url}, {'running' if self.running else 'stopped'})"


# -- the page --------------------------------------------------------------------------------
PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>actorflow monitor</title>
<style>
:root {
  --bg: #f4f6f9; --card: #ffffff; --ink: #1d2433; --muted: #6b7385; --line: #dde2ea;
  --accent: #2b6cb0; --ok: #2f855a; --bad: #c53030; --warn: #b7791f; --idle: #718096;
  --run: #3182ce;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
header { background: #1d2433; color: #fff; padding: 12px 24px; display: flex;
  align-items: center; gap: 16px; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header h1 span { color: #90cdf4; }
header .status { margin-left: auto; display: flex; align-items: center; gap: 8px;
  color: #cbd5e0; font-size: 13px; }
.dot { width: 9px; height: 9px; border-radius: 50%; background: var(--idle);
  display: inline-block; }
.dot.live { background: #48bb78; box-shadow: 0 0 0 3px rgba(72, 187, 120, .25); }
.dot.down { background: #f56565; }
main { padding: 20px 24px 32px; max-width: 1400px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px;
  margin-bottom: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .6px; }
.card .value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card.ok .value { color: var(--ok); } .card.bad .value { color: var(--bad); }
.card.run .value { color: var(--run); } .card.warn .value { color: var(--warn); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; margin-bottom: 16px; overflow-x: auto; }
section h2 { font-size: 14px; margin: 0 0 10px; color: var(--muted); font-weight: 600;
  text-transform: uppercase; letter-spacing: .6px; }
section h3 { font-size: 15px; margin: 4px 0 6px; }
.grid2 { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; }
.grid2 section { margin-bottom: 0; }
.row { margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 7px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; }
td.err { white-space: normal; color: var(--bad); max-width: 360px; }
tr:last-child td { border-bottom: 0; }
table + table { margin-top: 14px; }
.empty { color: var(--muted); font-style: italic; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  color: #fff; background: var(--idle); }
.badge.completed, .badge.up { background: var(--ok); }
.badge.failed { background: var(--bad); } .badge.running { background: var(--run); }
.badge.pending { background: var(--warn); } .badge.cancelled { background: var(--idle); }
svg.flow { display: block; max-width: 100%; height: auto; }
svg .node rect { fill: #f7fafc; stroke: var(--accent); stroke-width: 1.5; }
svg .node.failing rect { stroke: var(--bad); }
svg .node.busy rect { fill: #fffaf0; }
svg .node .title { font-weight: 600; font-size: 14px; fill: var(--ink); }
svg .node .meta { font-size: 11.5px; fill: var(--muted); }
svg .node .live { font-size: 12px; fill: var(--ink); font-variant-numeric: tabular-nums; }
svg .node .live .bad { fill: var(--bad); font-weight: 600; }
svg .edge { fill: none; stroke: #8a94a6; stroke-width: 1.4; }
svg .edge-label rect { fill: #fff; }
svg .edge-label text { font-size: 11px; fill: #4a5568; }
.flow-block + .flow-block { margin-top: 18px; padding-top: 14px;
  border-top: 1px dashed var(--line); }
details { margin-top: 8px; } summary { cursor: pointer; color: var(--muted); font-size: 12px; }
pre { background: #f7fafc; border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  font-size: 12px; overflow-x: auto; margin: 6px 0 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
@media (max-width: 900px) { .cards { grid-template-columns: repeat(3, 1fr); }
  .grid2 { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>actorflow <span>monitor</span></h1>
  <div class="status">
    <span id="dot" class="dot"></span><span id="updated">connecting&hellip;</span>
  </div>
</header>
<main>
  <noscript><section>This page fills itself in with JavaScript; the same figures are at
    <a href="api/metrics">api/metrics</a> and <a href="metrics">metrics</a>.</section></noscript>
  <div class="cards">
    <div class="card run"><div class="label">active jobs</div>
      <div class="value" id="stat-active">&ndash;</div></div>
    <div class="card ok"><div class="label">completed</div>
      <div class="value" id="stat-completed">&ndash;</div></div>
    <div class="card bad"><div class="label">failed</div>
      <div class="value" id="stat-failed">&ndash;</div></div>
    <div class="card"><div class="label">cancelled</div>
      <div class="value" id="stat-cancelled">&ndash;</div></div>
    <div class="card warn"><div class="label">dead letters</div>
      <div class="value" id="stat-dead">&ndash;</div></div>
    <div class="card"><div class="label">workers</div>
      <div class="value" id="stat-workers">&ndash;</div></div>
  </div>
  <section><h2>Flows</h2><div id="flows"><p class="empty">no flow is running</p></div></section>
  <section><h2>Workers</h2><div id="workers"></div></section>
  <div class="grid2 row">
    <section><h2>Routines</h2><div id="routines"></div></section>
    <section><h2>Dead letters</h2><div id="dead"></div></section>
  </div>
  <section><h2>Recent jobs</h2><div id="jobs"></div></section>
</main>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 1000;
let shownFlows = "";

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of [].concat(children === undefined ? [] : children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }

function table(columns, rows, empty) {
  if (!rows.length) return el("p", {class: "empty"}, empty);
  const head = el("tr", {}, columns.map(c => el("th", c.num ? {class: "num"} : {}, c.title)));
  const body = rows.map(row => el("tr", {}, columns.map(c => {
    const value = c.get(row);
    const cls = c.num ? "num" : (c.cls ? c.cls(row) : "");
    return el("td", cls ? {class: cls} : {}, value instanceof Node ? value : [value]);
  })));
  return el("table", {}, [el("thead", {}, head), el("tbody", {}, body)]);
}

function badge(text, kind) { return el("span", {class: "badge " + (kind || text)}, text); }
function time(iso) { return iso ? new Date(iso).toLocaleTimeString() : "\u2013"; }
function ms(value) {
  if (value === null || value === undefined) return "\u2013";
  return value.toFixed(value >= 100 ? 0 : value >= 1 ? 1 : 3);
}

// -- the flow graph: layers by longest path, boxes left to right, curved edges -------------
function layout(flow) {
  const ids = flow.routines.map(r => r.routine_id);
  const layer = Object.fromEntries(ids.map(id => [id, 0]));
  for (let round = 0; round < ids.length; round++) {
    let changed = false;
    for (const c of flow.connections) {
      const want = layer[c.source] + 1;
      if (c.source !== c.target && want > layer[c.target] && want < ids.length) {
        layer[c.target] = want; changed = true;
      }
    }
    if (!changed) break;
  }
  // edges that skip a column run above the boxes; edges going back run below them
  const over = flow.connections.filter(c => layer[c.target] - layer[c.source] > 1);
  const under = flow.connections.filter(
    c => c.source !== c.target && layer[c.target] <= layer[c.source]);
  const loops = flow.connections.some(c => c.source === c.target);
  const lineH = 17, gapY = 28, pad = 20, lane = 18;
  const top = pad + (over.length ? 18 + lane * over.length : 0);
  const labels = flow.connections.map(c => clip(c.event + " \u2192 " + c.slot, 34).length);
  const gapX = Math.max(100, 6.4 * Math.max(0, ...labels) + 40);
  const columns = [];
  for (const r of flow.routines) (columns[layer[r.routine_id]] ||= []).push(r);
  const boxes = {};
  const heights = [];
  let x = pad;
  for (const column of columns.filter(Boolean)) {
    let colW = 0, colH = 0;
    for (const r of column) {
      const meta = ["in: " + (r.slots.join(", ") || "\u2013"),
                    "out: " + (r.events.join(", ") || "\u2013")];
      const w = Math.min(320, Math.max(236, 24 + 8.4 * clip(r.routine_id, 34).length,
                                       24 + 6.4 * Math.max(...meta.map(l => clip(l, 40).length))));
      boxes[r.routine_id] = {r, w, h: 4 * lineH + 16, layer: layer[r.routine_id]};
      colW = Math.max(colW, w); colH += 4 * lineH + 16 + gapY;
    }
    heights.push(colH - gapY);
    for (const r of column) boxes[r.routine_id].x = x;
    x += colW + gapX;
  }
  const tallest = Math.max(0, ...heights);
  columns.filter(Boolean).forEach((column, i) => {
    let y = top + (tallest - heights[i]) / 2;
    for (const r of column) { boxes[r.routine_id].y = y; y += boxes[r.routine_id].h + gapY; }
  });
  const bottom = top + tallest;
  const below = (under.length ? 18 + lane * under.length : 0) + (loops ? 44 : 0);
  return {boxes, over, under, top, bottom, lane, pad,
          width: Math.max(x - gapX + pad, 300), height: bottom + below + pad};
}

function lanePath(x1, y1, x2, y2, yl) {
  // down (or up) from (x1, y1) to the lane at yl, along it, then to (x2, y2); rounded corners
  const s = yl < y1 ? -1 : 1, r = 8, t = x2 > x1 ? 1 : -1;
  return `M${x1},${y1} L${x1},${yl - s * r} Q${x1},${yl} ${x1 + t * r},${yl} ` +
         `L${x2 - t * r},${yl} Q${x2},${yl} ${x2},${yl - s * r} L${x2},${y2}`;
}

function drawFlow(flow) {
  const {boxes, over, under, top, bottom, lane, pad, width, height} = layout(flow);
  const root = svg("svg", {class: "flow", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "aria-label": "flow " + flow.flow_id});
  const arrow = "arrow-" + flow.flow_id.replace(/[^A-Za-z0-9_-]/g, "_");
  const defs = svg("defs");
  const marker = svg("marker", {id: arrow, viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto"});
  marker.append(svg("path", {d: "M0,0 L10,5 L0,10 z", fill: "#8a94a6"}));
  defs.append(marker); root.append(defs);
  const seen = {};
  for (const c of flow.connections) {
    const a = boxes[c.source], b = boxes[c.target];
    const key = c.source + "\u0000" + c.target;
    const nth = seen[key] = (seen[key] || 0) + 1;
    let d, lx, ly;
    if (c.source === c.target) {
      const x1 = a.x + a.w - 60, x2 = a.x + a.w - 20, y0 = a.y + a.h;
      const dip = y0 + 36 + (nth - 1) * 16;
      d = `M${x1},${y0} C${x1 - 10},${dip} ${x2 + 10},${dip} ${x2},${y0}`;
      lx = (x1 + x2) / 2; ly = dip + 2;
    } else if (over.includes(c)) {
      const yl = pad + 9 + lane * over.indexOf(c);
      const x1 = a.x + a.w * 0.7, x2 = b.x + b.w * 0.3;
      d = lanePath(x1, a.y, x2, b.y, yl);
      lx = (x1 + x2) / 2; ly = yl;
    } else if (under.includes(c)) {
      const yl = bottom + 18 + lane * under.indexOf(c);
      const x1 = a.x + a.w * 0.3, x2 = b.x + b.w * 0.7;
      d = lanePath(x1, a.y + a.h, x2, b.y + b.h, yl);
      lx = (x1 + x2) / 2; ly = yl;
    } else {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      const dx = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 + (nth - 1) * 16;
    }
    root.append(svg("path", {class: "edge", d, "marker-end": `url(#${arrow})`}));
    const label = svg("g", {class: "edge-label"});
    const text = clip(c.event + " \u2192 " + c.slot, 34);
    const tw = 6.4 * text.length + 8;
    label.append(svg("rect", {x: lx - tw / 2, y: ly - 8, width: tw, height: 16, rx: 3}));
    label.append(svg("text", {x: lx, y: ly + 4, "text-anchor": "middle"}, text));
    root.append(label);
  }
  for (const {r, x, y, w, h} of Object.values(boxes)) {
    const g = svg("g", {class: "node", "data-routine": r.routine_id});
    g.append(svg("rect", {x, y, width: w, height: h, rx: 7}));
    g.append(svg("text", {class: "title", x: x + 10, y: y + 21}, clip(r.routine_id, 34)));
    g.append(svg("text", {class: "meta", x: x + 10, y: y + 39},
                 clip("in: " + (r.slots.join(", ") || "\u2013"), 40)));
    g.append(svg("text", {class: "meta", x: x + 10, y: y + 56},
                 clip("out: " + (r.events.join(", ") || "\u2013"), 40)));
    const live = svg("text", {class: "live", x: x + 10, y: y + 75});
    live.append(svg("tspan", {"data-count": "handled"}, "handled \u2013"));
    live.append(svg("tspan", {dx: 10, "data-count": "failed"}, "failed \u2013"));
    live.append(svg("tspan", {dx: 10, "data-count": "queued"}, "queued \u2013"));
    g.append(live);
    root.append(g);
  }
  return root;
}

function showFlows(flows) {
  const key = JSON.stringify(flows.map(f => [f.flow_id, f.mermaid]));
  if (key === shownFlows) return;
  shownFlows = key;
  const box = document.getElementById("flows");
  box.replaceChildren();
  if (!flows.length) { box.append(el("p", {class: "empty"}, "no flow is running")); return; }
  for (const flow of flows) {
    const part = el("div", {class: "flow-block", "data-flow": flow.flow_id});
    part.append(el("h3", {}, flow.flow_id));
    part.append(drawFlow(flow));
    part.append(el("details", {}, [el("summary", {}, "Mermaid source"),
                                  el("pre", {}, el("code", {}, flow.mermaid))]));
    box.append(part);
  }
}

function showRoutineCounts(metrics, flows) {
  for (const flow of flows) {
    const totals = {};
    for (const [workerId, routines] of Object.entries(metrics.routines)) {
      if ((metrics.workers[workerId] || {}).flow_id !== flow.flow_id) continue;
      for (const [id, f] of Object.entries(routines)) {
        const t = totals[id] ||= {handled: 0, failed: 0, queued: 0};
        t.handled += f.handled; t.failed += f.failed; t.queued += f.mailbox_depth;
      }
    }
    const part = document.querySelector(`.flow-block[data-flow="${CSS.escape(flow.flow_id)}"]`);
    if (!part) continue;
    for (const node of part.querySelectorAll(".node")) {
      const t = totals[node.dataset.routine] || {handled: 0, failed: 0, queued: 0};
      for (const span of node.querySelectorAll("tspan")) {
        const name = span.dataset.count;
        span.textContent = name + " " + t[name];
        span.setAttribute("class", name === "failed" && t.failed ? "bad" : "");
      }
      node.classList.toggle("failing", t.failed > 0);
      node.classList.toggle("busy", t.queued > 0);
    }
  }
}

function showTables(metrics, workers, jobs, dead) {
  document.getElementById("workers").replaceChildren(table([
    {title: "worker", get: w => w.worker_id}, {title: "flow", get: w => w.flow_id},
    {title: "status", get: w => badge(w.status, w.status === "running" ? "up" : w.status)},
    {title: "restarts", num: true, get: w => w.restarts},
    {title: "active", num: true, get: w => w.jobs.active},
    {title: "completed", num: true, get: w => w.jobs.completed},
    {title: "failed", num: true, get: w => w.jobs.failed},
    {title: "cancelled", num: true, get: w => w.jobs.cancelled},
  ], workers, "no worker yet"));
  const rows = [];
  for (const [workerId, routines] of Object.entries(metrics.routines)) {
    for (const [id, f] of Object.entries(routines)) rows.push({workerId, id, ...f});
  }
  document.getElementById("routines").replaceChildren(table([
    {title: "worker", get: r => r.workerId}, {title: "routine", get: r => r.id},
    {title: "handled", num: true, get: r => r.handled},
    {title: "failed", num: true, get: r => r.failed},
    {title: "retried", num: true, get: r => r.retried},
    {title: "queued", num: true, get: r => r.mailbox_depth},
    {title: "mean ms", num: true, get: r => r.handling_seconds.count ?
      ms(1000 * r.handling_seconds.sum / r.handling_seconds.count) : "\u2013"},
  ], rows, "no routine yet"));
  document.getElementById("jobs").replaceChildren(table([
    {title: "job", get: j => j.job_id}, {title: "flow", get: j => j.flow_id},
    {title: "status", get: j => badge(j.status)},
    {title: "created", get: j => time(j.created_at)},
    {title: "ms", num: true, get: j => ms(j.duration_ms)},
    {title: "error", cls: () => "err", get: j => j.error || ""},
  ], jobs.jobs, "no job yet"));
  const reasons = Object.entries(dead.by_reason).map(([reason, count]) => ({reason, count}));
  const deadBox = document.getElementById("dead");
  deadBox.replaceChildren(table([
    {title: "reason", get: d => d.reason}, {title: "count", num: true, get: d => d.count},
  ], reasons, "no dead letter"));
  if (dead.recent.length) deadBox.append(table([
    {title: "job", get: d => d.job_id || "\u2013"},
    {title: "routine", get: d => d.routine_id || "\u2013"},
    {title: "slot", get: d => d.slot || "\u2013"}, {title: "reason", get: d => d.reason},
  ], dead.recent, ""));
}

async function getJSON(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

async function refresh() {
  try {
    const [metrics, workers, jobs, dead, flows] = await Promise.all([
      getJSON("api/metrics"), getJSON("api/workers"), getJSON("api/jobs?limit=12"),
      getJSON("api/dead-letters?limit=8"), getJSON("api/flows")]);
    const j = metrics.jobs;
    for (const [id, value] of [["active", j.active], ["completed", j.completed],
        ["failed", j.failed], ["cancelled", j.cancelled],
        ["dead", metrics.dead_letters.total], ["workers", workers.length]]) {
      document.getElementById("stat-" + id).textContent = value;
    }
    showFlows(flows);
    showRoutineCounts(metrics, flows);
    showTables(metrics, workers, jobs, dead);
    document.getElementById("dot").className = "dot live";
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("dot").className = "dot down";
    document.getElementById("updated").textContent = "not reachable (" + error.message + ")";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
