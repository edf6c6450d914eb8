"""A Ray routine actor's recorder (internal): the steps its cell records go to the driver's
recorder with the actor's reports, which keeps them per job like the thread backend's."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actorflow.engine.recorder import Recorder
from actorflow.recording import RecordSettings

__all__ = ["ActorRecorder"]


class ActorRecorder(Recorder):
    """Records steps in a routine actor and reports each one (``("recorded", job, step)``).

    ``epoch`` is the wall-clock time the runtime started: steps are timed from it, as the
    driver times its own.
    """

    def __init__(self, epoch: float, report: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__(RecordSettings(), lambda: time.time() - epoch)
        self._report = report

    def add(self, job_id: str, entry: dict[str, Any]) -> None:
        self._report(("recorded", job_id, entry))
