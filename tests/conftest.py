"""Test session set-up: strict envelopes, a clean flow registry, and no leaked threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

# Every envelope crosses a (simulated) process boundary in the test suite.
os.environ.setdefault("ACTORFLOW_STRICT", "1")

from actorflow import FlowRegistry, Runtime


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
