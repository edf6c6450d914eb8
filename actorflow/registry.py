"""FlowRegistry: the process-wide directory of flows that runtimes look up by id."""

from __future__ import annotations

import threading
from typing import ClassVar

from actorflow.errors import UnknownFlowError
from actorflow.flow import Flow

__all__ = ["FlowRegistry"]


class FlowRegistry:
    """Flows by name. Use the shared instance from :meth:`get_instance`."""

    _instance: ClassVar[FlowRegistry | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._flows: dict[str, Flow] = {}
        self._lock = threading.Lock()

    @classmethod
    def get_instance(cls) -> FlowRegistry:
        """The process-wide registry."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def register(self, flow: Flow) -> None:
        """Register ``flow`` under its ``flow_id`` (replacing any flow of that name)."""
        if not isinstance(flow, Flow):
            raise TypeError(f"register needs a Flow, got {type(flow).__name__}")
        self.register_by_name(flow.flow_id, flow)

    def register_by_name(self, name: str, flow: Flow) -> None:
        """Register ``flow`` under ``name`` (replacing any flow of that name)."""
        if not isinstance(flow, Flow):
            raise TypeError(f"register needs a Flow, got {type(flow).__name__}")
        if not isinstance(name, str) or not name:
            raise TypeError("flow name must be a non-empty str")
        with self._lock:
            self._flows[name] = flow

    def get(self, name: str) -> Flow | None:
        """The flow registered under ``name``, or None."""
        with self._lock:
            return self._flows.get(name)

    def require(self, name: str) -> Flow:
        """The flow registered under ``name``; ``UnknownFlowError`` if there is none."""
        flow = self.get(name)
        if flow is None:
            with self._lock:
                known = sorted(self._flows)
            raise UnknownFlowError(
                f"no flow registered as {name!r} (registered: {known or 'none'})"
            )
        return flow

    def unregister(self, name: str) -> bool:
        """Remove ``name``; returns whether it was registered."""
        with self._lock:
            return self._flows.pop(name, None) is not None

    def list(self) -> list[str]:
        """Registered names, sorted."""
        with self._lock:
            return sorted(self._flows)

    def clear(self) -> None:
        """Remove every flow (mainly for tests)."""
        with self._lock:
            self._flows.clear()
