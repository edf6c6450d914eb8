"""Joining a Ray cluster that uses token authentication (``RAY_AUTH_MODE=token``).

A real cluster runs in a process of its own (Ray's ``ray.cluster_utils.Cluster``, with a token
of this test's), and each driver is a process of its own too, since a process joins one Ray:
with the token it runs its jobs on the cluster; without it, ``Runtime`` raises
``ClusterJoinError`` naming what to set.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'actorflow[ray]')")

HEAD = textwrap.dedent(
    """
    import sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    print(cluster.address, flush=True)
    sys.stdin.readline()  # until the test is done
    cluster.shutdown()
    """
)

DRIVER = textwrap.dedent(
    """
    import sys
    from actorflow import ClusterJoinError, Flow, FlowRegistry, Routine, Runtime

    routine = Routine()
    routine.add_slot("in")
    routine.set_logic(lambda slot_data, message, state: state.increment("count", "n"))
    flow = Flow("joined")
    flow.add_routine(routine, "count")
    FlowRegistry.get_instance().register(flow)
    try:
        with Runtime(backend="ray", ray_address=sys.argv[1]) as runtime:
            state = runtime.exec("joined", worker_id="w")
            for n in range(20):
                runtime.post("joined", "count", "in", n, worker_id="w")
            assert runtime.wait_until_all_jobs_finished(timeout=60)
            print("joined; state:", state.get_routine_state("count"))
    except ClusterJoinError as exc:
        print("ClusterJoinError:", exc)
    """
)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)  # no ~/.ray/auth_token of this machine's user
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(address, token) of a running cluster that accepts that token only."""
    home = tmp_path_factory.mktemp("head-home")
    token = secrets.token_hex(32)
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env=_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address, "the cluster did not start"
        yield address, token
    finally:
        assert head.stdin is not None
        head.stdin.write("\n")
        head.stdin.close()
        head.wait(timeout=60)


def _drive(address: str, home: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, address],
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_driver_with_the_clusters_token_joins_and_runs_its_jobs(
    token_cluster: tuple[str, str], tmp_path: Path
) -> None:
    address, token = token_cluster
    out = _drive(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    assert out.splitlines()[-1] == "joined; state: {'n': 20}"


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_driver_without_the_token_is_refused_with_what_to_set(
    token_cluster: tuple[str, str], tmp_path: Path
) -> None:
    address, token = token_cluster
    out = _drive(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * len(token))
    last = out.splitlines()[-1]
    assert last.startswith(f"ClusterJoinError: cannot join the Ray cluster at '{address}'")
    assert "RAY_AUTH_TOKEN" in last and "~/.ray/auth_token" in last
