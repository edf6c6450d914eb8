"""What the web app uses of a runtime: its public methods, as a protocol (internal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from actorflow.flow import Flow
    from actorflow.job import JobContext, JobStatus
    from actorflow.worker import WorkerState

__all__ = ["RuntimeApi"]


class RuntimeApi(Protocol):
    """The methods of :class:`actorflow.Runtime` the web app calls."""

    @property
    def closed(self) -> bool: ...
    def metrics(self) -> dict[str, Any]: ...
    def list_jobs(self, status: str | JobStatus | None = None) -> list[JobContext]: ...
    def get_job(self, job_id: str) -> JobContext | None: ...
    def cancel_job(self, job_id: str) -> bool: ...
    def list_workers(self) -> list[WorkerState]: ...
    def flow_of(self, worker_id: str) -> Flow | None: ...
    def dead_letters(self) -> list[dict[str, Any]]: ...
    def dead_letter_counts(self) -> dict[str, int]: ...
    async def post_async(
        self,
        flow_id: str,
        routine_id: str,
        slot: str,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[WorkerState, JobContext]: ...
