"""Recording what routines' logic read and did, job by job (internal; see actorflow.recording).

A runtime made with ``record=`` has one :class:`Recorder`. A routine cell asks it for a
:class:`Step` before each run of its logic and hands the step back when the logic returned or
raised; the WorkerState calls the logic makes in between go through :class:`RecordedState`,
which records each one in the step of the logic making it. On Ray each routine actor has a
recorder of its own that sends its steps to the driver's with its reports.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from actorflow.errors import RecordingNotFoundError
from actorflow.job import CURRENT_ACTIVATION, JobContext, JobRecord
from actorflow.recording import FORMAT, RecordSettings, encode_value, unreplayable_paths

__all__ = ["RecordedState", "Recorder", "Step", "current_step"]

StateCall = Callable[[str, Any, Any, Any], Any]
AsyncStateCall = Callable[[str, Any, Any, Any], Awaitable[Any]]


class Step:
    """One run of a routine's logic, being recorded."""

    __slots__ = ("_before", "calls", "entry", "job", "job_ids", "strict")

    def __init__(
        self,
        routine_id: str,
        attempt: int,
        slot_data: Mapping[str, list[Any]],
        message: Any,
        job: JobContext,
        job_ids: list[str],
        at: float,
        strict: bool,
    ) -> None:
        self.job = job
        self.job_ids = job_ids
        self.strict = strict
        self._before = dict(job.data)
        self.calls = 0  # WorkerState calls made so far
        self.entry: dict[str, Any] = {
            "routine": routine_id,
            "attempt": attempt,
            "at": round(at, 6),
            "slot_data": encode_value(dict(slot_data)),
            "message": encode_value(message),
            "job_data": encode_value(self._before),
            "state_calls": [],
        }
        if len(job_ids) > 1:
            self.entry["jobs"] = job_ids

    def state_call(
        self, op: str, key: Any, arg: Any, extra: Any, result: Any, error: BaseException | None
    ) -> None:
        """Record one WorkerState call and what it returned (or raised)."""
        call: dict[str, Any] = {"op": op, "key": encode_value(key)}
        if arg is not None:
            call["arg"] = encode_value(arg)
        if extra is not None:
            call["extra"] = encode_value(extra)
        if error is None:
            call["result"] = encode_value(result)
        else:
            call["error"] = f"{type(error).__name__}: {error}"
        self.entry["state_calls"].append(call)
        self.calls += 1

    def finish(self, outbox: Sequence[tuple[str, Any]], error: BaseException | None) -> None:
        """The logic returned (``error`` None) or raised: what it emitted and wrote."""
        emits = []
        for event, data in outbox:
            value = cloudpickle.loads(data) if self.strict else data
            emits.append({"event": event, "data": encode_value(value)})
        entry = self.entry
        entry["emits"] = emits
        before = self._before
        after = dict(self.job.data)
        written = {
            key: value
            for key, value in after.items()
            if key not in before or before[key] is not value
        }
        entry["job_writes"] = encode_value(written)
        if error is None:
            entry["error"] = None
        else:
            entry["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            }


def current_step() -> Step | None:
    """The step of the logic running on this thread (or asyncio task), if it is recorded."""
    step: Step | None = getattr(CURRENT_ACTIVATION.get(), "recording_step", None)
    return step


class Recorder:
    """Keeps the recordings of a runtime's most recent jobs (thread-safe)."""

    def __init__(self, settings: RecordSettings, now: Callable[[], float]) -> None:
        self.settings = settings
        self.now = now  # seconds since the runtime started
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # -- jobs and steps ----------------------------------------------------------------
    def posted(
        self,
        job_id: str,
        flow_id: str,
        worker_id: str,
        metadata: Mapping[str, Any],
        routine_id: str,
        slot: str,
        data: Any,
    ) -> None:
        """A job was posted: start its recording (forgetting the oldest beyond the bound)."""
        job = {
            "job_id": job_id,
            "flow_id": flow_id,
            "worker_id": worker_id,
            "metadata": encode_value(dict(metadata)),
            "entry": {"routine": routine_id, "slot": slot, "data": encode_value(data)},
            "steps": [],
            "steps_dropped": 0,
        }
        with self._lock:
            self._jobs[job_id] = job
            while len(self._jobs) > self.settings.max_jobs:
                self._jobs.popitem(last=False)

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
        """A run of ``routine_id``'s logic starts: its step."""
        job_ids = [record.job_id for record in records]
        return Step(routine_id, attempt, slot_data, message, job, job_ids, self.now(), strict)

    def end(
        self, step: Step, outbox: Sequence[tuple[str, Any]], error: BaseException | None
    ) -> None:
        """The run of ``step`` ended: keep it in the recording of each job it ran for."""
        step.finish(outbox, error)
        for job_id in step.job_ids:
            self.add(job_id, step.entry)

    def add(self, job_id: str, entry: dict[str, Any]) -> None:
        """Keep a finished step in ``job_id``'s recording (if that is still kept)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if len(job["steps"]) < self.settings.max_steps:
                job["steps"].append(entry)
            else:
                job["steps_dropped"] += 1

    # -- WorkerState calls -------------------------------------------------------------
    def state_call(
        self, step: Step | None, call: StateCall, op: str, key: Any, arg: Any, extra: Any
    ) -> Any:
        """Make a WorkerState call for the logic of ``step`` and record it."""
        try:
            result = call(op, key, arg, extra)
        except Exception as exc:
            if step is not None:
                step.state_call(op, key, arg, extra, None, exc)
            raise
        if step is not None:
            step.state_call(op, key, arg, extra, result, None)
        return result

    async def state_call_async(
        self, step: Step | None, call: AsyncStateCall, op: str, key: Any, arg: Any, extra: Any
    ) -> Any:
        """:meth:`state_call`, awaited (``state.aio``)."""
        try:
            result = await call(op, key, arg, extra)
        except Exception as exc:
            if step is not None:
                step.state_call(op, key, arg, extra, None, exc)
            raise
        if step is not None:
            step.state_call(op, key, arg, extra, result, None)
        return result

    # -- export ------------------------------------------------------------------------
    def export(self, job_id: str, record: JobRecord | None) -> dict[str, Any]:
        """``job_id``'s recording as a JSON-safe dict, with the job's outcome (``record``)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise RecordingNotFoundError(
                    f"no recording of job {job_id!r}: it was not posted to this runtime since "
                    f"recording began, or more than {self.settings.max_jobs} jobs were posted "
                    "after it (RecordSettings.max_jobs)"
                )
            steps = sorted(job["steps"], key=lambda entry: entry["at"])
            recording = {**job, "steps": steps}
        recording["status"] = None if record is None else record.status.value
        recording["error"] = None if record is None else record.error
        recording = {"format": FORMAT, **recording}
        recording["unreplayable"] = unreplayable_paths(
            {"metadata": recording["metadata"], "entry": recording["entry"], "steps": steps}
        )
        return recording

    def job_ids(self) -> list[str]:
        """The jobs whose recordings are kept, oldest first."""
        with self._lock:
            return list(self._jobs)


class RecordedState:
    """What a recording cell's WorkerState handle talks to: the worker's state owner, with
    every call recorded in the step of the logic making it (see ``WorkerState``)."""

    __slots__ = ("_owner", "_recorder")

    def __init__(self, owner: Any, recorder: Recorder) -> None:
        self._owner = owner
        self._recorder = recorder

    @property
    def worker_id(self) -> str:
        worker_id: str = self._owner.worker_id
        return worker_id

    @property
    def flow_id(self) -> str:
        flow_id: str = self._owner.flow_id
        return flow_id

    @property
    def status(self) -> str:
        status: str = self._owner.status
        return status

    @property
    def routine_ids(self) -> frozenset[str]:
        routine_ids: frozenset[str] = self._owner.routine_ids
        return routine_ids

    @property
    def grants(self) -> Mapping[tuple[str, str], Any]:
        grants: Mapping[tuple[str, str], Any] = self._owner.grants
        return grants

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        return self._recorder.state_call(
            current_step(), self._owner.state_call, op, key, arg, extra
        )

    async def state_call_async(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        owner = self._owner
        call_async = getattr(owner, "state_call_async", None)
        if call_async is None:

            async def call_async(op: str, key: Any, arg: Any, extra: Any) -> Any:
                return await asyncio.to_thread(owner.state_call, op, key, arg, extra)

        return await self._recorder.state_call_async(
            current_step(), call_async, op, key, arg, extra
        )
