"""An envelope on its way between Ray actors (internal).

A wire carries what an :class:`~actorflow.engine.envelope.Envelope` carries, in a form that crosses
a process boundary: the payload and the job data the sender saw (one cloudpickle blob, so data
that cannot cross fails where it is sent), the job's header, the depth, where it comes from
(the routine and event fault rules match on), and two things only Ray needs: an id derived
from the job and the message's path (a message delivered again after a restart has the id of
its first delivery) and the message's *weight* (see ``_record``).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import cloudpickle

from actorflow.errors import SerializationError

__all__ = ["JobHeader", "Wire", "pack", "unpack"]


class JobHeader(NamedTuple):
    """Who a message works for: the job's identity and read-only metadata."""

    job_id: str
    flow_id: str
    worker_id: str
    metadata: dict[str, Any]
    created_at: float


class Wire(NamedTuple):
    envelope_id: str
    num: int
    den: int
    slot: str
    blob: bytes  # cloudpickle of (payload, job data as the sender saw it)
    header: JobHeader
    depth: int
    source: str | None = None  # the routine that sent it (None: a post)
    event: str | None = None  # the event it was emitted on (None: a post)
    replay: bool = False  # sent again to recover what a dead process took (see _driver)


def pack(
    envelope_id: str,
    weight: Fraction,
    slot: str,
    payload: Any,
    data: dict[Any, Any],
    header: JobHeader,
    depth: int,
    source: str | None = None,
    event: str | None = None,
    replay: bool = False,
) -> Wire:
    """A wire for one message; ``SerializationError`` if its payload or data cannot cross."""
    try:
        blob = cloudpickle.dumps((payload, data))
    except Exception as exc:
        raise SerializationError(
            f"the message for slot {slot!r} cannot cross a process boundary "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return Wire(
        envelope_id, weight.numerator, weight.denominator, slot, blob, header, depth, source,
        event, replay,
    )  # fmt: skip


def unpack(wire: Wire) -> tuple[Any, dict[Any, Any], Fraction]:
    """(payload, job data, weight) of a wire."""
    payload, data = cloudpickle.loads(wire.blob)
    return payload, data, Fraction(wire.num, wire.den)
