"""Envelope: one message on its way to a routine (internal).

An envelope carries the target, the slot, the payload and the job as the sending routine saw
it: the job's record, the data dict shared copy-on-write with the sender, and the message's
depth (hops from the post). The receiving routine knows which job it works for without shared
memory; ``envelope.job`` builds the :class:`~actorflow.job.JobContext` view only when someone
asks for it. In strict mode the payload and the view travel as cloudpickle bytes (``payload``
and ``blob``, with ``rec`` left None), exactly as they would between processes.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from actorflow.job import JobContext, JobRecord, new_view

__all__ = ["Envelope", "Tick", "new_envelope"]


class Envelope:
    """A message for a routine actor. Internal; not part of the public API."""

    __slots__ = ("blob", "data", "depth", "headers", "payload", "rec", "slot", "target")

    # Made by new_envelope() (no __init__: see actorflow.job.new_record for why).
    target: str
    slot: str
    payload: Any
    rec: JobRecord | None
    data: dict[Any, Any] | None
    depth: int
    blob: bytes | None
    headers: dict[str, str] | None  # trace context (OpenTelemetry), when tracing is on

    @property
    def job_id(self) -> str | None:
        """The id of the job this message works for (a sealed envelope is opened to find it)."""
        if self.rec is not None:
            return self.rec.job_id
        if self.blob is not None:
            job_id: str = cloudpickle.loads(self.blob).job_id
            return job_id
        return None

    @property
    def job(self) -> JobContext | None:
        """A new view of the job as this message carries it (None for a sealed envelope)."""
        rec = self.rec
        if rec is None:
            return None
        return new_view(rec, self.data, self.depth)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            new_envelope,
            (
                self.target,
                self.slot,
                self.payload,
                self.rec,
                self.data,
                self.depth,
                self.blob,
                self.headers,
            ),
        )

    def __repr__(self) -> str:
        job_id = getattr(self.rec, "job_id", None)
        return f"Envelope(target={self.target!r}, slot={self.slot!r}, job={job_id!r})"


def new_envelope(
    target: str,
    slot: str,
    payload: Any,
    rec: JobRecord | None,
    data: dict[Any, Any] | None = None,
    depth: int = 0,
    blob: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Envelope:
    """An envelope for ``target.slot`` carrying ``payload`` and the job (``rec``, ``data``
    shared with the sender, ``depth`` hops from the post), or sealed bytes (``blob``)."""
    envelope = Envelope()
    envelope.target = target
    envelope.slot = slot
    envelope.payload = payload
    envelope.rec = rec
    envelope.data = data
    envelope.depth = depth
    envelope.blob = blob
    envelope.headers = headers
    return envelope


class Tick:
    """A timer deadline for a routine's activation policy (internal)."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
