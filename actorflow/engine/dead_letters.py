"""Dead letters: messages that could not be delivered or run, kept for inspection (internal)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

__all__ = ["DeadLetters"]


class DeadLetters:
    """A bounded history of undeliverable messages plus exact counts by reason."""

    def __init__(self, history: int = 1000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=history)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.total = 0

    def record(
        self,
        job_id: str | None,
        worker_id: str | None,
        routine_id: str | None,
        slot: str | None,
        reason: str,
    ) -> None:
        entry = {
            "job_id": job_id,
            "worker_id": worker_id,
            "routine_id": routine_id,
            "slot": slot,
            "reason": reason,
        }
        with self._lock:
            self._entries.append(entry)
            self._counts[reason] += 1
            self.total += 1

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
