"""OpenTelemetry: the trace context travels in the envelope; one span per routine execution."""

from __future__ import annotations

from typing import Any

import pytest

from actorflow import ConfigurationError, Flow, FlowRegistry, JobStatus, Routine, Runtime
from actorflow.faults import FaultPlan

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk not installed")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fast"])
def test_spans_per_routine_share_the_callers_trace(strict: bool) -> None:
    """Also on the fast path (not strict), where one message in and one out is a shortcut:
    a traced routine must not take it."""
    EXPORTER.clear()
    first = Routine()
    first.add_slot("in")
    first.add_event("out")
    first.set_logic(lambda sd, m, ws: first.emit("out", v=1))
    second = Routine()
    second.add_slot("in")

    def fail_sometimes(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        ws.increment("second", "runs")  # the traced logic gets its routine's state
        if sd["in"][0]["v"] == 2:
            raise ValueError("no")

    second.set_logic(fail_sometimes)
    flow = Flow("traced")
    flow.add_routine(first, "first")
    flow.add_routine(second, "second")
    flow.connect("first", "out", "second", "in")
    FlowRegistry.get_instance().register(flow)
    tracer = trace.get_tracer("test")
    with (
        Runtime(tracing=True, strict=strict) as runtime,
        tracer.start_as_current_span("http request") as request,
    ):
        _, job = runtime.post("traced", "first", "in", {})
        assert job.wait(10)
    assert job.status == JobStatus.COMPLETED, job.error
    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    assert set(spans) == {"http request", "routine first", "routine second"}
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in spans.values()} == {trace_id}
    assert spans["routine first"].parent.span_id == request.get_span_context().span_id
    assert spans["routine second"].parent.span_id == spans["routine first"].context.span_id
    assert spans["routine second"].attributes["actorflow.job_id"] == job.job_id
    assert spans["routine second"].attributes["actorflow.routine_id"] == "second"


def test_tracing_is_off_by_default_and_needs_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(ConfigurationError, match="opentelemetry-api"):
        Runtime(tracing=True)


def test_async_logic_runs_in_a_span_from_its_start_to_its_end() -> None:
    import asyncio

    EXPORTER.clear()
    first = Routine()
    first.add_slot("in")
    first.add_event("out")

    async def call(sd: dict[str, list[Any]], m: Any, ws: Any) -> None:
        await asyncio.sleep(0.01)
        inner = trace.get_current_span()  # the routine's span, across the await
        assert inner.is_recording()
        first.emit("out", v=1)

    first.set_logic(call)
    second = Routine()
    second.add_slot("in")
    second.set_logic(lambda sd, m, ws: None)
    flow = Flow("traced-async")
    flow.add_routine(first, "first")
    flow.add_routine(second, "second")
    flow.connect("first", "out", "second", "in")
    FlowRegistry.get_instance().register(flow)
    tracer = trace.get_tracer("test")
    with Runtime(tracing=True) as runtime, tracer.start_as_current_span("http request") as request:
        _, job = runtime.post("traced-async", "first", "in", {})
        assert job.wait(10)
    assert job.status.value == "completed"
    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    assert set(spans) == {"http request", "routine first", "routine second"}
    assert spans["routine first"].parent.span_id == request.get_span_context().span_id
    assert spans["routine second"].parent.span_id == spans["routine first"].context.span_id
    first_span = spans["routine first"]
    assert first_span.end_time - first_span.start_time >= 10_000_000  # it spans the await


def test_a_message_duplicated_by_a_fault_plan_keeps_its_trace_context() -> None:
    EXPORTER.clear()
    first = Routine()
    first.add_slot("in")
    first.add_event("out")
    first.set_logic(lambda sd, m, ws: first.emit("out", v=1))
    second = Routine()
    second.add_slot("in")
    second.set_logic(lambda sd, m, ws: None)
    flow = Flow("traced_twice")
    flow.add_routine(first, "first")
    flow.add_routine(second, "second")
    flow.connect("first", "out", "second", "in")
    FlowRegistry.get_instance().register(flow)
    plan = FaultPlan().duplicate(routine="second")
    with Runtime(tracing=True, faults=plan) as runtime:
        _, job = runtime.post("traced_twice", "first", "in", {})
        assert job.wait(10)
    assert job.status == JobStatus.COMPLETED, job.error
    spans = EXPORTER.get_finished_spans()
    (parent,) = [span for span in spans if span.name == "routine first"]
    copies = [span for span in spans if span.name == "routine second"]
    assert len(copies) == 2
    assert [span.parent.span_id for span in copies] == [parent.context.span_id] * 2
