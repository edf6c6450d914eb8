"""The ledger: where routine actors' reports wait for the driver (internal; an asyncio Ray
actor, so a report never waits for the driver to read the previous one)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Ledger"]


class Ledger:
    """Collects routine reports until the driver drains them; keeps each worker's wiring
    for routine actors whose process restarted, and what an actor that kills its own process
    (a ``crash`` fault) hands to the process Ray starts in its place."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []
        self.routes: dict[str, dict[str, Any]] = {}
        self.kept: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.ready = asyncio.Event()
        self.closed = False

    async def wire(self, worker_id: str, routes: dict[str, Any]) -> None:
        """Keep a worker's routes, for routine actors that restart."""
        self.routes[worker_id] = routes

    async def unwire(self, worker_id: str) -> None:
        """Forget a stopped (or never started) worker's routes and what its actors kept."""
        self.routes.pop(worker_id, None)
        for key in [key for key in self.kept if key[0] == worker_id]:
            del self.kept[key]

    async def wired(self) -> list[str]:
        """The ids of the workers whose routes are kept."""
        return sorted(self.routes)

    async def routes_of(self, worker_id: str, routine_id: str) -> Any:
        return self.routes.get(worker_id, {}).get(routine_id, {})

    async def keep(self, key: tuple[str, str, int], state: dict[str, Any]) -> None:
        """Keep what a routine actor about to kill its own process hands to its successor."""
        self.kept[key] = state

    async def take(self, key: tuple[str, str, int]) -> dict[str, Any] | None:
        """What the predecessor of a routine actor kept for it (once), or None."""
        return self.kept.pop(key, None)

    async def report(self, reports: list[tuple[Any, ...]]) -> None:
        self.items.extend(reports)
        self.ready.set()

    async def drain(self) -> list[tuple[Any, ...]] | None:
        """Every report so far (waiting for one); None once closed and empty."""
        await self.ready.wait()
        self.ready.clear()
        if self.closed and not self.items:
            return None
        items, self.items = self.items, []
        return items

    async def close(self) -> None:
        self.closed = True
        self.ready.set()
