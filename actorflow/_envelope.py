"""Envelope: one message on its way to a routine (internal).

An envelope carries the target, the slot, the payload and the job's context view, so the
receiving routine knows which job it works for without shared memory. In strict mode the
payload and the view travel as cloudpickle bytes (``payload`` and ``blob``), exactly as they
would between processes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Envelope", "Tick"]


class Envelope:
    """A message for a routine actor. Internal; not part of the public API."""

    __slots__ = ("blob", "headers", "job", "payload", "slot", "target")

    def __init__(
        self,
        target: str,
        slot: str,
        payload: Any,
        job: Any,
        blob: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.slot = slot
        self.payload = payload
        self.job = job
        self.blob = blob
        self.headers = headers  # trace context (OpenTelemetry), when tracing is on

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Envelope,
            (self.target, self.slot, self.payload, self.job, self.blob, self.headers),
        )

    def __repr__(self) -> str:
        job_id = getattr(self.job, "job_id", None)
        return f"Envelope(target={self.target!r}, slot={self.slot!r}, job={job_id!r})"


class Tick:
    """A timer deadline for a routine's activation policy (internal)."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
