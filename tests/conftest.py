"""Test session set-up: strict envelopes, a clean flow registry, and no leaked threads.

With ``ACTORFLOW_REQUIRE_REAL_PARTS=1`` (``.ci/run`` sets it) a test may not be skipped because
a real part is missing (a redis-server, Ray, Graphviz, Chromium, an optional package): every
skip fails the test instead, with the reason, except the ordinary skips in ``ORDINARY_SKIPS``,
which belong to what a test checks rather than to what the machine has.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

# Every envelope crosses a (simulated) process boundary in the test suite.
os.environ.setdefault("ACTORFLOW_STRICT", "1")

from actorflow import FlowRegistry, Runtime

REQUIRE_REAL_PARTS = "ACTORFLOW_REQUIRE_REAL_PARTS"

# Skips that stay skips under ACTORFLOW_REQUIRE_REAL_PARTS=1: a test that does not apply to
# one of its parameters, a documentation fragment that is shown and not run, and the seed
# documents' runner, which lives beside the checkout rather than in it.
ORDINARY_SKIPS = (
    re.compile(r"the redis store has no (max_entries|on_evict)$"),
    re.compile(r"redis expires keys itself; the store has no on_evict to observe$"),
    re.compile(r"async stores do not expose the lock$"),
    re.compile(r"two memory stores never share data$"),
    re.compile(r"marked 'python no-run'$"),
    re.compile(r"the seed documents' runner is not beside this checkout"),
)


def real_parts_required() -> bool:
    """True when ACTORFLOW_REQUIRE_REAL_PARTS=1: a skip for a missing part fails the test."""
    return os.environ.get(REQUIRE_REAL_PARTS, "") == "1"


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def _is_ordinary(reason: str) -> bool:
    return any(pattern.search(reason) for pattern in ORDINARY_SKIPS)


def _refuse_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip for a missing part into a failure that gives the reason."""
    reason = _skip_reason(report.longrepr)
    if _is_ordinary(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{REQUIRE_REAL_PARTS}=1, and this would be skipped: {reason}\n"
        "Install what is missing (./scripts/test does, as root, unless ACTORFLOW_NO_APT=1), "
        "or, if the skip belongs to what the test checks, add its reason to ORDINARY_SKIPS "
        "in tests/conftest.py."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and real_parts_required():
        _refuse_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome: Any = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and real_parts_required():  # e.g. a module-level importorskip
        _refuse_skip(report)


def actorflow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("actorflow-") and t.is_alive()]


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    FlowRegistry.get_instance().clear()
    yield
    FlowRegistry.get_instance().clear()


@pytest.fixture
def registry() -> FlowRegistry:
    return FlowRegistry.get_instance()


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """A runtime that is shut down after the test; the test fails if it leaks a thread."""
    before = set(actorflow_threads())
    rt = Runtime()
    try:
        yield rt
    finally:
        rt.shutdown(wait=False)
        leaked = [t.name for t in actorflow_threads() if t not in before]
        assert not leaked, f"threads alive after shutdown: {leaked}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a private redis-server on a free 127.0.0.1 port, for the whole test run
    (skipped, with the reason, where redis-server is not installed: CI installs it)."""
    from _redis_server import RedisServerUnavailable, find_redis_server, running_redis_server

    if find_redis_server() is None:
        pytest.skip("redis-server is not installed (./scripts/test installs it with apt-get)")
    try:
        with running_redis_server() as url:
            yield url
    except RedisServerUnavailable as exc:
        pytest.skip(f"redis-server would not start: {exc}")


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole test session (runtimes join it and leave it running)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'actorflow[ray]')")
    path = os.pathsep.join(p for p in __import__("sys").path if p)
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        num_cpus=2,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


@pytest.fixture(params=["threads", pytest.param("ray", marks=pytest.mark.ray)])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test on both backends (the Ray one shares the session's local Ray)."""
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return str(request.param)
