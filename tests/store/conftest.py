"""Fixtures of the store tests: a private redis-server and one harness per backend/mode."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent):  # _store_harness (here) and _redis_server (tests/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _store_harness import BACKENDS, MODES, Harness  # noqa: E402


def _harness_params() -> list[object]:
    params = []
    for backend in BACKENDS:
        marks = [pytest.mark.redis] if backend == "redis" else []
        for mode in MODES:
            params.append(pytest.param((backend, mode), id=f"{backend}-{mode}", marks=marks))
    return params


@pytest.fixture(params=_harness_params())
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every backend (memory, sqlite, redis) in both modes (sync, async)."""
    backend, mode = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    h = Harness(backend, mode, tmp_path, url)
    try:
        yield h
    finally:
        h.close()
