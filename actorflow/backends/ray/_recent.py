"""The ids a routine actor delivered last (internal): a set bounded first in, first out."""

from __future__ import annotations

from collections import deque

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``capacity`` distinct ids added: ``id in recent`` tells whether it was seen.

    A routine actor keeps the ids of the envelopes it delivered, to skip one that Ray delivers
    again after a restart; the oldest are forgotten past ``capacity``, so an actor that runs
    for months keeps a bounded memory.
    """

    __slots__ = ("_ids", "_order", "capacity")

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, envelope_id: object) -> bool:
        return envelope_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, envelope_id: str) -> None:
        """Remember ``envelope_id`` (forgetting the oldest id if there are ``capacity``)."""
        ids = self._ids
        if envelope_id in ids:
            return
        ids.add(envelope_id)
        order = self._order
        order.append(envelope_id)
        if len(order) > self.capacity:
            ids.discard(order.popleft())
