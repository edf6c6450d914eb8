"""Importing Ray (internal)."""

from __future__ import annotations

from typing import Any

from actorflow.errors import ConfigurationError

__all__ = ["INSTALL_HINT", "import_ray"]

INSTALL_HINT = "the Ray backend needs Ray: pip install 'actorflow[ray]'"


def import_ray() -> Any:
    """Import Ray, or raise an error that says how to install it."""
    try:
        import ray  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    return ray
