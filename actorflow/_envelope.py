"""Envelope: one message on its way to a routine (internal).

An envelope carries the target, the slot, the payload and the job's context view, so the
receiving routine knows which job it works for without shared memory. In strict mode the
payload and the view travel as one cloudpickle blob, exactly as they would between processes.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from actorflow.errors import SerializationError

__all__ = ["Envelope", "Tick", "seal", "unseal"]


class Envelope:
    """A message for a routine actor. Internal; not part of the public API."""

    # pykka's actor loop reads ``message`` and ``reply_to``: an envelope is its own message and
    # never wants a reply, so both are answered without extra per-message objects.
    __slots__ = ("blob", "job", "payload", "slot", "target")
    reply_to = None

    def __init__(
        self, target: str, slot: str, payload: Any, job: Any, blob: bytes | None = None
    ) -> None:
        self.target = target
        self.slot = slot
        self.payload = payload
        self.job = job
        self.blob = blob

    @property
    def message(self) -> Envelope:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Envelope, (self.target, self.slot, self.payload, self.job, self.blob))

    def __repr__(self) -> str:
        job_id = getattr(self.job, "job_id", None)
        return f"Envelope(target={self.target!r}, slot={self.slot!r}, job={job_id!r})"


class Tick:
    """A timer deadline for a routine's activation policy (internal)."""

    __slots__ = ("deadline",)
    reply_to = None

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    @property
    def message(self) -> Tick:
        return self


def seal(target: str, slot: str, payload: Any, job: Any, where: str) -> Envelope:
    """Serialize payload and job into the envelope (strict mode); ``where`` names the sender."""
    try:
        blob = cloudpickle.dumps((payload, job))
    except Exception as exc:
        raise SerializationError(
            f"{where} -> {target}.{slot}: the message cannot cross a process boundary "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return Envelope(target, slot, None, None, blob)


def unseal(envelope: Envelope) -> tuple[Any, Any]:
    """Open a sealed envelope: ``(payload, job_view)`` (the view is detached)."""
    payload, job = cloudpickle.loads(envelope.blob)
    return payload, job
