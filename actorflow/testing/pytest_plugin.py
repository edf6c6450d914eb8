"""pytest plugin: ``actor_runtime`` and ``deterministic_runtime`` fixtures, seed replay.

Installed through the ``pytest11`` entry point, so any project that installs actorflow gets
the fixtures. A failing test that used ``deterministic_runtime`` prints its seed in the report;
``pytest --actorflow-seed=S`` runs every deterministic runtime with seed ``S``.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from actorflow.runtime import Runtime

_SEED_KEY = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("actorflow")
    group.addoption(
        "--actorflow-seed",
        type=int,
        default=None,
        help="seed for every deterministic_runtime (replays a failure printed by a test)",
    )


@pytest.fixture
def actor_runtime() -> Iterator[Runtime]:
    """A thread runtime, shut down (without waiting) after the test."""
    runtime = Runtime()
    try:
        yield runtime
    finally:
        runtime.shutdown(wait=False)


@pytest.fixture
def deterministic_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A deterministic runtime seeded by ``--actorflow-seed`` or at random (reported on failure)."""
    seed = request.config.getoption("--actorflow-seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    request.node.stash[_SEED_KEY] = seed
    runtime = Runtime(deterministic=True, seed=seed)
    try:
        yield runtime
    finally:
        runtime.shutdown(wait=False)


@pytest.fixture
def make_deterministic_runtime(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory ``make(**options)`` of deterministic runtimes (with ``faults=`` and other
    options) sharing the test's seed, which is reported on failure like the fixture's."""
    seed = request.config.getoption("--actorflow-seed")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    request.node.stash[_SEED_KEY] = seed
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        runtime = Runtime(deterministic=True, seed=seed, **options)
        made.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in made:
            runtime.shutdown(wait=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, Any]:
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(
            (
                "actorflow",
                f"deterministic_runtime seed: {seed} (replay with --actorflow-seed={seed})",
            )
        )
    return report
