"""Replaying a recorded job on the deterministic runtime (``actorflow.testing.replay``).

The replay posts the recorded job again (same job id, metadata and first message) into the
flow on a deterministic runtime, and answers each WorkerState call of its logic with the value
the recording says it returned, so each routine sees what it saw then. It records the new run
the same way and compares the two, step by step in the recorded order (the k-th run of a
routine against its k-th recorded run): inputs (slot data, policy message, job data), state
calls, emits, job writes and the error. The first difference is the replay's divergence.

A state call the recording does not have at that place (other operation, key or argument,
or one call too many) is made on the replay's own state, which starts empty, and shows as the
divergence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorflow.engine.recorder import AsyncStateCall, Recorder, StateCall, Step
from actorflow.errors import ActorflowError, UnknownFlowError
from actorflow.flow import Flow
from actorflow.job import JobContext, JobRecord
from actorflow.recording import FORMAT, RecordSettings, decode_value, encode_value
from actorflow.registry import FlowRegistry
from actorflow.runtime import Runtime

__all__ = ["Divergence", "RecordingFormatError", "ReplayDivergedError", "ReplayReport", "replay"]

# The parts of a step compared, in this order: what the logic was given, then what it did.
COMPARED = ("slot_data", "message", "job_data", "state_calls", "emits", "job_writes", "error")


class RecordingFormatError(ActorflowError, ValueError):
    """What was given to ``replay`` is not a recording (or one of another format)."""


class ReplayDivergedError(ActorflowError, AssertionError):
    """``ReplayReport.assert_reproduced()``: the replay did not run as recorded."""


@dataclass(frozen=True)
class Divergence:
    """The first place where a replay ran otherwise than its recording."""

    step: int  # index of the recorded step (or of the replayed one, for an extra run)
    routine: str
    run: int  # which run of that routine in the job (1 = its first)
    part: str  # one of COMPARED, or "run" when a run is missing or extra
    recorded: Any
    replayed: Any

    def describe(self) -> str:
        """One line saying where and how the replay diverged."""
        where = f"step {self.step} (routine {self.routine!r}, run {self.run})"
        if self.part == "run":
            if self.replayed is None:
                return f"{where}: recorded, but the replay did not run it"
            return f"{where}: the replay ran it, the recording has no such run"
        return (
            f"{where}: {self.part} differ: recorded {_short(self.recorded)}, "
            f"replayed {_short(self.replayed)}"
        )


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ReplayReport:
    """What a replay did, compared with its recording."""

    job_id: str
    flow_id: str
    recorded_status: str | None
    recorded_error: str | None
    status: str
    error: str | None
    steps_recorded: int
    steps_replayed: int
    divergence: Divergence | None
    exception: BaseException | None  # what the replayed logic raised (the job's failure)
    unreplayable: list[str] = field(default_factory=list)
    recording: dict[str, Any] = field(default_factory=dict)  # the replay's own recording

    @property
    def reproduced(self) -> bool:
        """The replay ran as recorded: every step alike, the same outcome."""
        return (
            self.divergence is None
            and self.status == self.recorded_status
            and self.error == self.recorded_error
        )

    def reraise(self) -> None:
        """Raise what the replayed logic raised, with its traceback through your code (step
        through it with a debugger's post-mortem, or keep it as a regression test)."""
        if self.exception is None:
            raise ReplayDivergedError(f"the replay of job {self.job_id!r} raised nothing")
        raise self.exception

    def assert_reproduced(self) -> None:
        """Raise :class:`ReplayDivergedError` with :meth:`summary` unless it was reproduced."""
        if not self.reproduced:
            raise ReplayDivergedError(self.summary())

    def summary(self) -> str:
        """A readable account of the replay."""
        lines = [
            f"replay of job {self.job_id} (flow {self.flow_id}): "
            f"{self.steps_replayed} step(s) replayed of {self.steps_recorded} recorded",
            f"  recorded: {self.recorded_status}"
            + (f" ({self.recorded_error})" if self.recorded_error else ""),
            f"  replayed: {self.status}" + (f" ({self.error})" if self.error else ""),
        ]
        if self.divergence is None:
            lines.append("  no divergence")
        else:
            lines.append(f"  diverged at {self.divergence.describe()}")
        if self.unreplayable:
            lines.append("  values kept as repr only: " + ", ".join(self.unreplayable))
        lines.append("  reproduced" if self.reproduced else "  NOT reproduced")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the exception as its type and message)."""
        divergence = None
        if self.divergence is not None:
            divergence = {
                "step": self.divergence.step,
                "routine": self.divergence.routine,
                "run": self.divergence.run,
                "part": self.divergence.part,
                "recorded": self.divergence.recorded,
                "replayed": self.divergence.replayed,
                "text": self.divergence.describe(),
            }
        exception = self.exception
        return {
            "job_id": self.job_id,
            "flow_id": self.flow_id,
            "reproduced": self.reproduced,
            "recorded_status": self.recorded_status,
            "recorded_error": self.recorded_error,
            "status": self.status,
            "error": self.error,
            "steps_recorded": self.steps_recorded,
            "steps_replayed": self.steps_replayed,
            "divergence": divergence,
            "exception": None if exception is None else f"{type(exception).__name__}: {exception}",
            "unreplayable": self.unreplayable,
        }


class ReplayRecorder(Recorder):
    """Records the replay, and answers its state calls from the recording."""

    def __init__(self, recorded_steps: Sequence[Mapping[str, Any]], settings: RecordSettings):
        super().__init__(settings, lambda: 0.0)
        self._runs: dict[str, list[Mapping[str, Any]]] = {}
        for step in recorded_steps:
            self._runs.setdefault(step["routine"], []).append(step)
        self._started: dict[str, int] = {}
        self._answers: dict[int, list[Mapping[str, Any]]] = {}  # id(step) -> recorded calls
        self.exceptions: list[BaseException] = []
        self.now = self._clock  # virtual time is replaced by the order of the runs
        self._ticks = 0

    def _clock(self) -> float:
        self._ticks += 1
        return float(self._ticks)

    def begin(
        self,
        routine_id: str,
        attempt: int,
        slot_data: Mapping[str, list[Any]],
        message: Any,
        job: JobContext,
        records: Sequence[JobRecord],
        strict: bool,
    ) -> Step:
        step = super().begin(routine_id, attempt, slot_data, message, job, records, strict)
        run = self._started.get(routine_id, 0)
        self._started[routine_id] = run + 1
        recorded = self._runs.get(routine_id, [])
        calls = recorded[run].get("state_calls", []) if run < len(recorded) else []
        self._answers[id(step)] = list(calls)
        return step

    def end(
        self, step: Step, outbox: Sequence[tuple[str, Any]], error: BaseException | None
    ) -> None:
        self._answers.pop(id(step), None)
        if error is not None:
            self.exceptions.append(error)
        super().end(step, outbox, error)

    def _answer(self, step: Step | None, op: str, key: Any, arg: Any, extra: Any) -> Any:
        """The recorded call answering this one (None if the recording has none like it)."""
        if step is None:
            return None
        calls = self._answers.get(id(step))
        if not calls:
            return None
        recorded = calls[step.calls] if step.calls < len(calls) else None
        if recorded is None or recorded["op"] != op or recorded["key"] != encode_value(key):
            return None
        if not callable(arg) and recorded.get("arg") != (
            None if arg is None else encode_value(arg)
        ):
            return None
        if recorded.get("extra") != (None if extra is None else encode_value(extra)):
            return None
        if "result" not in recorded:  # it raised: let the replay's own state answer
            return None
        return recorded

    def state_call(
        self, step: Step | None, call: StateCall, op: str, key: Any, arg: Any, extra: Any
    ) -> Any:
        recorded = self._answer(step, op, key, arg, extra)
        if recorded is None:
            return super().state_call(step, call, op, key, arg, extra)
        result = decode_value(recorded["result"])
        assert step is not None
        step.state_call(op, key, arg, extra, result, None)
        return result

    async def state_call_async(
        self, step: Step | None, call: AsyncStateCall, op: str, key: Any, arg: Any, extra: Any
    ) -> Any:
        recorded = self._answer(step, op, key, arg, extra)
        if recorded is None:
            return await super().state_call_async(step, call, op, key, arg, extra)
        result = decode_value(recorded["result"])
        assert step is not None
        step.state_call(op, key, arg, extra, result, None)
        return result


def load_recording(source: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A recording from a dict (``Runtime.recording``) or a JSON file's path, checked."""
    if isinstance(source, Mapping):
        recording = dict(source)
    else:
        path = Path(source)
        try:
            recording = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordingFormatError(f"cannot read the recording {str(path)!r}: {exc}") from None
        except ValueError as exc:
            raise RecordingFormatError(f"{path}: not JSON ({exc})") from None
        if not isinstance(recording, dict):
            raise RecordingFormatError(f"{path}: a recording is a JSON object")
    found = recording.get("format")
    if found != FORMAT:
        raise RecordingFormatError(
            f"not an actorflow recording of format {FORMAT!r} (format: {found!r})"
        )
    for name in ("job_id", "flow_id", "entry", "steps"):
        if name not in recording:
            raise RecordingFormatError(f"the recording has no {name!r}")
    return recording


