"""``/metrics``: the runtime's figures in the Prometheus text format, by ``prometheus_client``.

A :class:`RuntimeCollector` reads ``runtime.metrics()`` on every scrape; it is registered in a
registry of its own (not the process-wide default one), so two apps never clash.

Families (counters end in ``_total``; labels ``worker``, ``flow``, ``routine``):
``actorflow_jobs_active`` (gauge), ``actorflow_jobs_finished_total{status}``,
``actorflow_worker_running`` (gauge), ``actorflow_worker_restarts_total``,
``actorflow_routine_handled_total``, ``actorflow_routine_failed_total``,
``actorflow_routine_retried_total``, ``actorflow_routine_mailbox_depth`` (gauge),
``actorflow_routine_handling_seconds`` (histogram) and ``actorflow_dead_letters_total{reason}``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actorflow.web._runtime_api import RuntimeApi

__all__ = ["CONTENT_TYPE", "RuntimeCollector", "metrics_text", "runtime_registry"]

CONTENT_TYPE = str(CONTENT_TYPE_LATEST)

_FINISHED = ("completed", "failed", "cancelled")
_WORKER = ["worker", "flow"]
_ROUTINE = ["worker", "flow", "routine"]


class RuntimeCollector(Collector):
    """A ``prometheus_client`` collector of one runtime's figures."""

    def __init__(self, runtime: RuntimeApi) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        metrics = self._runtime.metrics()
        active = GaugeMetricFamily(
            "actorflow_jobs_active", "Jobs posted and not finished yet.", labels=_WORKER
        )
        jobs = CounterMetricFamily(
            "actorflow_jobs_finished",
            "Jobs finished, by worker and status.",
            labels=[*_WORKER, "status"],
        )
        up = GaugeMetricFamily(
            "actorflow_worker_running", "1 while the worker runs, else 0.", labels=_WORKER
        )
        restarts = CounterMetricFamily(
            "actorflow_worker_restarts", "Actor restarts of the worker.", labels=_WORKER
        )
        handled = CounterMetricFamily(
            "actorflow_routine_handled", "Messages a routine handled.", labels=_ROUTINE
        )
        failed = CounterMetricFamily(
            "actorflow_routine_failed", "Messages whose logic raised.", labels=_ROUTINE
        )
        retried = CounterMetricFamily(
            "actorflow_routine_retried", "Retries a routine ran.", labels=_ROUTINE
        )
        depth = GaugeMetricFamily(
            "actorflow_routine_mailbox_depth",
            "Messages waiting in a routine's mailbox.",
            labels=_ROUTINE,
        )
        seconds = HistogramMetricFamily(
            "actorflow_routine_handling_seconds",
            "Seconds a routine's logic took.",
            labels=_ROUTINE,
        )
        dead = CounterMetricFamily(
            "actorflow_dead_letters", "Messages never run, by reason.", labels=["reason"]
        )
        for worker_id, worker in metrics["workers"].items():
            labels = [worker_id, str(worker["flow_id"])]
            active.add_metric(labels, worker["jobs"].get("active", 0))
            for status in _FINISHED:
                jobs.add_metric([*labels, status], worker["jobs"].get(status, 0))
            up.add_metric(labels, 1 if worker["status"] == "running" else 0)
            restarts.add_metric(labels, worker["restarts"])
            for routine_id, figures in metrics["routines"].get(worker_id, {}).items():
                routine = [*labels, routine_id]
                handled.add_metric(routine, figures["handled"])
                failed.add_metric(routine, figures["failed"])
                retried.add_metric(routine, figures["retried"])
                depth.add_metric(routine, figures["mailbox_depth"])
                histogram = figures["handling_seconds"]
                running = 0
                buckets: list[tuple[str, float]] = []
                for bound, count in histogram["buckets"].items():
                    running += int(count)
                    buckets.append((bound, running))
                seconds.add_metric(routine, buckets=buckets, sum_value=float(histogram["sum"]))
        for reason, count in sorted(metrics["dead_letters"]["by_reason"].items()):
            dead.add_metric([reason], count)
        yield from (active, jobs, up, restarts, handled, failed, retried, depth, seconds, dead)


def metrics_text(registry: CollectorRegistry) -> bytes:
    """What ``/metrics`` answers: ``registry`` in the Prometheus text format."""
    return generate_latest(registry)


def runtime_registry(runtime: RuntimeApi) -> CollectorRegistry:
    """A registry of its own holding one :class:`RuntimeCollector` for ``runtime``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry
