"""Small defects, each with the test that guards it.

* ``emit`` with a field its event does not declare is refused (when the event declares its
  fields), on every path an emit can take: the non-strict fast path, strict mode, an event
  connected nowhere, the deterministic runtime and Ray.
* A strict-mode post whose job metadata cannot be pickled raises ``SerializationError``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actorflow import (
    ErrorStrategy,
    Flow,
    FlowRegistry,
    FlowValidationError,
    JobStatus,
    Routine,
    Runtime,
    SerializationError,
)
from actorflow.testing import DeterministicRuntime

DECLARED = "(declared: ['name', 'quantity'])"


class Emit(Routine):
    """Emits ``out`` (declared with fields ``name`` and ``quantity``) with the fields it is
    given, and ``quiet`` (declared with ``name``, connected nowhere) when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")
        self.add_event("out", ["name", "quantity"])
        self.add_event("quiet", ["name"])
        self.add_event("free")  # declared without fields: anything goes

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        event, fields = slot_data["in"][0]
        self.emit(event, **fields)


class Keep(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.add_slot("in")

    def logic(self, slot_data: dict[str, list[Any]], message: Any, state: Any) -> None:
        pass


def emitting_flow(strategy: ErrorStrategy | None = None) -> Flow:
    FlowRegistry.get_instance().clear()
    flow = Flow("emits")
    flow.add_routine(Emit(), "emit")
    flow.add_routine(Keep(), "keep")
    flow.connect("emit", "out", "keep", "in")
    flow.connect("emit", "free", "keep", "in")
    if strategy is not None:
        flow.get_routine("emit").set_error_handler(strategy)
    FlowRegistry.get_instance().register(flow)
    return flow


def run_emits(runtime: Runtime, *emits: tuple[str, dict[str, Any]]) -> list[Any]:
    jobs = [runtime.post("emits", "emit", "in", emit)[1] for emit in emits]
    assert runtime.wait_until_all_jobs_finished(60)
    return jobs


def check_refused(jobs: list[Any]) -> None:
    misspelt, extra, unconnected, right, partial, free = jobs
    assert misspelt.status == JobStatus.FAILED
    assert misspelt.error == (
        "FlowValidationError: <Emit 'emit' in flow 'emits'> emitted 'out' with undeclared "
        f"field(s) ['nme'] {DECLARED}"
    )
    assert extra.status == JobStatus.FAILED and "['colour']" in extra.error
    assert unconnected.status == JobStatus.FAILED
    assert "emitted 'quiet' with undeclared field(s) ['nme'] (declared: ['name'])" in (
        unconnected.error or ""
    )
    for job in (right, partial, free):
        assert job.status == JobStatus.COMPLETED, job.error


EMITS = (
    ("out", {"nme": "pen", "quantity": 1}),  # a misspelt field
    ("out", {"name": "pen", "quantity": 1, "colour": "red"}),  # one field too many
    ("quiet", {"nme": "pen"}),  # an event connected nowhere
    ("out", {"name": "pen", "quantity": 1}),
    ("out", {"name": "pen"}),  # a declared field may be left out
    ("free", {"anything": 1, "goes": 2}),
)


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_emit_refuses_a_field_its_event_does_not_declare(strict: bool) -> None:
    emitting_flow()
    with Runtime(strict=strict) as runtime:
        check_refused(run_emits(runtime, *EMITS))


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_emit_refuses_undeclared_fields_on_the_deterministic_runtime(strict: bool) -> None:
    emitting_flow()
    with DeterministicRuntime(strict=strict) as runtime:
        check_refused(run_emits(runtime, *EMITS))


@pytest.mark.ray
def test_emit_refuses_undeclared_fields_on_ray(local_ray: None) -> None:
    emitting_flow()
    with Runtime(backend="ray") as runtime:
        check_refused(run_emits(runtime, *EMITS))


def test_an_undeclared_field_goes_through_the_routines_error_strategy() -> None:
    emitting_flow(ErrorStrategy.SKIP)
    with Runtime(strict=False) as runtime:
        (job,) = run_emits(runtime, ("out", {"nme": "pen"}))
    assert job.status == JobStatus.COMPLETED  # skipped, as the strategy says
    assert [error["error"] for error in job.errors] == [
        "FlowValidationError: <Emit 'emit' in flow 'emits'> emitted 'out' with undeclared "
        f"field(s) ['nme'] {DECLARED}"
    ]
    assert issubclass(FlowValidationError, ValueError)


@pytest.mark.parametrize("deterministic", [False, True], ids=["threads", "deterministic"])
def test_strict_post_with_metadata_that_cannot_be_pickled_raises_serialization_error(
    deterministic: bool,
) -> None:
    emitting_flow()
    with Runtime(strict=True, deterministic=deterministic) as runtime:
        with pytest.raises(SerializationError, match=r"emit\.in: the job's metadata cannot") as e:
            runtime.post("emits", "emit", "in", ("free", {}), metadata={"lock": threading.Lock()})
        assert isinstance(e.value.__cause__, TypeError)
        assert runtime.list_jobs() == []  # the refused post left no job behind
        (job,) = run_emits(runtime, ("free", {}))
        assert job.status == JobStatus.COMPLETED