def _comparable(step: Mapping[str, Any], part: str) -> Any:
    value = step.get(part)
    if part == "error" and value is not None:
        return {"type": value.get("type"), "message": value.get("message")}
    return value


def first_divergence(
    recorded: Sequence[Mapping[str, Any]], replayed: Sequence[Mapping[str, Any]]
) -> Divergence | None:
    """Where ``replayed`` first differs from ``recorded`` (runs of a routine matched in
    order, visited in the recorded order; then any extra replayed run)."""
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for step in replayed:
        runs.setdefault(step["routine"], []).append(step)
    seen: dict[str, int] = {}
    for index, step in enumerate(recorded):
        routine = step["routine"]
        run = seen.get(routine, 0)
        seen[routine] = run + 1
        mine = runs.get(routine, [])
        if run >= len(mine):
            return Divergence(index, routine, run + 1, "run", step, None)
        for part in COMPARED:
            if _comparable(step, part) != _comparable(mine[run], part):
                return Divergence(
                    index, routine, run + 1, part, _comparable(step, part),
                    _comparable(mine[run], part),
                )  # fmt: skip
    for routine, mine in runs.items():
        if len(mine) > seen.get(routine, 0):
            extra = mine[seen.get(routine, 0)]
            index = list(replayed).index(extra)
            return Divergence(index, routine, seen.get(routine, 0) + 1, "run", None, extra)
    return None


