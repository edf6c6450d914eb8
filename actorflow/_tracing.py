"""OpenTelemetry trace context in envelopes (internal; on with ``Runtime(tracing=True)``).

The caller's trace context is injected into the first envelope's headers at ``post``; each
routine execution runs in a span (``routine <id>``, with job, worker, flow and routine ids as
attributes) whose parent is the context that came with the envelope; the envelopes it emits
carry that span's context on. Only ``opentelemetry-api`` is needed; spans go wherever the
application's tracer provider sends them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actorflow.errors import ConfigurationError

__all__ = ["Tracing"]


class Tracing:
    def __init__(self) -> None:
        try:
            from opentelemetry import propagate, trace  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                "tracing=True needs OpenTelemetry: pip install opentelemetry-api "
                "(and an SDK or exporter to send the spans somewhere)"
            ) from exc
        self._propagate = propagate
        self._trace = trace
        self.tracer = trace.get_tracer("actorflow")

    def inject(self) -> dict[str, str]:
        """Headers carrying the current trace context."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return carrier

    def run(
        self,
        headers: dict[str, str] | None,
        name: str,
        attributes: dict[str, str],
        call: Callable[[], Any],
    ) -> tuple[Any, dict[str, str]]:
        """Run ``call`` in a span whose parent came in ``headers``; returns (result, headers
        for the envelopes it sends)."""
        context = self._propagate.extract(headers) if headers else None
        with self.tracer.start_as_current_span(
            name, context=context, attributes=attributes
        ) as span:
            try:
                result = call()
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(exc)))
                raise
            return result, self.inject()

    def begin(
        self, headers: dict[str, str] | None, name: str, attributes: dict[str, str]
    ) -> tuple[Any, dict[str, str]]:
        """Start a span whose parent came in ``headers`` and make it current (in the caller's
        context: a task's, for async logic); returns (span, headers for the envelopes sent
        under it). :meth:`end` ends it."""
        from opentelemetry import context as otel_context  # noqa: PLC0415

        parent = self._propagate.extract(headers) if headers else None
        span = self.tracer.start_span(name, context=parent, attributes=attributes)
        otel_context.attach(self._trace.set_span_in_context(span, parent))
        return span, self.inject()

    def end(self, span: Any, error: BaseException | None) -> None:
        """End a span :meth:`begin` started, recording ``error`` if the call failed."""
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end()
