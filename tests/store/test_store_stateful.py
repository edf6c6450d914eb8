"""Each backend against a plain dict, under random puts, gets, deletes, scopes and ranges."""

from __future__ import annotations

import math
from typing import Any

import pytest
from _store_harness import Harness
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

SCOPES = st.sampled_from(["", "a", "a:b", "b"])  # "" is the root; "a:b" nests in "a"
KEYS = st.text(alphabet="ab:é", min_size=1, max_size=3)
BOUNDS = st.text(alphabet="ab:é", max_size=3)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _prefix(scope: str) -> str:
    return f"{scope}:" if scope else ""


class StoreAgainstDict(RuleBasedStateMachine):
    harness: Harness

    @initialize()
    def open_store(self) -> None:
        self.store = self.harness.make()
        self.model: dict[str, tuple[Any, float]] = {}  # full key -> (value, expires_at)

    # ------------------------------------------------------------------ model

    def _now(self) -> float:
        clock = self.harness.clock
        return clock() if clock is not None else 0.0

    def _live(self) -> dict[str, Any]:
        now = self._now()
        return {k: v for k, (v, expires) in self.model.items() if now < expires}

    def _view(self, scope: str) -> Any:
        view = self.store
        for part in filter(None, scope.split(":")):
            view = view.scope(part)
        return view

    # ------------------------------------------------------------------ rules

    @rule(scope=SCOPES, key=KEYS, value=VALUES)
    def put(self, scope: str, key: str, value: Any) -> None:
        self._view(scope).put(key, value)
        self.model[_prefix(scope) + key] = (value, math.inf)

    @precondition(lambda self: self.harness.clock is not None)
    @rule(scope=SCOPES, key=KEYS, value=VALUES, ttl=st.sampled_from([1, 2, 5]))
    def put_with_ttl(self, scope: str, key: str, value: Any, ttl: int) -> None:
        self._view(scope).put(key, value, ttl=ttl)
        self.model[_prefix(scope) + key] = (value, self._now() + ttl)

    @precondition(lambda self: self.harness.clock is not None)
    @rule(seconds=st.sampled_from([0.5, 1.5, 3]))
    def time_passes(self, seconds: float) -> None:
        self.harness.advance(seconds)

    @rule(scope=SCOPES, key=KEYS)
    def get(self, scope: str, key: str) -> None:
        expected = self._live().get(_prefix(scope) + key, "<missing>")
        assert self._view(scope).get(key, "<missing>") == expected

    @rule(scope=SCOPES, key=KEYS)
    def exists(self, scope: str, key: str) -> None:
        assert self._view(scope).exists(key) == (_prefix(scope) + key in self._live())

    @rule(scope=SCOPES, key=KEYS)
    def delete(self, scope: str, key: str) -> None:
        full = _prefix(scope) + key
        expected = full in self._live()
        assert self._view(scope).delete(key) == expected
        self.model.pop(full, None)

    @rule(scope=SCOPES, key=KEYS)
    def update(self, scope: str, key: str) -> None:
        full = _prefix(scope) + key
        old = self._live().get(full)
        assert self._view(scope).update(key, lambda value: {"was": value}) == {"was": old}
        self.model[full] = ({"was": old}, math.inf)

    @rule(
        scope=SCOPES,
        start=BOUNDS,
        end=st.none() | BOUNDS,
        limit=st.none() | st.integers(0, 4),
    )
    def range_get(self, scope: str, start: str, end: str | None, limit: int | None) -> None:
        prefix = _prefix(scope)
        rows = sorted(
            (k[len(prefix) :], v) for k, v in self._live().items() if k.startswith(prefix)
        )
        if end is None:
            rows = [(k, v) for k, v in rows if k.startswith(start)]
        else:
            rows = [(k, v) for k, v in rows if start <= k < end]
        if limit is not None:
            rows = rows[:limit]
        assert self._view(scope).range_get(start, end, limit) == rows

    @rule(scope=SCOPES, prefix=BOUNDS)
    def keys(self, scope: str, prefix: str) -> None:
        full = _prefix(scope) + prefix
        expected = sorted(k[len(_prefix(scope)) :] for k in self._live() if k.startswith(full))
        assert self._view(scope).keys(prefix) == expected

    @invariant()
    def same_keys(self) -> None:
        if hasattr(self, "store"):
            assert self.store.keys() == sorted(self._live())


@pytest.mark.parametrize(
    ("backend", "mode"),
    [
        ("memory", "sync"),
        ("memory", "async"),
        ("sqlite", "sync"),
        ("sqlite", "async"),
        pytest.param("redis", "sync", marks=pytest.mark.redis),
        pytest.param("redis", "async", marks=pytest.mark.redis),
    ],
)
def test_store_behaves_like_a_dict(
    backend: str, mode: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    harness = Harness(backend, mode, tmp_path, url)

    class Machine(StoreAgainstDict):
        pass

    Machine.harness = harness
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=25 if backend == "memory" else 12,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        harness.close()
