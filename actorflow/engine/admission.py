"""What a worker admits: ``Runtime.post``'s look at the messages already in the worker.

A post checks its target routine's mailbox against that routine's bound. The messages waiting
in the other mailboxes matter too: a routine handling them emits into the mailboxes downstream,
where an actor cannot wait for room (the emit is refused and its job fails). So every few posts
the runtime asks :meth:`Admission.backlog`: for each routine that receives emits, how many
messages the worker's waiting messages may put into its mailbox (a waiting message counts once
for each path it may take there, each routine emitting each connected event once per message)
against half its bound (the other half is room for what is being handled and for the posts
between two looks). A routine at or past that half makes the post wait or refuse, by the
worker's overflow policy.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Mapping

__all__ = ["ADMIT_EVERY", "Admission"]

ADMIT_EVERY = 16
"""A post asks for the backlog on every this many posts (more often where the smallest half
bound watched is under 64: every quarter of it)."""


def reach(edges: Mapping[str, list[str]], target: str, routines: list[str]) -> dict[str, int]:
    """For each routine, how many messages one message waiting for it may put into
    ``target``'s mailbox (1 for ``target`` itself): the paths from it to ``target``, each
    routine emitting each connected event once. A loop is followed once."""
    memo: dict[str, int] = {}
    on_path: set[str] = set()

    def visit(routine_id: str) -> int:
        known = memo.get(routine_id)
        if known is not None:
            return known
        if routine_id in on_path:
            return 0
        on_path.add(routine_id)
        count = int(routine_id == target) + sum(visit(nxt) for nxt in edges.get(routine_id, ()))
        on_path.discard(routine_id)
        memo[routine_id] = count
        return count

    return {routine_id: visit(routine_id) for routine_id in routines}


class Admission:
    """The routines a worker's posts watch, with the weight of each mailbox for each.

    ``routes`` maps ``(source, event)`` to its ``[(target, slot)]``; ``bounds`` each routine's
    slot bounds; ``sizes`` each routine's mailbox size function. ``watch=False`` (a
    deterministic run: nothing runs while a post would wait) watches nothing.
    """

    def __init__(
        self,
        routes: Mapping[tuple[str, str], list[tuple[str, str]]],
        bounds: Mapping[str, Mapping[str, int]],
        sizes: Mapping[str, Callable[[], int]],
        watch: bool = True,
    ) -> None:
        edges: dict[str, list[str]] = {}
        for (source, _event), targets in routes.items():
            edges.setdefault(source, []).extend(target for target, _slot in targets)
        receivers = sorted({target for targets in edges.values() for target in targets})
        routines = list(sizes)
        self.watches: dict[str, tuple[int, list[tuple[Callable[[], int], int]]]] = {}
        if watch:
            for target in receivers:
                limits = bounds.get(target)
                if not limits:
                    continue
                weights = reach(edges, target, routines)
                self.watches[target] = (
                    max(1, min(limits.values()) // 2),
                    [(sizes[rid], weight) for rid, weight in weights.items() if weight],
                )
        smallest = min((half for half, _ in self.watches.values()), default=sys.maxsize)
        every = max(1, min(ADMIT_EVERY, smallest // 4))
        self.tick: Iterator[bool] = (
            itertools.cycle([True] + [False] * (every - 1))
            if self.watches
            else itertools.repeat(False)
        )
        """True on the posts that ask for the backlog: the first, then every ``every``."""

    def reaching(self, routine_id: str) -> int:
        """How many messages the waiting ones may put into ``routine_id``'s mailbox."""
        return sum(size() * weight for size, weight in self.watches[routine_id][1])

    def backlog(self) -> tuple[str, int] | None:
        """``(routine, half)`` for a watched routine whose :meth:`reaching` is at least half
        its bound, else None."""
        for routine_id, (half, weights) in self.watches.items():
            if sum(size() * weight for size, weight in weights) >= half:
                return routine_id, half
        return None
