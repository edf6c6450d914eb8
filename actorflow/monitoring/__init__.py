"""Monitoring helpers (the seed documents import ``FlowRegistry`` from here)."""

from actorflow.monitoring.flow_registry import FlowRegistry

__all__ = ["FlowRegistry"]
