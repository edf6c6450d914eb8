"""A multi-node Ray cluster on this machine, for experiments that lose a node.

    with LocalRayCluster(nodes=3) as cluster:
        with Runtime(backend="ray") as runtime:   # joins the cluster
            ...
            cluster.remove_node(cluster.busiest_node(runtime.placement()))

Each node is a raylet of its own, started by ``ray.cluster_utils.Cluster`` (Ray's own tool for
this). The first node (the *head*) offers no CPU: the driver runs there with what a runtime
keeps beside it (the ledger and each worker's state owner), so removing any other node never
takes them. The other nodes offer ``cpus_per_node`` CPUs each, and routine actors spread over
them. Removing a node kills its raylet and every process on it, as a machine that goes away.

Needs Ray (``pip install 'actorflow[ray]'``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from types import TracebackType
from typing import Any

from actorflow.backends.ray import import_ray
from actorflow.errors import ConfigurationError

__all__ = ["LocalRayCluster"]


class LocalRayCluster:
    """``nodes`` Ray nodes on this machine (the head and ``nodes - 1`` others), joined by this
    process for as long as the ``with`` block runs."""

    def __init__(self, nodes: int = 3, cpus_per_node: int = 1) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 2:
            raise ConfigurationError(f"a local cluster needs at least 2 nodes, got {nodes!r}")
        if (
            isinstance(cpus_per_node, bool)
            or not isinstance(cpus_per_node, int)
            or cpus_per_node < 1
        ):
            raise ConfigurationError(f"cpus_per_node must be an int >= 1, got {cpus_per_node!r}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self._cluster: Any = None
        self._others: dict[str, Any] = {}  # node id -> Ray's node object, not the head

    def __enter__(self) -> LocalRayCluster:
        ray: Any = import_ray()
        if ray.is_initialized():
            raise ConfigurationError("this process has joined a Ray already (ray.shutdown() first)")
        from ray.cluster_utils import Cluster  # noqa: PLC0415

        cluster: Any = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                # a node that stops answering is declared dead after about 3 s (Ray's default
                # waits about 30 s): an experiment sees the recovery, not the detection
                "_system_config": {
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        self._cluster = cluster
        try:
            for _ in range(self.nodes - 1):
                node = cluster.add_node(num_cpus=self.cpus_per_node)
                self._others[node.node_id] = node
            cluster.wait_for_nodes()
            # the routine actors' processes import what this process imports, by path
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(
                address=cluster.address,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
        except BaseException:
            cluster.shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ray: Any = import_ray()
        ray.shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None

    @property
    def address(self) -> str:
        """The address of the head node (``Runtime(backend="ray", ray_address=...)``)."""
        if self._cluster is None:
            raise RuntimeError("the cluster is not running (use it in a with block)")
        address: str = self._cluster.address
        return address

    @property
    def removable_nodes(self) -> list[str]:
        """The ids of the nodes still up, other than the head."""
        return list(self._others)

    def remove_node(self, node_id: str) -> None:
        """Kill a node (not the head): its raylet and every process on it."""
        node = self._others.pop(node_id, None)
        if node is None:
            raise ConfigurationError(f"{node_id!r} is not a node of this cluster that can go")
        self._cluster.remove_node(node, allow_graceful=False)

    def kill_process(self, pid: int) -> None:
        """Kill a process of the cluster (a routine actor's or a state owner's, see
        ``Runtime.processes``) with SIGKILL, as a crashing process ends: Ray starts another in
        its place. Every node of a local cluster runs on this machine."""
        os.kill(pid, signal.SIGKILL)

    def busiest_node(self, placement: dict[str, dict[str, list[str]]]) -> str:
        """Of the removable nodes, the one running most routine actors, given a Ray
        runtime's ``placement()``."""
        counts: Counter[str] = Counter()
        for routines in placement.values():
            for nodes in routines.values():
                counts.update(node for node in nodes if node in self._others)
        if not counts:
            placed = {
                f"{worker}/{routine}": nodes
                for worker, routines in placement.items()
                for routine, nodes in routines.items()
            }
            raise ConfigurationError(
                f"no routine actor runs on a node that can be removed ({sorted(self._others)}); "
                f"the routine actors run on {placed}"
            )
        return counts.most_common(1)[0][0]
