"""The seed documents' import path for :class:`actorflow.registry.FlowRegistry`."""

from actorflow.registry import FlowRegistry

__all__ = ["FlowRegistry"]