def replay(
    recording: Mapping[str, Any] | str | os.PathLike[str],
    flow: Flow | None = None,
    *,
    seed: int = 0,
    timeout: float = 60.0,
) -> ReplayReport:
    """Run a recorded job again on the deterministic runtime and compare it with the recording.

    ``recording`` is what ``Runtime.recording(job_id)`` returned, or the path of a JSON file
    holding it. ``flow`` is the flow to run (your code as it is now); None looks the
    recording's flow id up in the default registry. The job is posted again with its id,
    metadata and first message; each WorkerState call its logic makes is answered with the
    value recorded for it. Virtual time runs the job's delays and retries at once (``timeout``
    is virtual seconds). Returns a :class:`ReplayReport`: ``reproduced``, the first
    ``divergence``, and the ``exception`` the replayed logic raised (``reraise()``).
    """
    data = load_recording(recording)
    if flow is None:
        flow = FlowRegistry.get_instance().get(data["flow_id"])
        if flow is None:
            raise UnknownFlowError(
                f"the recording's flow {data['flow_id']!r} is not registered: pass the flow"
            )
    if flow.flow_id != data["flow_id"]:
        raise RecordingFormatError(
            f"the recording is of flow {data['flow_id']!r}, not {flow.flow_id!r}"
        )
    registry = FlowRegistry()
    registry.register(flow)
    recorded_steps = data["steps"]
    recorder = ReplayRecorder(
        recorded_steps, RecordSettings(max_jobs=1, max_steps=max(len(recorded_steps) * 2, 1))
    )
    entry = data["entry"]
    with Runtime(deterministic=True, seed=seed, registry=registry, record=recorder) as runtime:
        _, job = runtime.post(
            flow.flow_id,
            entry["routine"],
            entry["slot"],
            decode_value(entry["data"]),
            metadata=decode_value(data.get("metadata") or {}),
            job_id=data["job_id"],
        )
        job.wait(timeout)
        mine = runtime.recording(job.job_id)
    steps = mine["steps"]
    exception = recorder.exceptions[-1] if recorder.exceptions else None
    return ReplayReport(
        job_id=data["job_id"],
        flow_id=flow.flow_id,
        recorded_status=data.get("status"),
        recorded_error=data.get("error"),
        status=job.status.value,
        error=job.error,
        steps_recorded=len(recorded_steps),
        steps_replayed=len(steps),
        divergence=first_divergence(recorded_steps, steps),
        exception=exception,
        unreplayable=list(data.get("unreplayable", [])),
        recording=mine,
    )
